"""Video suites and the video-LLM path, offline: a tiny random LLaVA-NeXT-Video saved locally, a
synthetic mp4 written with PyAV, and 2-question tasks in the official record formats.

Never imports lmms-eval or torchvision (the lmms-eval model class is exercised against a stub
``lmms_eval`` package).
"""

from __future__ import annotations

import shutil
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("av", reason="the video tests need PyAV (pip install av)")

import policies
from harness.errors import UsageError
from tasks.base import DataError, TaskUnavailable
from harness.cache_factory import CacheFactory
from policies.namm.scorers import SCORERS
from tasks.video import generate, inputs as video_inputs, vlm
from tasks.video.frames import VideoError, read_frames, uniform_indices, write_test_video
from tasks.video.longvideobench import LongVideoBench, parse_choice
from tasks.video.mlvu import MLVU, extract_choice
from tasks.video.tiny import TOKENS_PER_FRAME, build_tiny_video_model

FIXTURES = Path(__file__).parent / "fixtures" / "video"
N_FRAMES = 8
N_UP = 16
QUESTION = "What colour is the square?\nA. red\nB. yellow\nAnswer with the option's letter from the given choices directly.\n"


@pytest.fixture(scope="module", autouse=True)
def _threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "synthetic.mp4", n_frames=24)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_video_model(tmp_path_factory.mktemp("tiny-llava-next-video"))


@pytest.fixture(scope="module")
def bundle(tiny_dir):
    return vlm.load_video_model(str(tiny_dir), preprocess="builtin")


@pytest.fixture(scope="module")
def frames(video):
    return read_frames(video, N_FRAMES)[0]


@pytest.fixture
def data(tmp_path, video) -> Path:
    """Copies of the fixture records with the synthetic video where each benchmark keeps it."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES, root)
    (root / "longvideobench" / "videos").mkdir()
    shutil.copy(video, root / "longvideobench" / "videos" / "synthetic.mp4")
    (root / "mlvu" / "video" / "plotQA").mkdir(parents=True)
    shutil.copy(video, root / "mlvu" / "video" / "plotQA" / "synthetic.mp4")
    return root


def _namm(threshold=0.0, scale=0.05):
    """A BAM NAMM with random parameters, identity normalisation and γ = 0.99 (not the shipped default)."""
    n = SCORERS["bam"]().n_params
    params = torch.randn(n, generator=torch.Generator().manual_seed(0)) * scale
    return policies.make_policy("namm_bam", n_up=N_UP, threshold=threshold, params=params)


# ---- frames ------------------------------------------------------------------------------------

def test_uniform_sampling_matches_lmms_eval_rule(video):
    assert uniform_indices(24, 8) == [0, 3, 6, 9, 13, 16, 19, 23]
    assert uniform_indices(3, 5) == [0, 0, 1, 1, 2]  # short videos repeat frames, as lmms-eval does
    frames, info = read_frames(video, 8)
    assert frames.shape == (8, 48, 64, 3) and frames.dtype.name == "uint8"
    assert info["total_frames"] == 24 and info["indices"] == uniform_indices(24, 8)
    # the square moves left to right: its column in the first frame is left of the last one's
    yellow = (frames[..., 0] > 200) & (frames[..., 1] > 200) & (frames[..., 2] < 80)
    cols = [yellow[i].nonzero()[1].mean() for i in (0, 7)]
    assert cols[0] < cols[1]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "many", None])
def test_invalid_frame_count_is_a_clear_error(bad, video):
    with pytest.raises(UsageError, match="n_frames must be a positive integer"):
        read_frames(video, bad)
    with pytest.raises(UsageError, match="n_frames"):
        LongVideoBench(data_dir=None, n_frames=bad)


def test_unreadable_or_missing_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(VideoError, match=r"cannot read video file .*broken\.mp4") as err:
        read_frames(bad, 4)
    assert "\n" not in str(err.value) and isinstance(err.value, DataError)
    with pytest.raises(VideoError, match="not found"):
        read_frames(tmp_path / "absent.mp4", 4)


def test_missing_video_extra_is_a_clear_error(monkeypatch, video):
    monkeypatch.setitem(sys.modules, "av", None)  # import av → ImportError
    with pytest.raises(UsageError, match=r"PyAV.*pip install -e '\.\[video\]'"):
        read_frames(video, 4)
    with pytest.raises(UsageError, match="video extra"):
        LongVideoBench().load_model("unused")


# ---- the model path ----------------------------------------------------------------------------

def test_tiny_model_token_accounting(bundle, frames):
    assert bundle.tokens_per_frame == TOKENS_PER_FRAME
    inputs = video_inputs.build_inputs(bundle, frames, QUESTION)
    assert inputs.pixel_values_videos.shape == (1, N_FRAMES, 3, 84, 84)
    n_img = N_FRAMES * TOKENS_PER_FRAME
    assert int(inputs.image_mask.sum()) == n_img
    assert int((inputs.input_ids == bundle.video_token_id).sum()) == n_img
    assert inputs.frame_of[inputs.image_mask].tolist() == [f for f in range(N_FRAMES) for _ in range(TOKENS_PER_FRAME)]
    text = video_inputs.chat_text(bundle.tokenizer, QUESTION)  # lmms-eval llava_hf's Vicuna fallback template
    assert text.startswith("A chat between a curious user") and "USER: <video>\nWhat colour" in text
    assert text.endswith("ASSISTANT:")
    assert video_inputs.count_input_tokens(bundle, QUESTION, N_FRAMES) == inputs.input_ids.shape[1]


def test_processor_style_chat_template_gets_structured_content(bundle):
    template = ("{% for m in messages %}{{ m['role'].upper() + ': ' }}{% for c in m['content'] %}"
                "{% if c['type'] == 'video' %}{{ '<video>\\n' }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}")
    saved = bundle.tokenizer.chat_template
    bundle.tokenizer.chat_template = template
    try:
        assert video_inputs.chat_text(bundle.tokenizer, "Why?") == "USER: <video>\nWhy? ASSISTANT:"
    finally:
        bundle.tokenizer.chat_template = saved


@pytest.mark.parametrize("n_up", [N_UP, 4096])
def test_full_policy_equals_unwrapped_model(bundle, frames, n_up):
    """``full`` through the eviction cache (chunked prefill of n_up tokens) answers exactly like the
    stock transformers ``generate`` on the same frames, greedy."""
    inputs = video_inputs.build_inputs(bundle, frames, QUESTION)
    reference = generate.generate_unwrapped(bundle, inputs, max_new_tokens=12)
    result = generate.run_sample(bundle, frames, QUESTION, CacheFactory(policies.make_policy("full"), n_up), 12)
    assert bundle.model.config.text_config._attn_implementation == "kv_evict"  # the factory's attach reached the LM
    assert result["tokens"] == reference and len(reference) > 0
    assert result["prediction"] == bundle.tokenizer.decode(reference, skip_special_tokens=True)
    modality = result["cache"]["modality"]
    assert modality["image_kept"] == modality["image_seen"] == N_FRAMES * TOKENS_PER_FRAME
    assert modality["text_kept"] == modality["text_seen"]
    assert result["cache"]["logical_mean"] == result["input_tokens"] + result["new_tokens"] - 1


@pytest.mark.parametrize("make", [lambda: policies.make_policy("h2o", n_up=N_UP, budget=96), _namm],
                         ids=["h2o", "namm_bam"])
def test_small_budget_evicts_image_tokens(bundle, frames, make):
    result = generate.run_sample(bundle, frames, QUESTION, CacheFactory(make(), N_UP), 6)
    modality = result["cache"]["modality"]
    n_img = N_FRAMES * TOKENS_PER_FRAME
    assert modality["image_seen"] == n_img
    assert modality["image_kept"] < n_img  # frames were evicted ...
    assert modality["text_kept"] > 0  # ... while the cache still holds text
    assert result["cache"]["logical_mean"] < result["input_tokens"]
    assert len(modality["frames_kept"]) == N_FRAMES and modality["frames_dropped"] >= 1
    assert all(layer["updates"] > 0 for layer in result["cache"]["layers"])
    assert result["timing"]["policy_s"] > 0 and 1 <= result["new_tokens"] <= 6


def test_namm_paper_threshold_shift_evicts_more(bundle, frames):
    base = generate.run_sample(bundle, frames, QUESTION, CacheFactory(_namm(0.0), N_UP), 2)["cache"]["logical_mean"]
    shifted = generate.run_sample(bundle, frames, QUESTION, CacheFactory(_namm(5.0), N_UP), 2)["cache"]["logical_mean"]
    assert shifted < base


# ---- suites ------------------------------------------------------------------------------------

def test_suites_read_official_records(data):
    lvb = LongVideoBench(data_dir=str(data / "longvideobench"), n_frames=N_FRAMES)
    samples = list(lvb.samples("longvideobench_val_v", None, 4096))
    assert [s.id for s in samples] == ["synthetic01_0", "synthetic01_1"]
    assert samples[0].prompt == ("What colour is the square that moves across the frames?\nA. red\nB. yellow\n"
                                 "C. green\nD. blue\nAnswer with the option's letter from the given choices directly.\n")
    assert samples[0].answers == ["B"] and samples[1].answers == ["A"] and samples[0].max_new_tokens == 32
    assert samples[0].metadata["source"] == "data-dir" and samples[0].metadata["generated"] is False
    assert Path(samples[0].metadata["video"]).is_file()
    assert lvb.task_ids["longvideobench_val_v"] == "LongVideoBench"

    mlvu = MLVU(data_dir=str(data / "mlvu"), n_frames=N_FRAMES)
    samples = list(mlvu.samples("mlvu_dev", None, 4096))
    assert [s.answers for s in samples] == [["B"], ["B"]]  # "yellow" mapped through candidates
    assert samples[1].prompt.endswith("(D) 3\nOnly give the best option.\nBest option: (")
    assert samples[0].max_new_tokens == 16 and samples[0].metadata["task_type"] == "plotQA"


def test_scoring_follows_lmms_eval():
    assert parse_choice("The best answer is B.", 4, "x") == "B"
    assert parse_choice("D. A book", 4, "x") == "D"
    fallback = parse_choice("no letter here", 4, "q1")
    assert fallback in "ABCD" and fallback == parse_choice("no letter here", 4, "q1")  # seeded
    assert extract_choice("B) yellow") == "B" and extract_choice(" C ") == "C" and extract_choice("yellow") == "yellow"
    mlvu = MLVU()
    records = [{"score": 1.0, "metadata": {"task_type": "plotQA"}}, {"score": 0.0, "metadata": {"task_type": "plotQA"}},
               {"score": 1.0, "metadata": {"task_type": "count"}}]
    assert mlvu.aggregate(records) == round((50 + 100) / 7, 4)  # lmms-eval: mean over the 7 dev task types


def test_missing_data_and_videos(data, tmp_path):
    with pytest.raises(TaskUnavailable, match="pass --data-dir DIR holding lvb_val.json") as err:
        LongVideoBench().samples("longvideobench_val_v", None, 4096)
    assert "\n" not in str(err.value)
    with pytest.raises(TaskUnavailable, match="mlvu_dev"):
        MLVU(data_dir=str(tmp_path)).samples("mlvu_dev", None, 4096)
    shutil.rmtree(data / "longvideobench" / "videos")
    with pytest.raises(DataError, match="video 'synthetic.mp4' not found"):
        LongVideoBench(data_dir=str(data / "longvideobench")).samples("longvideobench_val_v", None, 4096)
    (data / "mlvu" / "mlvu_dev.jsonl").write_text('{"video_name": "synthetic.mp4", "question": "q"}\n')
    with pytest.raises(DataError, match="lacks field"):
        MLVU(data_dir=str(data / "mlvu")).samples("mlvu_dev", None, 4096)


def test_load_model_offline_error_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="could not load video model") as err:
        LongVideoBench().load_model("nobody/no-such-video-model")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suite_cls,sub,task", [(LongVideoBench, "longvideobench", "longvideobench_val_v"),
                                                (MLVU, "mlvu", "mlvu_dev")])
def test_full_path_records_and_metrics(data, tiny_dir, suite_cls, sub, task):
    """frames → model → eviction every n_up → answer → score, in the runner's record/metrics format."""
    from harness.evaluate import Evaluator  # noqa: F401  (the keys below are Evaluator.evaluate's)
    from harness.metrics import summarise

    suite = suite_cls(data_dir=str(data / sub), n_frames=N_FRAMES)
    model_bundle, name = suite.load_model(str(tiny_dir), "cpu", "float32")
    assert name == tiny_dir.name
    records = []
    for i, sample in enumerate(suite.samples(task, model_bundle.tokenizer, 4096)):
        policy = policies.make_policy("h2o", n_up=N_UP, budget=64)
        result = suite.evaluate_sample(sample, model_bundle, CacheFactory(policy, N_UP, "original"), device="cpu")
        assert {"prediction", "score", "new_tokens", "cache", "timing"} <= set(result)
        assert {"physical_mean", "logical_mean", "layers", "modality"} <= set(result["cache"])
        assert {"prefill_s", "decode_s", "policy_s"} <= set(result["timing"])
        assert result["score"] in (0.0, 1.0) and result["score"] == suite.score(sample, result["prediction"])
        assert result["input_tokens"] == suite.input_tokens(sample, model_bundle)
        assert result["image_tokens"] == N_FRAMES * TOKENS_PER_FRAME
        assert result["cache"]["modality"]["image_kept"] < result["image_tokens"]
        records.append({"index": i, "task": sample.task, "task_id": suite.task_ids[task], "id": sample.id,
                        "prediction": result["prediction"], "answers": sample.answers, "score": result["score"],
                        "prompt_tokens": result["prompt_tokens"], "input_tokens": result["input_tokens"],
                        "new_tokens": result["new_tokens"], "generated_data": False,
                        "source": sample.metadata["source"], "budget": policy.budget, "cache": result["cache"],
                        "metadata": sample.metadata, "timing": result["timing"]})
    metrics = summarise(records, expected=2)
    assert metrics["complete"] and metrics["tasks"][task]["n"] == 2
    assert metrics["tasks"][task]["sources"] == ["data-dir"] and not metrics["tasks"][task]["generated_data"]
    assert 0 <= suite.aggregate(records) <= 100


# ---- lmms-eval model (against a stub lmms_eval package; the real one is never imported) ----------

@pytest.fixture
def stub_lmms_eval(monkeypatch):
    class lmms:
        def __init__(self):
            self._rank, self._world_size, self.task_dict = 0, 1, {}
            self.cache_hook = types.SimpleNamespace(add_partial=lambda *a: None)

        @property
        def rank(self):
            return self._rank

    registry = {}

    def register_model(*names):
        def wrap(cls):
            for n in names:
                registry[n] = cls
            return cls
        return wrap

    mods = {"lmms_eval": types.ModuleType("lmms_eval"), "lmms_eval.api": types.ModuleType("lmms_eval.api"),
            "lmms_eval.api.model": types.ModuleType("lmms_eval.api.model"),
            "lmms_eval.api.registry": types.ModuleType("lmms_eval.api.registry")}
    mods["lmms_eval.api.model"].lmms = lmms
    mods["lmms_eval.api.registry"].register_model = register_model
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "harness.lmms_eval_model", raising=False)
    return registry


def test_lmms_eval_model_generates_with_eviction(stub_lmms_eval, tiny_dir, video, tmp_path):
    import json

    from harness.lmms_eval_model import NAMMVideo

    assert stub_lmms_eval["namm_video"] is NAMMVideo
    stats = tmp_path / "stats.jsonl"
    lm = NAMMVideo(pretrained=str(tiny_dir), policy="h2o", cache_size=64, n_up=N_UP, max_frames_num=N_FRAMES,
                   device="cpu", preprocess="builtin", stats_path=str(stats))
    docs = {0: {"video": str(video)}}
    lm.task_dict = {"longvideobench_val_v": {"validation": docs}}
    request = types.SimpleNamespace(args=(QUESTION, {"max_new_tokens": 5, "until": ["\n"]}, lambda d: [d["video"]],
                                          0, "longvideobench_val_v", "validation"))
    [answer] = lm.generate_until([request])
    assert isinstance(answer, str)
    record = json.loads(stats.read_text().splitlines()[0])
    assert record["cache"]["modality"]["image_kept"] < N_FRAMES * TOKENS_PER_FRAME and record["budget"] == 64

    # same frames, full policy: the lmms-eval model answers like the unwrapped transformers model
    full = NAMMVideo(pretrained=str(tiny_dir), policy="full", n_up=N_UP, max_frames_num=N_FRAMES, device="cpu",
                     preprocess="builtin")
    full.task_dict = lm.task_dict
    [answer] = full.generate_until([request])
    inputs = video_inputs.build_inputs(full.bundle, read_frames(video, N_FRAMES)[0], QUESTION)
    reference = generate.generate_unwrapped(full.bundle, inputs, 5)
    assert answer == full.bundle.tokenizer.decode(reference, skip_special_tokens=True)

    namm = NAMMVideo(pretrained=str(tiny_dir), policy="namm_bam", device="cpu", preprocess="builtin")
    assert namm.policy.threshold == 5.0  # the paper's video shift
    with pytest.raises(ValueError, match="unknown policy"):
        NAMMVideo(pretrained=str(tiny_dir), policy="nope", device="cpu")


def test_default_run_imports_neither_lmms_eval_nor_torchvision():
    """Importing the suites, the entry-point module and the legacy plugin table pulls in neither."""
    import subprocess

    code = ("import sys, tasks.video, harness.lmms_eval_plugin; "
            "print(sorted(m for m in ('lmms_eval', 'torchvision', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"


def test_video_suite_through_the_runner_cli(data, tiny_dir, tmp_path):
    """`python -m harness run --suite mlvu --data-dir ...`: records with image/text accounting, eviction
    across image tokens, and MLVU's official aggregate in metrics.json."""
    import json

    from harness.cli import main

    out = tmp_path / "run"
    assert main(["run", "--suite", "mlvu", "--model", str(tiny_dir), "--data-dir", str(data / "mlvu"),
                 "--suite-arg", f"n_frames={N_FRAMES}", "--policy", "h2o", "--cache-size", "64", "--n-up", str(N_UP),
                 "--out", str(out), "--quiet"]) == 0
    recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(r["source"] == "data-dir" for r in recs)
    for r in recs:
        assert r["image_tokens"] == N_FRAMES * TOKENS_PER_FRAME
        assert r["cache"]["modality"]["image_kept"] < r["image_tokens"]
        assert r["input_tokens"] > r["image_tokens"] and r["budget"] == 64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["official_score"] == MLVU().aggregate(recs)


def test_runner_and_lmms_eval_paths_use_one_video_namm_threshold(stub_lmms_eval, tiny_dir):
    """``harness run --suite longvideobench|mlvu`` and lmms-eval's ``namm_video`` build the policy with the
    same threshold: the paper's +5 shift by default, an explicit threshold as given."""
    from harness.runner import RunConfig, make_run_policy
    from tasks.video.base import NAMM_THRESHOLD_SHIFT
    from harness.lmms_eval_model import NAMMVideo

    assert NAMM_THRESHOLD_SHIFT == 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NAMM without a checkpoint: zero parameters
        for policy, threshold in (("namm_bam", None), ("namm_mlp", None), ("namm_bam", -5.0), ("namm_bam", 2.5)):
            lmms = NAMMVideo(pretrained=str(tiny_dir), policy=policy, namm_threshold=threshold, n_up=N_UP,
                             device="cpu", preprocess="builtin").policy.threshold
            runs = {suite: make_run_policy(RunConfig(policy=policy, suite=suite, namm_threshold=threshold,
                                                     n_up=N_UP)).threshold for suite in ("longvideobench", "mlvu")}
            expected = 0.0 + NAMM_THRESHOLD_SHIFT if threshold is None else threshold
            assert lmms == expected and runs == {"longvideobench": expected, "mlvu": expected}, (policy, threshold)
            # language suites keep the policy's own default
            language = make_run_policy(RunConfig(policy=policy, suite="niah", namm_threshold=threshold, n_up=N_UP))
            assert language.threshold == (0.0 if threshold is None else threshold)
        h2o = NAMMVideo(pretrained=str(tiny_dir), policy="h2o", cache_size=64, n_up=N_UP, device="cpu",
                        preprocess="builtin").policy
        assert not hasattr(h2o, "threshold")
        run_h2o = make_run_policy(RunConfig(policy="h2o", suite="mlvu", cache_size=64, n_up=N_UP))
        assert not hasattr(run_h2o, "threshold")
