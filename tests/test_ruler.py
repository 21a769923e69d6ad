"""The RULER suite (tasks/ruler) and RULER's scorer (tasks/scoring/ruler.py).

Generation runs with SmolLM2's real tokenizer (the ``tiny_model_dir`` fixture's folder) at small
target lengths; QA uses tiny files in the official SQuAD / HotpotQA schemas; nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest

import tasks
from harness.errors import UsageError
from harness.evaluate import format_prompt
from tasks.base import ContextTooSmall, DataError, TaskUnavailable
from tasks.ruler import Ruler, templates
from tasks.scoring import ruler as ruler_scoring

LENGTHS = (1024, 4096)
N = 2
MAX_NEW = {"niah": 128, "variable_tracking": 30, "common_words_extraction": 120, "freq_words_extraction": 50, "qa": 32}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template  # sizing must count the chat template
    return tok


@pytest.fixture(scope="module")
def generated(tokenizer):
    suite = Ruler(lengths=LENGTHS, n_samples=N)
    return {t: list(suite.samples(t, tokenizer, max_length=4096, seed=3)) for t in templates.SYNTHETIC}


# -- scoring -------------------------------------------------------------------------------------


def test_string_match_all_gives_partial_credit():
    refs = ["1234567", "7654321", "1111111", "2222222"]
    assert tasks.score("ruler/niah_multivalue", "They are 1234567 and 7654321.", refs) == 0.5
    assert tasks.score("ruler/vt", "VAR abcde, fghij", ["ABCDE", "FGHIJ", "KLMNO"]) == pytest.approx(2 / 3)
    assert tasks.score("ruler/cwe", "nothing here", ["apple", "pear"]) == 0.0
    assert tasks.score("ruler/fwe", "APPLE, Pear", ["apple", "pear"]) == 1.0  # case-insensitive


def test_string_match_part_takes_the_best_reference():
    assert tasks.score("ruler/qa_1", "It is in Paris.", ["London", "paris"]) == 1.0
    assert tasks.score("ruler/qa_2", "Rome", ["London", "Paris"]) == 0.0
    # the same prediction under string_match_all (niah) gets half
    assert tasks.score("ruler/qa_1", "Paris", ["Paris", "France"]) == 1.0
    assert tasks.score("ruler/niah_single_1", "Paris", ["Paris", "France"]) == 0.5


def test_postprocess_pred_is_rulers():
    assert ruler_scoring.postprocess_pred("  \n 42\x00x \t") == "42\nx"
    # control characters become newlines (RULER), not nothing (kvpress's copy)
    assert tasks.score("ruler/niah_single_1", "12\x0034", ["12\n34"]) == 1.0
    assert tasks.score("ruler/niah_single_1", "12\x0034", ["1234"]) == 0.0


def test_scorer_names_and_rulers_rounding():
    assert tasks.scoring.task_names("ruler") == sorted(templates.TASKS)
    with pytest.raises(KeyError, match="no ruler task"):
        tasks.score("ruler/niah", "x", ["x"])
    recs = [{"task": "cwe", "score": s, "metadata": {"length": 4096}} for s in (1.0, 0.0, 0.0)]
    recs += [{"task": "vt", "score": 0.5, "metadata": {"length": 4096}},
             {"task": "vt", "score": 1.0, "metadata": {"length": 131072}}]
    out = ruler_scoring.summary(recs)
    assert out["tasks"]["cwe"] == {"4096": 33.33}
    assert list(out["tasks"]["vt"]) == ["4096", "131072"]  # numeric order
    assert out["average"]["4096"] == round(100 * (1 / 3 + 0.5) / 2, 2)


# -- generated tasks -----------------------------------------------------------------------------


def test_registered_with_thirteen_tasks():
    assert tasks.SUITES["ruler"] is Ruler
    assert Ruler.tasks == ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                           "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")


@pytest.mark.parametrize("task", templates.SYNTHETIC)
def test_generated_samples_fit_and_hold_their_answers(task, generated, tokenizer):
    got = generated[task]
    assert [s.id for s in got] == [f"{task}-{n}-{i}" for n in LENGTHS for i in range(N)]
    kind = templates.kind(task)
    for s in got:
        length = s.metadata["length"]
        n_tokens = len(format_prompt(tokenizer, s, "auto")) + s.max_new_tokens
        assert length * 0.9 <= n_tokens <= length, (s.id, n_tokens)
        assert s.metadata["prompt_tokens"] + s.max_new_tokens == n_tokens
        assert s.answers and all(a in s.prompt for a in s.answers)
        assert s.max_new_tokens == MAX_NEW[kind]
        assert s.question and s.prompt.endswith(s.question)
        assert templates.QUESTION_PATTERNS[kind].match(s.question)
        assert templates.QUESTION_PATTERNS[kind].search(s.prompt[:-len(s.question)]) is None or kind in (
            "common_words_extraction", "variable_tracking")  # their one-shot example asks it too
        assert s.chat is True
        # prompt + answer prefix is RULER's base-template text: the prefix's space ends the question
        assert s.question.endswith(" ") and not s.answer_prefix.startswith(" ")
        meta = s.metadata
        assert meta["source"] == "generated" and meta["generated"] is True and s.generated
        assert meta["config"] == templates.CONFIGS[task]
        assert json.loads(json.dumps(meta)) == meta


def test_answer_prefixes_and_wording(generated):
    one = generated["niah_single_1"][0]
    key = one.metadata["keys"][0]
    assert one.prompt.startswith("A special magic number is hidden within the following text.")
    assert one.answer_prefix == f"The special magic number for {key} mentioned in the provided text is"
    assert one.question == f"What is the special magic number for {key} mentioned in the provided text? "
    uuid = generated["niah_single_3"][0]
    assert uuid.answer_prefix.startswith("The special magic uuid for ")
    multi = generated["niah_multiquery"][0]
    assert multi.prompt.startswith("Some special magic numbers are hidden")
    assert len(multi.answers) == 4 and ", and " in multi.answer_prefix and multi.answer_prefix.endswith(" are")
    vt = generated["vt"][0]
    value = vt.question.split("value ")[1].split(" ")[0]
    assert vt.answer_prefix == ("Answer: According to the chain(s) of variable assignment in the text above, 5 "
                                f"variables are assigned the value {value}, they are: ")
    assert f"VAR {vt.answers[0]} = {value}" in vt.prompt and len(vt.answers) == 5
    assert generated["cwe"][0].answer_prefix == "Answer: The top 10 words that appear most often in the list are:"
    assert len(generated["cwe"][0].answers) == 10
    assert generated["fwe"][0].answer_prefix == ("Answer: According to the coded text above, the three most "
                                                 "frequently appeared words are:")


def test_haystack_labels(generated):
    assert generated["niah_single_1"][0].metadata["haystack"] == "noise"
    assert generated["niah_multikey_2"][0].metadata["haystack"] == "needle"
    assert generated["vt"][0].metadata["haystack"] == "noise"
    for task in ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"):
        meta = generated[task][0].metadata
        assert meta["haystack"] == "substitute:python-stdlib-docstrings" and meta["python"]
    assert generated["cwe"][0].metadata["words"] == "wonderwords"


def test_words_are_rulers_wonderwords_lists(generated):
    import warnings

    from tasks.ruler import haystack

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wonderwords warns on import
        from wonderwords import random_word
    nouns, adjs, verbs = (random_word._get_words_from_text_file(f) for f in
                          ("nounlist.txt", "adjectivelist.txt", "verblist.txt"))
    assert haystack.vocabulary() == tuple(sorted(set(nouns + adjs + verbs)))
    key = generated["niah_single_1"][0].metadata["keys"][0]
    assert any(key == f"{a}-{key[len(a) + 1:]}" and key[len(a) + 1:] in nouns for a in adjs if key.startswith(a + "-"))


def test_cwe_frequencies_follow_the_length(generated):
    for s in generated["cwe"]:
        common, rare = (6, 1) if s.metadata["length"] < 4096 else (30, 3)
        listed = s.prompt[:-len(s.question)].rsplit("\n", 2)[-2].split(" ")[1::2]  # the sample's own list
        assert all(listed.count(w) == common for w in s.answers)
        assert {listed.count(w) for w in set(listed) - set(s.answers)} == {rare}


def test_same_seed_same_samples(generated, tokenizer):
    again = list(Ruler(lengths=LENGTHS, n_samples=N).samples("niah_multikey_3", tokenizer, max_length=4096, seed=3))
    first = generated["niah_multikey_3"]
    assert [(s.id, s.prompt, s.answers) for s in again] == [(s.id, s.prompt, s.answers) for s in first]
    other = list(Ruler(lengths=[1024], n_samples=1, seed=4).samples("niah_multikey_3", tokenizer, max_length=4096))
    assert other[0].id == first[0].id and other[0].prompt != first[0].prompt  # the seed option overrides


def test_lengths_beyond_max_length_are_dropped(tokenizer):
    got = list(Ruler(lengths=[1024, 8192], n_samples=1).samples("niah_single_1", tokenizer, max_length=2000))
    assert [s.metadata["length"] for s in got] == [1024]
    with pytest.raises(ContextTooSmall, match="max_length 900"):
        Ruler(lengths=[1024]).samples("niah_single_1", tokenizer, max_length=900)
    with pytest.raises(ContextTooSmall, match="does not fit length 256"):  # vt's one-shot example alone is ~500
        Ruler(lengths=[256]).samples("vt", tokenizer, max_length=4096)


# -- data-dir ------------------------------------------------------------------------------------

ESSAY = "Zebras wander across quiet meadows at dawn. " * 40 + "Lanterns glow over the harbour tonight! " * 40


@pytest.mark.parametrize("layout", ["json", "folder"])
def test_essays_from_data_dir(layout, tmp_path, tokenizer):
    if layout == "json":
        (tmp_path / "PaulGrahamEssays.json").write_text(json.dumps({"text": ESSAY}))
    else:
        (tmp_path / "PaulGrahamEssays").mkdir()
        (tmp_path / "PaulGrahamEssays" / "a.txt").write_text(ESSAY)
    s = next(iter(Ruler(data_dir=tmp_path, lengths=[1024], n_samples=1).samples("niah_single_2", tokenizer, 4096)))
    assert s.metadata["haystack"] == "paul-graham-essays" and "Zebras wander across quiet meadows" in s.prompt
    assert "python" not in s.metadata and s.answers[0] in s.prompt
    sub = Ruler(data_dir=tmp_path, lengths=[1024], n_samples=1, haystack="substitute")
    assert next(iter(sub.samples("niah_single_2", tokenizer, 4096))).metadata["haystack"].startswith("substitute:")


def test_essay_mode_without_essays_is_unavailable(tmp_path, tokenizer):
    with pytest.raises(TaskUnavailable, match="PaulGrahamEssays.json"):
        Ruler(data_dir=tmp_path, haystack="essay").samples("niah_multivalue", tokenizer, 4096)


def squad_json():
    def para(context, qas):
        return {"context": context, "qas": qas}

    def qa(i, question, answers):
        return {"id": f"q{i}", "question": question, "is_impossible": not answers,
                "answers": [{"text": a, "answer_start": 0} for a in answers]}

    return {"version": "v2.0", "data": [
        {"title": "Rivers", "paragraphs": [
            para("The Danube flows through Vienna and Budapest before reaching the Black Sea.",
                 [qa(0, "Which sea does the Danube reach?", ["the Black Sea", "Black Sea"]),
                  qa(1, "Which sea does the Danube avoid?", [])]),
            para("The Rhine passes Basel, Cologne and Rotterdam.",
                 [qa(2, "Which city on the Rhine is Swiss?", ["Basel"])]),
        ]},
        {"title": "Birds", "paragraphs": [
            para("Puffins nest in burrows on northern cliffs.", [qa(3, "Where do puffins nest?", ["in burrows"])]),
        ]},
    ]}


def hotpot_json():
    return [{"_id": "h0", "question": "Which river flows past the city that hosts the Albertina?", "answer": "Danube",
             "type": "bridge", "level": "easy", "supporting_facts": [["Albertina", 0]],
             "context": [["Albertina", ["The Albertina is a museum in Vienna."]],
                         ["Vienna", ["Vienna lies on the Danube.", " It is the capital of Austria."]]]}]


def test_qa_offline_without_data_is_unavailable(monkeypatch, tmp_path, tokenizer):
    monkeypatch.setattr("tasks.ruler.qa.hub_available", lambda repo: False)
    for task, name in (("qa_1", "dev-v2.0.json"), ("qa_2", "hotpot_dev_distractor_v1.json")):
        with pytest.raises(TaskUnavailable) as err:
            Ruler(data_dir=tmp_path).samples(task, tokenizer, 4096)
        message = str(err.value)
        assert "\n" not in message and name in message and "--data-dir" in message


@pytest.mark.parametrize("task,filename", [("qa_1", "dev-v2.0.json"), ("qa_2", "hotpotqa.json")])
def test_qa_from_official_json(task, filename, tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr("tasks.ruler.qa.hub_available", lambda repo: False)
    (tmp_path / filename).write_text(json.dumps(squad_json() if task == "qa_1" else hotpot_json()))
    got = list(Ruler(data_dir=tmp_path, lengths=[1024], n_samples=3).samples(task, tokenizer, 4096))
    for s in got:
        assert len(format_prompt(tokenizer, s, "auto")) + 32 <= 1024 and s.max_new_tokens == 32
        assert s.answer_prefix == "Answer:" and s.prompt.endswith(s.question)
        assert s.question.startswith("Answer the question based on the given documents.")
        assert s.metadata["source"] == "generated" and s.metadata["qa_source"] == f"data-dir:{filename}"
        assert "Document 1:\n" in s.prompt
    if task == "qa_1":  # answerable questions in file order; the impossible one is skipped
        assert [s.answers for s in got] == [["the Black Sea", "Black Sea"], ["Basel"], ["in burrows"]]
        assert "Question: Which sea does the Danube reach? " == got[0].question.split("\n\n")[-1]
        assert "The Danube flows through Vienna" in got[0].prompt
        assert tasks.score("ruler/qa_1", "It reaches the Black Sea.", got[0].answers) == 1.0
    else:
        assert got[0].answers == ["Danube"] and "Vienna\nVienna lies on the Danube. It is the capital" in got[0].prompt


def test_qa_from_the_hub_schema(monkeypatch, tokenizer):
    from tasks.ruler import qa

    calls = []
    squad_rows = [{"id": q["id"], "title": a["title"], "context": p["context"], "question": q["question"],
                   "answers": {"text": [x["text"] for x in q["answers"]], "answer_start": [0] * len(q["answers"])}}
                  for a in squad_json()["data"] for p in a["paragraphs"] for q in p["qas"]]
    hotpot_rows = [{"id": "h0", "question": r["question"], "answer": r["answer"],
                    "context": {"title": [t for t, _ in r["context"]], "sentences": [s for _, s in r["context"]]}}
                   for r in hotpot_json()]

    def fake_load_hub(repo, required=(), **kwargs):
        calls.append((repo, kwargs))
        return squad_rows if repo == "rajpurkar/squad_v2" else hotpot_rows

    monkeypatch.setattr(qa, "hub_available", lambda repo: True)
    monkeypatch.setattr(qa, "load_hub", fake_load_hub)
    qa._read_hub.cache_clear()
    try:
        one = list(Ruler(lengths=[1024], n_samples=2).samples("qa_1", tokenizer, 4096))
        two = list(Ruler(lengths=[1024], n_samples=1).samples("qa_2", tokenizer, 4096))
    finally:
        qa._read_hub.cache_clear()
    assert calls == [("rajpurkar/squad_v2", {"split": "validation"}),
                     ("hotpotqa/hotpot_qa", {"name": "distractor", "split": "validation"})]
    assert [s.answers for s in one] == [["the Black Sea", "Black Sea"], ["Basel"]]
    assert one[0].metadata["qa_source"] == "hub:rajpurkar/squad_v2"
    assert two[0].answers == ["Danube"] and "Albertina\nThe Albertina is a museum in Vienna." in two[0].prompt


def prepared_record(i, with_prefix=True):
    key = f"key-{i}"
    text = (f"A special magic number is hidden within the following text.\nThe grass is green.\nOne of the special "
            f"magic numbers for {key} is: 100000{i}.\nWhat is the special magic number for {key} mentioned in the "
            "provided text?")
    prefix = f" The special magic number for {key} mentioned in the provided text is"
    rec = {"index": 17, "input": text if with_prefix else text + prefix, "outputs": [f"100000{i}"], "length": 99}
    if with_prefix:
        rec["answer_prefix"] = prefix
    return rec, text, prefix


@pytest.mark.parametrize("with_prefix", [True, False])
def test_prepared_jsonl_from_data_dir(with_prefix, tmp_path, tokenizer):
    folder = tmp_path / "1024" / "niah_single_1"
    folder.mkdir(parents=True)
    recs = [prepared_record(i, with_prefix) for i in range(3)]
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r, _, _ in recs))
    got = list(Ruler(data_dir=tmp_path, lengths=[1024, 2048], n_samples=2).samples("niah_single_1", tokenizer, 4096))
    read, made = got[:2], got[2:]
    for s, (rec, text, prefix) in zip(read, recs):
        assert s.metadata["source"] == "data-dir" and s.metadata["generated"] is False
        assert s.metadata["length"] == 1024 and s.metadata["ruler_length"] == 99
        assert s.prompt + s.answer_prefix == text + prefix and s.answers == rec["outputs"]
        assert s.question == f"What is the special magic number for {rec['outputs'][0].replace('100000', 'key-')} " \
                             "mentioned in the provided text? "
        assert s.max_new_tokens == 128
    assert [s.id for s in read] == ["niah_single_1-1024-0", "niah_single_1-1024-1"]
    assert [s.metadata["source"] for s in made] == ["generated"] * 2 and made[0].metadata["length"] == 2048


def test_prepared_single_run_layout_and_bad_lines(tmp_path, tokenizer):
    folder = tmp_path / "vt"
    folder.mkdir()
    rec = {"index": 0, "input": "Memorize ... VAR AB = 1\nQuestion: Find all variables that are assigned the value 1 "
           "in the text above.", "outputs": ["AB"], "length": 77,
           "answer_prefix": " Answer: According to the chain(s) ... they are: "}
    (folder / "validation.jsonl").write_text(json.dumps(rec) + "\n")
    (s,) = Ruler(data_dir=tmp_path).samples("vt", tokenizer, 4096)
    assert s.id == "vt-data-0" and s.metadata["source"] == "data-dir" and s.metadata["length"] == 77
    assert s.question.startswith("Question: Find all variables") and s.max_new_tokens == 30
    (folder / "validation.jsonl").write_text(json.dumps({"input": "x", "outputs": "AB"}) + "\n")
    with pytest.raises(DataError, match="validation.jsonl:1: outputs must be a non-empty list"):
        list(Ruler(data_dir=tmp_path).samples("vt", tokenizer, 4096))


# -- options and the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize("options,expect", [
    ({"lengths": "abc"}, "--suite-arg lengths=abc: suite ruler option lengths takes integers, not 'abc'"),
    ({"lengths": [4096, -1]}, "ruler lengths must be positive integers, got -1"),
    ({"lengths": 1.5}, "ruler lengths must be positive integers, got 1.5"),
    ({"n_samples": 0}, "ruler n_samples must be a positive integer, got 0"),
    ({"n_samples": [2, 3]}, "--suite-arg n_samples=2,3: suite ruler option n_samples takes one number, not a list"),
    ({"haystack": "essays"}, "ruler haystack must be one of auto, essay, substitute, got 'essays'"),
    ({"seed": "x"}, "--suite-arg seed=x: suite ruler option seed takes integers, not 'x'"),
    ({"depth": 1}, "suite ruler has no option 'depth'; options: data_dir, lengths, n_samples, haystack, seed"),
])
def test_bad_options_are_one_line_errors(options, expect):
    from harness.suite_args import load_suite

    with pytest.raises(UsageError) as err:
        load_suite("ruler", options)
    assert str(err.value).startswith(expect) and "\n" not in str(err.value)


def test_run_end_to_end(tiny_model_dir, tmp_path):
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "ruler", "--tasks", "niah_single_1",
                 "--suite-arg", "lengths=512", "--suite-arg", "n_samples=2", "--limit", "1", "--out", str(out),
                 "--quiet"]) == 0
    (rec,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert rec["task"] == "niah_single_1" and rec["id"] == "niah_single_1-512-0"
    assert rec["source"] == "generated" and rec["generated_data"] is True
    assert rec["metadata"]["haystack"] == "noise" and 0.0 <= rec["score"] <= 1.0
    assert rec["prompt_tokens"] + 128 <= 512
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["niah_single_1"]["n"] == 1
    assert metrics["official_score"]["tasks"]["niah_single_1"] == {"512": round(100 * rec["score"], 2)}
