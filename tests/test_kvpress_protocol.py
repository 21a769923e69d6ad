"""The kvpress protocol (``run --protocol kvpress --compression-ratio R``): the context is prefilled
and compressed once, the question is never compressed, positions continue from the full context.

The fidelity checks against kvpress itself (same kept tokens, same outputs as its pipeline) need
kvpress and run in its environment (``.ci/kvpress``); they skip elsewhere with the reason.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from harness.cache import EvictionCache
from harness.errors import UsageError
from harness.evaluate import Evaluator
from harness.kvpress_protocol import check_splittable, context_and_question, kept_tokens
from policies import make_policy
from tasks.base import Sample
from conftest import tiny_llama

torch.set_num_threads(1)

needs_kvpress = pytest.mark.skipif(importlib.util.find_spec("kvpress") is None,
                                   reason="kvpress not installed: run `tox -e kvpress` or .ci/kvpress")


def _transformers_below(version: str) -> bool:
    import transformers

    return tuple(int(x) for x in transformers.__version__.split(".")[:2]) < tuple(int(x) for x in version.split("."))


# ---- the cache: one compression at once_at, none after ---------------------------------------------


def test_cache_compresses_once_to_exactly_keep_tokens_and_never_after():
    model = tiny_llama()
    from harness.attention import attach

    attach(model)
    n_ctx, keep = 40, 13
    cache = EvictionCache(model.config, make_policy("l2", budget=keep, recent_window=0), once_at=n_ctx,
                          keep_tokens=keep)
    ids = torch.randint(0, 128, (1, n_ctx + 30))
    with torch.no_grad():
        for s, e in ((0, 16), (16, 32), (32, 40)):  # the context in chunks: no update before its end
            model(ids[:, s:e], past_key_values=cache)
            assert all(layer.n_updates == (1 if e == n_ctx else 0) for layer in cache.eviction_layers)
        for t in range(n_ctx, n_ctx + 30):  # question and answer: never compressed
            model(ids[:, t : t + 1], past_key_values=cache)
    for layer in cache.eviction_layers:
        assert layer.n_updates == 1 and layer.seen == n_ctx + 30
        context = layer.positions[layer.positions < n_ctx].view(1, -1, keep)  # [b, kv_heads, keep]
        assert context.shape[1] == model.config.num_key_value_heads
        assert bool((layer.positions[..., keep:] == torch.arange(n_ctx, n_ctx + 30)).all())  # all kept, in order
    assert cache.get_seq_length() == n_ctx + 30  # positions continue from the full context


def test_keep_tokens_ranks_by_scores_for_policies_without_a_budget():
    """A NAMM has a threshold, not a budget: under the protocol its scores rank and the count is fixed."""
    model = tiny_llama(seed=1)
    from harness.attention import attach

    attach(model)
    cache = EvictionCache(model.config, make_policy("namm_bam", n_up=32), once_at=32, keep_tokens=8)
    with torch.no_grad():
        model(torch.randint(0, 128, (1, 32)), past_key_values=cache)
    for layer in cache.eviction_layers:
        assert layer.n_updates == 1 and layer.positions.shape[-1] == 8 and layer.valid is None


def test_kept_tokens_rounds_like_kvpress():
    assert [kept_tokens(1001, r) for r in (0.0, 0.25, 0.5, 0.75, 0.875)] == [1001, 750, 500, 250, 125]


# ---- splitting a sample like kvpress's pipeline ------------------------------------------------------


def _sample(**kw) -> Sample:
    base = dict(id="s", task="t", prompt="A long context about the pass key 12345. " * 5 + "\n\nWhat is the pass key?",
                answers=["12345"], max_new_tokens=8, question="\n\nWhat is the pass key?", answer_prefix=" Answer:")
    return Sample(**{**base, **kw})


def test_context_and_question_follow_kvpress_preprocess(smollm2):
    """With a chat template: the templated user turn is cut where the question starts; both halves
    together are exactly the templated prompt plus the answer prefix. Without one: bos + context,
    then question + newline + answer prefix."""
    _, tok = smollm2
    sample = _sample()
    context, question = context_and_question(tok, sample, "auto", False, 4096)
    templated = tok.apply_chat_template([{"role": "user", "content": sample.prompt}], add_generation_prompt=True,
                                        tokenize=False)
    assert tok.decode(context) + tok.decode(question) == templated + sample.answer_prefix
    assert tok.decode(question).startswith(sample.question)
    plain_ctx, plain_q = context_and_question(tok, sample, "off", False, 4096)
    assert tok.decode(plain_ctx) == (tok.bos_token or "") + sample.prompt[: -len(sample.question)]
    assert tok.decode(plain_q) == sample.question + "\n" + sample.answer_prefix
    aware_ctx, aware_q = context_and_question(tok, sample, "off", True, 4096)  # the question is compressed too
    assert tok.decode(aware_ctx).endswith(sample.question) and tok.decode(aware_q) == "\n" + sample.answer_prefix
    short_ctx, _ = context_and_question(tok, sample, "off", False, len(plain_q) + 8 + 5)  # kvpress keeps the start
    assert short_ctx == plain_ctx[:5]
    with pytest.raises(UsageError, match="leaves no room for the context"):
        context_and_question(tok, sample, "off", False, len(plain_q) + 8)


def test_unsplittable_samples_are_refused_unless_query_aware():
    check_splittable(_sample(), "niah", False)
    for bad in (_sample(question=""), _sample(question="not the end")):
        with pytest.raises(UsageError, match="does not split its samples .suites that do: jsonl, niah, ruler"):
            check_splittable(bad, "lm-eval:x", False)
        check_splittable(bad, "lm-eval:x", True)


def test_splitting_suites_give_question_suffixes(smollm2):
    from harness.suite_args import load_suite

    _, tok = smollm2
    for suite, options, task in (("niah", {"lengths": [512]}, "passkey"), ("niah", {"lengths": [512]}, "needle"),
                                 ("longbench", {"lengths": [1024]}, "passage_count"),
                                 ("longbench", {"lengths": [1600]}, "passage_retrieval_en"),
                                 ("infinitebench", {"lengths": [1024], "n_samples": 1}, "kv_retrieval"),
                                 ("infinitebench", {"lengths": [1024], "n_samples": 1}, "passkey")):
        sample = next(iter(load_suite(suite, options).samples(task, tok, 2048)))
        assert sample.question and sample.prompt.endswith(sample.question), (suite, task)
        assert len(sample.question) < len(sample.prompt) / 4, (suite, task)  # the context is the bulk
        check_splittable(sample, suite, False)


# ---- through the runner ------------------------------------------------------------------------------


def _run(tiny_model_dir, out, *extra):
    from harness.cli import main

    return main(["run", "--model", str(tiny_model_dir), "--suite", "niah", "--suite-arg", "lengths=256",
                 "--suite-arg", "depths=0.5", "--out", str(out), "--quiet", *extra])


def test_run_under_the_kvpress_protocol(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--policy", "h2o", "--protocol", "kvpress", "--compression-ratio", "0.75") == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["task"] for r in records} == {"passkey", "needle"}
    for r in records:
        info = r["kvpress"]
        assert info["kept_tokens"] == int(info["context_tokens"] * 0.25) == r["budget"]
        assert r["input_tokens"] == info["context_tokens"] + info["question_tokens"]
        for layer in r["cache"]["layers"]:
            assert layer["updates"] == 1
            # the compressed context plus everything after it (question, all but the last new token)
            assert layer["logical"] == info["kept_tokens"] + info["question_tokens"] + r["new_tokens"] - 1
    config = json.loads((out / "config.json").read_text())["run"]
    assert (config["protocol"], config["compression_ratio"], config["query_aware"]) == ("kvpress", 0.75, False)
    # resuming needs the same protocol settings
    assert _run(tiny_model_dir, out, "--policy", "h2o", "--protocol", "kvpress", "--compression-ratio", "0.5") == 2


def test_ratio_zero_keeps_everything_like_the_full_cache(tiny_model_dir, tmp_path):
    preds = {}
    for policy in ("full", "l2"):
        out = tmp_path / policy
        assert _run(tiny_model_dir, out, "--policy", policy, "--protocol", "kvpress", "--compression-ratio", "0") == 0
        preds[policy] = [json.loads(line)["prediction"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert preds["full"] == preds["l2"]


@pytest.mark.parametrize("args,expect", [
    (["--protocol", "kvpress"], "--protocol kvpress needs --compression-ratio R with 0 <= R < 1"),
    (["--protocol", "kvpress", "--compression-ratio", "1"], "needs --compression-ratio R with 0 <= R < 1"),
    (["--protocol", "kvpress", "--compression-ratio", "0.5", "--cache-size", "64"], "drop --cache-size"),
    (["--compression-ratio", "0.5"], "--compression-ratio and --query-aware belong to --protocol kvpress"),
    (["--protocol", "weird"], "unknown --protocol 'weird'; choose one of: kvpress, paper"),
    (["--protocol", "kvpress", "--compression-ratio", "0.5", "--suite", "d4rl"], "suite d4rl drives its own model loop"),
])
def test_bad_protocol_options_are_one_line_errors(args, expect, tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "never"
    assert main(["run", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
    assert not out.exists()


# ---- fidelity: the same tokens kept and the same outputs as kvpress's own pipeline -----------------------


def _kvpress_run(model, tokenizer, sample, press, max_new_tokens):
    """kvpress's pipeline on ``sample``: (answer, its compressed cache)."""
    from kvpress import KVPressTextGenerationPipeline  # noqa: F401  (registers the pipeline)
    from transformers import DynamicCache, pipeline

    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tokenizer, device="cpu")
    cache = DynamicCache()
    answer = pipe(sample.prompt[: -len(sample.question)], question=sample.question, answer_prefix=sample.answer_prefix,
                  press=press, max_new_tokens=max_new_tokens, cache=cache)["answer"]
    return answer, cache


@needs_kvpress
@pytest.mark.skipif(not _transformers_below("5.3"), reason="kvpress's own forward hooks need transformers<5.3")
@pytest.mark.parametrize("ours,press_name", [({"name": "l2", "recent_window": 0}, "KnormPress"),
                                             ({"name": "streaming"}, "StreamingLLMPress")])
def test_same_kept_tokens_and_outputs_as_kvpress(smollm2, ours, press_name):
    """SmolLM2, a passkey prompt, ratio 0.5: our policy under ``--protocol kvpress`` and kvpress's
    press in its pipeline keep the same context positions per layer and KV head (up to exact ties of
    the score at the cut, see test_kvpress.py) and answer the same."""
    import kvpress
    from transformers import DynamicCache

    from harness.attention import attach
    from harness.generation import greedy_generate

    model, tok = smollm2
    attach(model)
    filler = " ".join(f"Line {i}: the grass is green and the sky is blue." for i in range(30))
    sample = _sample(prompt=f"The pass key is 71432. Remember it. {filler}\n\nWhat is the pass key? The pass key is",
                     question="\n\nWhat is the pass key? The pass key is", answer_prefix="", max_new_tokens=8)
    ratio = 0.5
    press = getattr(kvpress, press_name)(compression_ratio=ratio)
    theirs, their_cache = _kvpress_run(model, tok, sample, press, sample.max_new_tokens)

    suite = type("S", (), {"score": staticmethod(lambda s, p: 0.0)})()
    evaluator = Evaluator(model, tok, suite, 4096, protocol="kvpress", compression_ratio=ratio)
    policy = make_policy(ours["name"], **{k: v for k, v in ours.items() if k != "name"})
    cache, ids, n_ctx, info = evaluator.kvpress_inputs(sample, policy)
    gen = greedy_generate(model, torch.tensor([ids]), cache, sample.max_new_tokens, 512, evaluator.stop_ids,
                          split=n_ctx)
    assert tok.decode(gen.tokens, skip_special_tokens=True).strip() == theirs.strip() != ""

    with torch.no_grad():  # the uncompressed context's keys, to place kvpress's kept keys
        full = DynamicCache(config=model.config)
        model.model(input_ids=torch.tensor([ids[:n_ctx]]), past_key_values=full)
    keep = info["kept_tokens"]
    exact = total = 0
    for i, layer in enumerate(their_cache.layers):
        assert layer.keys.shape[-2] == keep, i
        dist = (layer.keys[0, :, :, None] - full.layers[i].keys[0, :, None]).norm(dim=-1)  # [h, keep, n_ctx]
        theirs_pos = dist.argmin(-1)
        for h in range(theirs_pos.shape[0]):
            mine = cache.layers[i].positions[0, h]
            mine = set(mine[mine < n_ctx].tolist())
            differ = mine ^ set(theirs_pos[h].tolist())
            assert len(mine) == keep
            exact += not differ
            total += 1
    assert exact >= 0.9 * total, (exact, total)  # ties at the cut (layer 0: norms repeat per token) aside


# ---- the report's leaderboard ------------------------------------------------------------------------


def test_task_average_weighs_every_task_the_same():
    from harness.report.leaderboard import task_average

    assert task_average({"a": [1.0, 0.0], "b": [1.0]}) == pytest.approx(75.0)


def test_report_leaderboard_has_a_column_per_ratio_and_the_paper_schedule(tiny_model_dir, tmp_path):
    from harness.cli import main
    from harness.report.leaderboard import task_average

    runs = {"full": ("--policy", "full"),
            "l2-0.5": ("--policy", "l2", "--recent-window", "0", "--protocol", "kvpress", "--compression-ratio", "0.5"),
            "l2-0.75": ("--policy", "l2", "--recent-window", "0", "--protocol", "kvpress", "--compression-ratio", "0.75"),
            "h2o-paper": ("--policy", "h2o", "--cache-size", "0.5", "--n-up", "64")}
    for name, args in runs.items():
        assert _run(tiny_model_dir, tmp_path / name, *args) == 0
    out = tmp_path / "report"
    assert main(["report", *(str(tmp_path / n) for n in runs), "--out", str(out), "--no-figures"]) == 0
    board = (out / "tables" / "leaderboard.md").read_text()
    assert board in (out / "report.md").read_text()
    lines = [ln for ln in board.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| Policy | R = 0.5 | R = 0.75 | paper schedule (mean cache) | samples |"

    def average(name):
        recs = [json.loads(ln) for ln in (tmp_path / name / "records.jsonl").read_text().splitlines()]
        by_task = {}
        for r in recs:
            by_task.setdefault(r["task"], []).append(r["score"])
        return task_average(by_task), recs

    l2_half, _ = average("l2-0.5")
    l2_quarter, _ = average("l2-0.75")
    assert f"| l2 (recent window 0) | {l2_half:.1f} | {l2_quarter:.1f} | — | 2 |" in lines
    h2o, recs = average("h2o-paper")
    kept = sum(r["cache"]["logical_mean"] / (r["input_tokens"] + r["new_tokens"]) for r in recs) / len(recs)
    assert f"| h2o (cache-size 0.5) | — | — | {h2o:.1f} ({kept:.2f}) | 2 |" in lines
    assert 0.4 < kept < 0.9
    full, _ = average("full")
    assert f"| full cache (paper) | {full:.1f} | {full:.1f} | {full:.1f} | 2 |" in lines
    # the per-task tables name a kvpress-protocol run by its ratio, not by the policy's unused budget
    report = (out / "report.md").read_text()
    assert "| L2 (R = 0.5) |" in report and "| L2 (R = 0.75) |" in report and " tok)" not in report


@pytest.mark.parametrize("policy", ["full", "h2o", "l2", "streaming", "namm_bam", "namm_mlp",
                                    pytest.param("kvpress:KnormPress", marks=needs_kvpress),
                                    pytest.param("kvpress:TOVAPress", marks=needs_kvpress)])
def test_every_policy_runs_under_the_protocol(policy, tiny_model_dir, tmp_path):
    """Each policy compresses the context once to exactly int(n_context * 0.5) tokens per KV head
    (full: nothing, and its record says so), and the rest of the sequence is kept."""
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--tasks", "passkey", "--policy", policy, "--protocol", "kvpress",
                "--compression-ratio", "0.5") == 0
    (r,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    info = r["kvpress"]
    rest = info["question_tokens"] + r["new_tokens"] - 1  # the last new token is never fed back
    assert info["kept_tokens"] == r["budget"] == (info["context_tokens"] if policy == "full"
                                                   else int(info["context_tokens"] * 0.5))
    assert [layer["logical"] for layer in r["cache"]["layers"]] == [float(info["kept_tokens"] + rest)] * 2
