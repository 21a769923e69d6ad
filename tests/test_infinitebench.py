"""The InfiniteBench suite (tasks/infinitebench.py, tasks/infinitebench_synth.py).

Offline: the hub loader is replaced by "nothing here" where a test depends on it; local data is
the tiny hand-written fixtures in tests/fixtures/infinitebench (official schema). Generated samples
are sized with SmolLM2's real tokenizer (tokenizer only, read from the embedded GGUF).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

import tasks
from tasks import infinitebench as ib
from tasks import infinitebench_synth as synth
from tasks.base import DataError, TaskUnavailable

FIXTURES = Path(__file__).parent / "fixtures" / "infinitebench"
LENGTHS = (512, 1536)
N = 4  # generated samples per length


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from harness.errors import UsageError
    from harness.models import resolve_model

    try:
        source = resolve_model("smollm2")
    except UsageError as err:  # pragma: no cover - the embedded model package is not installed
        pytest.skip(f"SmolLM2 tokenizer unavailable: {err}")
    try:  # the same tokenizer, saved next to the dequantised weights: loads in ~2 s instead of ~5-10 s
        from harness.models import _dequantised_dir

        cached = _dequantised_dir(source)
        if (cached / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(cached))
    except (ImportError, OSError):  # pragma: no cover
        pass
    return AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)


@pytest.fixture
def no_hub(monkeypatch):
    """The hub has nothing (whatever this machine's caches hold)."""
    monkeypatch.setattr(ib, "_hub_records", lambda task: None)


@pytest.fixture(scope="module")
def generated(tokenizer):
    suite = ib.InfiniteBench(source="generated", lengths=LENGTHS, n_samples=N)
    return {t: list(suite.samples(t, tokenizer, max_length=2048, seed=7)) for t in synth.GENERABLE}


def n_tokens(tokenizer, text):
    return len(tokenizer(text)["input_ids"])


# -- registration and constants ----------------------------------------------------------------


def test_registered_once():
    assert tasks.SUITES["infinitebench"] is ib.InfiniteBench
    again = importlib.import_module("tasks.infinitebench")  # a second import is the same module
    assert again is ib and tasks.SUITES["infinitebench"] is ib.InfiniteBench
    suite = tasks.get_suite("infinitebench", {"source": "generated", "n_samples": 2})
    assert isinstance(suite, ib.InfiniteBench) and suite.generated
    assert not ib.InfiniteBench().generated  # auto: mixed provenance, per-sample metadata says


def test_tasks_ids_budgets():
    assert len(ib.TASKS) == 12 and set(ib.TASK_IDS) == set(ib.TASKS) == set(ib.MAX_NEW_TOKENS) == set(ib.TEMPLATES)
    assert ib.TASK_IDS["number_string"] == "Ret.Number" and ib.TASK_IDS["longbook_qa_chn"] == "ZH.QA"
    assert ib.MAX_NEW_TOKENS["passkey"] == 6 and ib.MAX_NEW_TOKENS["longbook_sum_eng"] == 1200
    assert ib.InfiniteBench.max_new_tokens("math_calc", 8192) == 4096  # 30000 capped at half the context
    assert ib.InfiniteBench.max_new_tokens("kv_retrieval", 8192) == 50


def test_bad_options():
    with pytest.raises(ValueError, match="source"):
        ib.InfiniteBench(source="web")
    with pytest.raises(ValueError, match="data-dir"):
        ib.InfiniteBench(source="data-dir")
    with pytest.raises(ValueError, match="not a folder"):
        ib.InfiniteBench(data_dir="/nonexistent/infinitebench")
    with pytest.raises(ValueError, match="depths"):
        ib.InfiniteBench(depths=[1.5])
    with pytest.raises(ValueError, match="chat_template must be off .* or on"):
        ib.InfiniteBench(chat_template="yes")


# -- chat template -------------------------------------------------------------------------------


def test_chat_template_off_by_default_and_on_for_the_free_form_tasks(tokenizer):
    official = ib.InfiniteBench(data_dir=str(FIXTURES), source="data-dir")
    chat = ib.InfiniteBench(data_dir=str(FIXTURES), source="data-dir", chat_template="on")
    assert official.chat_template == "off"
    for task in ib.TASKS:
        assert all(x.chat is False for x in official.samples(task, tokenizer, max_length=4096)), task
        assert all(x.chat is (task in ib.CHAT_TASKS) for x in chat.samples(task, tokenizer, max_length=4096)), task
    assert set(ib.CHAT_TASKS) == {"longbook_qa_eng", "longbook_qa_chn", "longbook_sum_eng"}
    gen = ib.InfiniteBench(source="generated", lengths=[512], n_samples=1, chat_template="on")
    assert next(gen.samples("passkey", tokenizer, max_length=2048)).chat is False  # not a free-form task


def test_chat_template_suite_arg_reaches_the_prompt(tokenizer):
    """Through the runner's option parsing and prompt formatting: off → the plain official prompt; on → the
    model's chat template around it."""
    from harness.evaluate import format_prompt
    from harness.suite_args import load_suite, parse_suite_args

    if not tokenizer.chat_template:  # pragma: no cover
        pytest.skip("the tokenizer has no chat template")
    prompts = {}
    for setting in ("off", "on"):
        suite = load_suite("infinitebench", {"data_dir": str(FIXTURES), "source": "data-dir",
                                             **parse_suite_args([f"chat_template={setting}"])})
        (x, *_) = suite.samples("longbook_qa_eng", tokenizer, max_length=4096)
        prompts[setting] = format_prompt(tokenizer, x, "auto")
    assert prompts["off"] == tokenizer(x.prompt).input_ids
    assert prompts["on"] != prompts["off"]
    assert tokenizer.decode(prompts["on"]).count(x.prompt) == 1  # the whole template is the user turn


# -- generated data ----------------------------------------------------------------------------


def test_generated_deterministic(tokenizer, generated):
    again = ib.InfiniteBench(source="generated", lengths=LENGTHS, n_samples=N)
    for task, samples in generated.items():
        other = list(again.samples(task, tokenizer, max_length=2048, seed=7))
        assert [(x.id, x.prompt, x.answers, x.metadata) for x in other] == \
               [(x.id, x.prompt, x.answers, x.metadata) for x in samples]
        reseeded = list(again.samples(task, tokenizer, max_length=2048, seed=8))
        assert [x.prompt for x in reseeded] != [x.prompt for x in samples]
        assert len({x.id for x in samples}) == len(samples) == N * len(LENGTHS)


def test_generated_sizes_and_metadata(tokenizer, generated):
    for task, samples in generated.items():
        for x in samples:
            length = x.metadata["length"]
            got = n_tokens(tokenizer, x.prompt)
            assert length - synth.tolerance(length) <= got <= length, (x.id, got)
            assert got == x.metadata["prompt_tokens"]
            assert x.metadata["source"] == "generated" and x.metadata["generated"] is True and x.generated
            assert x.max_new_tokens == ib.MAX_NEW_TOKENS[task]
            assert x.chat is False


def test_default_length_fills_context(tokenizer, no_hub):
    suite = ib.InfiniteBench(n_samples=1)  # auto: no data here -> generated
    (x,) = suite.samples("passkey", tokenizer, max_length=1024)
    assert x.metadata["source"] == "generated"
    assert x.metadata["length"] == 1024 - 6 - ib.MARGIN
    assert n_tokens(tokenizer, x.prompt) + x.max_new_tokens + ib.MARGIN <= 1024


def test_too_small_length_fails_at_the_call(tokenizer):
    suite = ib.InfiniteBench(source="generated", lengths=[60], n_samples=2)
    with pytest.raises(TaskUnavailable, match="kv_retrieval: a generated prompt needs more than 60 tokens"):
        suite.samples("kv_retrieval", tokenizer, max_length=4096)


@pytest.mark.parametrize("task", ["passkey", "number_string"])
def test_needle_at_depth(tokenizer, generated, task):
    template_head = ib.TEMPLATES[task].split("{context}")[0]
    cue = "The pass key is" if task == "passkey" else "The sequence of digits is"
    depths = ib.InfiniteBench(n_samples=N).sample_depths()
    assert depths == [0.0, 1 / 3, 2 / 3, 1.0] or depths == [round(d, 6) for d in (0.0, 1 / 3, 2 / 3, 1.0)]
    for i, x in enumerate(generated[task]):
        key = x.answers[0]
        assert len(key) == (5 if task == "passkey" else 10) and key.isdigit()
        assert x.prompt.startswith(template_head)
        context = x.prompt[len(template_head):x.prompt.index("\n\n\n") + 1]  # context, then "\n\n" + input
        lines = context.split("\n")[:-1]
        needle = [j for j, line in enumerate(lines) if line.startswith(cue)]
        assert len(needle) == 1 and f"{cue} {key}. Remember it. {key} is" in lines[needle[0]]
        assert all(line == synth.NOISE.strip("\n") for j, line in enumerate(lines) if j != needle[0])
        n_noise = len(lines) - 1
        assert n_noise == x.metadata["n_noise"] and needle[0] == x.metadata["needle_line"]
        assert x.metadata["depth"] == depths[i % N]
        assert abs(needle[0] / n_noise - depths[i % N]) <= 0.5 / n_noise + 1e-9
        # in characters and in tokens: the share of the noise that precedes the needle is the depth
        before, after = context[:context.index(cue)], context.split(lines[needle[0]] + "\n", 1)[1]
        assert abs(len(before) / (len(before) + len(after)) - depths[i % N]) <= 0.5 / n_noise + 1e-9
        t_before, t_after = n_tokens(tokenizer, before), n_tokens(tokenizer, after)
        assert abs(t_before / (t_before + t_after) - depths[i % N]) <= 0.5 / n_noise + 0.01
    if task == "number_string":  # the recipe's key: 5 digits, 5 of them duplicated in place
        assert any(re.search(r"(\d)\1", x.answers[0]) for x in generated[task])


def test_kv_answer_at_depth(generated):
    depths = ib.InfiniteBench(n_samples=N).sample_depths()
    for i, x in enumerate(generated["kv_retrieval"]):
        body = x.prompt.split("JSON data:\n", 1)[1].split("\n\n\nKey:", 1)[0]
        records = list(json.loads(body).items())
        assert len(records) == x.metadata["n_records"] and len(set(k for k, _ in records)) == len(records)
        ask = re.search(r'\nKey: "([0-9a-f-]{36})"\nThe value associated with the specified key is: $', x.prompt)
        key = ask.group(1)
        idx = [k for k, _ in records].index(key)
        assert records[idx][1] == x.answers[0]
        assert idx == x.metadata["needle_record"] == round(depths[i % N] * (len(records) - 1))
        assert x.prompt.count(key) == 2  # in the JSON and in the question


def test_math_find_recipe(generated):
    kinds = []
    for i, x in enumerate(generated["math_find"]):
        kind = synth.MATH_FIND_ORDER[i % N % len(synth.MATH_FIND_ORDER)]
        kinds.append(kind)
        head = f"What is the {kind.replace(' number', '')} number in the following list?" if kind != "median" \
            else "What is the median number in the following list?"
        assert x.prompt.startswith(head + "\n\n[")
        assert x.prompt.endswith(synth.MATH_FIND_KINDS[kind][1])
        values = ast.literal_eval(x.prompt.split("\n\n")[1])
        assert len(values) == x.metadata["list_length"] and all(0 <= v <= 99 for v in values)
        distinct = sorted(set(values))
        want = {"largest number": distinct[-1], "second largest number": distinct[-2],
                "third largest number": distinct[-3], "smallest number": distinct[0],
                "second smallest number": distinct[1], "third smallest number": distinct[2],
                "median": statistics.median(values)}[kind]
        assert x.answers == [str(want)]
        assert x.metadata["kind"] == kind
    assert kinds[:4] == list(synth.MATH_FIND_ORDER[:4])


def test_fit_largest_never_above():
    count = lambda n: 10 + 3 * n + (n % 5 == 0)  # noqa: E731 - nearly linear, a bump every 5
    for target in (11, 12, 50, 333, 1000, 12345):
        n, c = synth.fit_largest(count, target, 0)
        assert c == count(n) <= target and count(n + 1) > target
    assert synth.fit_largest(count, 10, 0) is None


# -- data from a local copy (fixtures in the official schema) ------------------------------------


def fixture_records(task):
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("task", ib.TASKS)
def test_data_dir_every_task(tokenizer, task):
    suite = ib.InfiniteBench(data_dir=str(FIXTURES), source="data-dir")
    samples = list(suite.samples(task, tokenizer, max_length=4096))
    records = fixture_records(task)
    assert [x.id for x in samples] == [str(r["id"]) for r in records]
    for x, rec in zip(samples, records):
        assert x.metadata["source"] == "data-dir" and x.metadata["generated"] is False
        assert x.metadata["official_id"] == rec["id"] and not x.generated
        assert x.max_new_tokens == min(ib.MAX_NEW_TOKENS[task], 2048)
        assert x.chat is False  # the official scripts use no chat template (chat_template=on: see below)
        assert rec["context"] in x.prompt
        if task in ib.CHOICE_TASKS:
            option = rec["answer"][0] if isinstance(rec["answer"], list) else rec["answer"]
            letter = "ABCD"[rec["options"].index(option)]
            assert x.answers == [option, letter]
            assert all(f"{c}. {o}\n" in x.prompt for c, o in zip("ABCD", rec["options"]))
            # the letter scores 1 through the suite
            assert suite.score(x, f"{letter}. {option}") == 1.0
        else:
            label = rec["answer"] if isinstance(rec["answer"], list) else [rec["answer"]]
            assert x.answers == [str(v) for v in label]


def test_data_dir_prompts_are_the_official_templates(tokenizer):
    suite = ib.InfiniteBench(data_dir=str(FIXTURES))  # auto: the local copy wins
    rec = fixture_records("passkey")[0]
    (x, _) = suite.samples("passkey", tokenizer, max_length=4096)
    assert x.prompt == ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                        "I will quiz you about the important information.\n\n" + rec["context"]
                        + "\n\nWhat is the pass key?\n\nThe pass key is")
    assert x.metadata["source"] == "data-dir" and 0.3 < x.metadata["depth"] < 0.7
    mf = list(suite.samples("math_find", tokenizer, max_length=4096))
    assert mf[0].prompt.startswith("What is the largest number in the following list?\n\n[12, 7, 93")
    assert mf[1].prompt.startswith("What is the median number in the following list?")
    assert mf[1].answers == ["26.5"] and suite.score(mf[1], "26.5") == 1.0 and suite.score(mf[0], "93") == 1.0
    cr = list(suite.samples("code_run", tokenizer, max_length=4096))[0]
    assert cr.prompt.startswith("There is a function called func_3 in the following Python code.\n\n")
    assert cr.prompt.endswith("Please compute the exact value of func_3(-3). The value of func_3(-3) is")
    assert suite.score(cr, " 9") == 1.0 and suite.score(cr, " 8") == 0.0
    dia = list(suite.samples("longdialogue_qa_eng", tokenizer, max_length=4096))[0]
    assert dia.prompt.endswith("The name that has been replaced with $$MASK$$ is likely")
    assert suite.score(dia, " Anna.") == 1.0 and suite.score(dia, " Ben.") == 0.0
    kv = list(suite.samples("kv_retrieval", tokenizer, max_length=4096))
    assert kv[1].metadata["depth"] > kv[0].metadata["depth"]
    calc = list(suite.samples("math_calc", tokenizer, max_length=4096))[0]
    assert calc.max_new_tokens == 2048 and calc.metadata["max_new_tokens_official"] == 30000
    assert suite.score(calc, "[17, 8, 28, 22]") == 1.0


def test_malformed_line_names_file_and_line(tmp_path, tokenizer):
    shutil.copy(FIXTURES / "passkey.jsonl", tmp_path / "passkey.jsonl")
    with open(tmp_path / "passkey.jsonl", "a", encoding="utf-8") as f:
        f.write("\n{not json\n")
    suite = ib.InfiniteBench(data_dir=str(tmp_path))
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'passkey.jsonl'}:4")):
        suite.samples("passkey", tokenizer, max_length=4096)  # raised at the call


def test_wrong_field_type_names_file_and_line(tmp_path, tokenizer):
    recs = fixture_records("code_debug")
    bad = dict(recs[0], id=5, answer=["not an option"])
    (tmp_path / "code_debug.jsonl").write_text("\n".join(json.dumps(r) for r in recs + [bad]) + "\n")
    recs = fixture_records("math_find")
    bad = dict(recs[0], context=[1, 2, 3])
    (tmp_path / "math_find.jsonl").write_text("\n\n".join(json.dumps(r) for r in [bad]) + "\n")
    suite = ib.InfiniteBench(data_dir=str(tmp_path), source="data-dir")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'code_debug.jsonl'}:2: the answer")):
        suite.samples("code_debug", tokenizer, max_length=4096)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'math_find.jsonl'}:1: field 'context'")):
        suite.samples("math_find", tokenizer, max_length=4096)


# -- no data ------------------------------------------------------------------------------------


def test_unavailable_offline_without_data(tmp_path, tokenizer, no_hub):
    suite = ib.InfiniteBench(data_dir=str(tmp_path))  # an empty folder: no <task>.jsonl
    for task in set(ib.TASKS) - set(synth.GENERABLE):
        with pytest.raises(TaskUnavailable) as info:
            suite.samples(task, tokenizer, max_length=4096)  # raised at the call, not at next()
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(f"infinitebench/{task}: no data here")
        assert f"--data-dir DIR with {task}.jsonl" in msg
    # the synthetic tasks fall back to generated data
    (x, *_) = suite.samples("kv_retrieval", tokenizer, max_length=1024)
    assert x.metadata["source"] == "generated"
    with pytest.raises(TaskUnavailable):
        ib.InfiniteBench(source="generated").samples("code_run", tokenizer, max_length=4096)
    with pytest.raises(TaskUnavailable, match="hub"):
        ib.InfiniteBench(source="hub").samples("passkey", tokenizer, max_length=4096)
    with pytest.raises(KeyError):
        suite.samples("nope", tokenizer, max_length=4096)


def test_score_through_the_suite(generated):
    suite = ib.InfiniteBench(source="generated")
    for task, samples in generated.items():
        x = samples[0]
        right = {"kv_retrieval": f'"{x.answers[0]}"'}.get(task, f" {x.answers[0]}.")
        assert suite.score(x, right) == 1.0, task
        assert suite.score(x, " nothing useful") == 0.0, task
