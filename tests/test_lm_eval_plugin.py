"""lm-evaluation-harness integration, offline on the embedded SmolLM2: the ``evicting-hf`` model
(:mod:`harness.lm_eval_model`) and the ``lm-eval:<task>`` suite (:mod:`tasks.lm_eval_suite`), on the
local task ``tests/fixtures/lm_eval/toy_passkey.yaml`` (4 short prompts; full cache scores 0.75).

lm-eval is a test dependency (``pip install -e '.[test,lm-eval]'``): these tests fail, not skip, without it.
"""

import json
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.models.utils import postprocess_generated_text
from lm_eval.tasks import TaskManager

from harness import lm_eval_cli
from harness.cli import main as harness_main
from harness.errors import UsageError
from harness.lm_eval_model import EvictingHFLM

ROOT = Path(__file__).resolve().parents[1]
TASKS = "tests/fixtures/lm_eval"
TASK = "toy_passkey"
METRIC = "exact_match,strip"
PASSKEY = json.loads((ROOT / TASKS / "passkey.jsonl").read_text().splitlines()[0])


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the task's data_files path is relative to the repository root


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on shared 2-core machines the small forward passes run faster without OpenMP contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(ROOT / TASKS), include_defaults=False)  # no scan of lm-eval's 14k tasks


@pytest.fixture(scope="module")
def smollm2_dir():
    """The dequantised SmolLM2 folder (what ``--model smollm2`` loads), for lm-eval's own ``hf`` model."""
    from harness.models import _dequantised_dir, load_model, resolve_model

    folder = _dequantised_dir(resolve_model("smollm2"))
    if not (folder / "config.json").exists():
        load_model("smollm2")
    return str(folder)


def evaluate(model, task_manager, **kwargs) -> dict:
    return lm_eval.simple_evaluate(model=model, tasks=[TASK], task_manager=task_manager, log_samples=True,
                                   bootstrap_iters=0, **kwargs)


def responses(result) -> list:
    return [(s["doc_id"], s["resps"]) for s in sorted(result["samples"][TASK], key=lambda s: s["doc_id"])]


def test_full_policy_reproduces_lm_eval_hf(task_manager, smollm2_dir):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=smollm2_dir, device="cpu", dtype="float32", batch_size=1)
    ours = EvictingHFLM(pretrained=smollm2_dir, policy="full", n_up=32, device="cpu")  # prefill in 32-token chunks
    expected, got = evaluate(hf, task_manager), evaluate(ours, task_manager)
    assert responses(got) == responses(expected)
    assert got["results"][TASK][METRIC] == expected["results"][TASK][METRIC] == 0.75
    assert got["config"]["eviction"]["requests_evicted"] == 0

    # loglikelihood through the chunked cache equals lm-eval's single forward pass
    context = PASSKEY["context"] + "\n\n" + PASSKEY["question"]
    requests = [Instance("loglikelihood", {}, (context, f" {key}"), 0) for key in (PASSKEY["answer"], "12345")]
    for (ll_ours, greedy_ours), (ll_hf, greedy_hf) in zip(ours.loglikelihood(requests), hf.loglikelihood(requests)):
        assert ll_ours == pytest.approx(ll_hf, abs=1e-3) and greedy_ours == greedy_hf
    rolling = [Instance("loglikelihood_rolling", {}, (context,), 0)]
    assert ours.loglikelihood_rolling(rolling)[0] == pytest.approx(hf.loglikelihood_rolling(rolling)[0], abs=1e-2)


def test_h2o_small_cache_evicts_and_reports_stats(task_manager, smollm2_dir, tmp_path):
    stats = tmp_path / "stats.jsonl"
    args = f"pretrained={smollm2_dir},policy=h2o,cache_size=16,n_up=16,device=cpu,stats_path={stats}"
    result = evaluate("evicting-hf", task_manager, model_args=args)  # by name: lm-eval's registry and arg parsing
    assert 0.0 <= result["results"][TASK][METRIC] <= 1.0
    info = result["config"]["eviction"]
    assert info["policy"]["name"] == "h2o" and info["requests"] == 4 and info["requests_evicted"] == 4
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert line["evicted"] and line["budget"] == 16 and line["prompt_tokens"] > 16
        assert line["cache"]["logical_mean"] <= 16 + 16 - 1  # budget + n_up - 1 between two updates
        assert all(layer["updates"] >= 1 for layer in line["cache"]["layers"])


def test_suite_run_scores_like_lm_eval(task_manager, tmp_path):
    out = tmp_path / "run"
    assert harness_main(["run", "--suite", f"lm-eval:{TASK}", "--suite-arg", f"include_path={TASKS}",
                         "--policy", "full", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    records = {r["id"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert len(records) == 4 and all(r["source"] == "data-dir" for r in records.values())

    class Replay(LM):
        """Answers each request with the run's recorded prediction, cut at ``until`` as lm-eval's hf model cuts."""

        def generate_until(self, requests, disable_tqdm=False):
            return [postprocess_generated_text(records[str(r.doc_id)]["prediction"], r.args[1]["until"], None)
                    for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    expected = evaluate(Replay(), task_manager)["results"][TASK][METRIC]
    assert expected == 0.75
    assert metrics["tasks"][TASK]["score"] == pytest.approx(100 * expected)
    assert metrics["official_score"][TASK][METRIC] == pytest.approx(expected)


def test_bad_input_is_a_one_line_error(task_manager, capsys):
    code = harness_main(["run", "--suite", "lm-eval:no_such_task", "--suite-arg", f"include_path={TASKS}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown lm-eval task 'no_such_task'") and err.count("\n") == 1

    with pytest.raises(UsageError, match="unknown policy 'nope'; choose one of: .*h2o"):
        evaluate("evicting-hf", task_manager, model_args="policy=nope")
    with pytest.raises(UsageError, match="unknown model_args colour"):
        EvictingHFLM(colour="blue")
    with pytest.raises(UsageError, match="bad model_args value"):
        EvictingHFLM(cache_size="lots")
    with pytest.raises(UsageError, match="unknown policy"):  # device twice (model_args and lm-eval's run) is fine
        EvictingHFLM.create_from_arg_string("policy=nope,device=cpu", {"device": "cuda:0", "batch_size": 1})

    code = lm_eval_cli.main(["run", "--model", "evicting-hf", "--model_args", "policy=nope", "--tasks", TASK,
                             "--include_path", TASKS])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: unknown policy 'nope'")
