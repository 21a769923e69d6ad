"""D4RL suite: cached DT rollouts through the eviction cache vs the stock uncached DT, budgets,
determinism, errors, training. Fast: tiny random DTs and the shipped small DTs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")

from policies import make_policy
from tasks.base import TaskUnavailable
from tasks.d4rl import suite as d4rl_suite
from tasks.d4rl.envs import TASKS, MujocoMissing, make_env, normalized_score, split_task
from tasks.d4rl.model import SHIPPED, DTModels
from harness.cache_factory import CacheFactory
from tasks.d4rl.rollout import DTSpec, cached_rollout, uncached_rollout


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_dt(state_dim=17, act_dim=6, seed=0):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    torch.manual_seed(seed)
    config = DecisionTransformerConfig(
        state_dim=state_dim,
        act_dim=act_dim,
        hidden_size=32,
        n_layer=2,
        n_head=2,
        max_ep_len=1000,
        n_positions=16,
        bos_token_id=None,
        eos_token_id=None,
    )
    return DecisionTransformerModel(config).eval()


@pytest.fixture(scope="module")
def cheetah():
    env = make_env("halfcheetah")  # never terminates early: every rollout runs its full length
    yield env
    env.close()


SPEC = DTSpec(np.zeros(17), np.ones(17), 1000.0, 6000.0)


@pytest.mark.parametrize("feed", ["step", "token"])
def test_full_cache_equals_uncached_recomputation(cheetah, feed):
    model = random_dt()
    cached = cached_rollout(
        model,
        SPEC,
        cheetah,
        seed=3,
        caches=CacheFactory(make_policy("full"), 16),
        max_steps=60,
        feed=feed,
        reference_window=None,
    )
    # step by step: the stock DecisionTransformerModel.forward over the same whole history
    teacher = np.abs(np.stack(cached.actions) - np.stack(cached.reference_actions)).max(1)
    assert len(teacher) == 60 and teacher.max() < 1e-5, teacher
    # and end to end: an independent uncached rollout, same seed, same env
    plain = uncached_rollout(model, SPEC, cheetah, seed=3, max_steps=60)
    assert cached.steps == plain.steps == 60
    diff = np.abs(np.stack(cached.actions) - np.stack(plain.actions)).max()
    assert diff < 1e-4, diff
    assert cached.episode_return == pytest.approx(plain.episode_return, abs=1e-2)
    assert all(s["physical"] == 3 * 60 - 1 for s in cached.cache_stats)  # a_59 is never fed


def test_shipped_dt_full_cache_equals_uncached():
    models = DTModels(None)
    loaded = models.get("halfcheetah-expert")
    env = make_env("halfcheetah")
    cached = cached_rollout(
        loaded.model,
        loaded.spec,
        env,
        seed=0,
        caches=CacheFactory(make_policy("full"), 512),
        max_steps=100,
        reference_window=None,
    )
    teacher = np.abs(np.stack(cached.actions) - np.stack(cached.reference_actions)).max(1)
    assert len(teacher) == 100 and teacher.max() < 1e-5, teacher
    # independent rollouts: float rounding (~1e-7) grows through the trained policy + MuJoCo
    # dynamics (measured ~1e-4 by step 50), so the end-to-end check is looser
    plain = uncached_rollout(loaded.model, loaded.spec, env, seed=0, max_steps=50)
    assert cached.steps >= plain.steps == 50
    assert np.abs(np.stack(cached.actions[:50]) - np.stack(plain.actions)).max() < 1e-2


def test_h2o_within_budget_completes_and_is_deterministic(cheetah):
    model = random_dt(seed=1)
    budget, n_up = 256, 64
    runs = [
        cached_rollout(model, SPEC, cheetah, seed=7, caches=CacheFactory(make_policy("h2o", budget=budget), n_up))
        for _ in range(2)
    ]
    r = runs[0]
    assert r.steps == 1000 and not r.terminated  # 2,999 tokens seen, budget 256
    assert r.n_updates > 0
    assert r.physical_max_after_update <= budget
    assert r.physical_max <= budget + n_up + 2  # between updates at most n_up (+ a 3-token step) more
    assert all(s["logical"] <= budget + n_up for s in r.cache_stats)  # tokens fed since the last update
    assert runs[1].episode_return == r.episode_return
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].actions, runs[1].actions))


def test_suite_samples_and_evaluate_sample():
    suite = d4rl_suite.D4RL(seeds=3, max_steps=20)
    assert len(suite.tasks) == 9 and "hopper-medium-replay" in suite.tasks and "halfcheetah-expert" in suite.tasks
    models, name = suite.load_model(None, "cpu", "float32")
    assert name == "shipped-dt" and suite.generated
    samples = list(suite.samples("hopper-medium", None, max_length=None, seed=0))
    assert [s.id for s in samples] == ["seed0", "seed1", "seed2"]
    meta = samples[0].metadata
    assert meta["env_id"] == "Hopper-v5" and meta["env_version"] == "v5" and meta["seed"] == 0
    assert meta["source"] == "generated" and meta["generated"] is True
    result = suite.evaluate_sample(samples[0], models, CacheFactory(make_policy("h2o", budget=16), 8, "original"), "cpu")
    for key in (
        "prediction",
        "score",
        "new_tokens",
        "cache",
        "timing",
        "episode_return",
        "normalized_score",
        "env_steps",
    ):
        assert key in result
    assert result["prediction"] == f"return={result['episode_return']:.1f}"
    assert result["score"] == pytest.approx(normalized_score("hopper", result["episode_return"]) / 100)
    assert result["score"] == pytest.approx(suite.score(samples[0], result["prediction"]), abs=1e-3)
    assert 1 <= result["env_steps"] <= 20 and result["new_tokens"] == result["env_steps"]
    assert {"physical_mean", "logical_mean", "layers"} <= set(result["cache"])
    assert {"prefill_s", "decode_s", "policy_s"} <= set(result["timing"])
    again = suite.evaluate_sample(samples[0], models, CacheFactory(make_policy("h2o", budget=16), 8, "original"), "cpu")
    assert again["episode_return"] == result["episode_return"]


def test_v4_env_selectable():
    suite = d4rl_suite.D4RL(seeds=1, env_version="v4", max_steps=5)
    suite.load_model(None)
    sample = next(iter(suite.samples("walker2d-expert", None, None)))
    assert sample.metadata["env_id"] == "Walker2d-v4"
    assert suite.evaluate_sample(sample, suite.models, CacheFactory(make_policy("full")))["env_steps"] >= 1


def test_unknown_env_quality_and_options():
    with pytest.raises(ValueError, match="unknown D4RL env 'ant'.*hopper"):
        split_task("ant-medium")
    with pytest.raises(ValueError, match="quality 'random'.*medium-replay"):
        split_task("hopper-random")
    with pytest.raises(TaskUnavailable, match="unknown D4RL env"):
        d4rl_suite.D4RL().samples("ant-medium")
    with pytest.raises(ValueError, match="v3 needs mujoco-py"):
        d4rl_suite.D4RL(env_version="v3")
    from tasks import get_suite

    assert isinstance(get_suite("d4rl", {"seeds": 2}), d4rl_suite.D4RL)


def test_missing_mujoco_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(MujocoMissing, match=r"pip install 'gymnasium\[mujoco\]'"):
        make_env("hopper")
    assert issubclass(MujocoMissing, TaskUnavailable)


def test_dataset_not_found_offline(tmp_path, monkeypatch):
    from tasks.d4rl.data import DatasetNotFound, find_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetNotFound) as err:
        find_dataset("walker2d", "medium-replay")
    msg = str(err.value)
    assert "mujoco/walker2d/medium-replay-v0" in msg and "minari download" in msg and "tasks.d4rl.generate" in msg
    assert str(tmp_path) in msg
    # a hub DT without dt_info.json needs the dataset's statistics: same error, raised by samples()
    with pytest.raises(TaskUnavailable):
        DTModels("no-such-user/no-such-dt").get("hopper-medium")


class ConnectionError(Exception):  # noqa: A001  (named like requests' offline error)
    pass


@pytest.mark.parametrize("failure,falls_back", [(ConnectionError("Max retries exceeded"), True),
                                                (PermissionError("cache not writable"), False),
                                                (ValueError("unsupported dataset schema 3"), False)])
def test_minari_download_only_falls_back_when_offline(tmp_path, monkeypatch, failure, falls_back):
    """``download=True``: offline → the next source (here none: DatasetNotFound); any other failure
    → a DataError naming the dataset and the cause, never a silent switch to generated data."""
    import minari

    from tasks.base import DataError
    from tasks.d4rl.data import DatasetNotFound, find_dataset

    def load_dataset(dataset_id, download=False):
        raise failure

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(minari, "load_dataset", load_dataset)
    if falls_back:
        with pytest.raises(DatasetNotFound):
            find_dataset("hopper", "medium", download=True)
    else:
        with pytest.raises(DataError, match=rf"mujoco/hopper/medium-v0 could not be downloaded \({type(failure).__name__}"):
            find_dataset("hopper", "medium", download=True)


def test_unlistable_minari_root_is_an_error(tmp_path, monkeypatch):
    import minari

    from tasks.base import DataError
    from tasks.d4rl.data import find_dataset

    def broken():
        raise OSError("metadata.json: bad JSON")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(minari, "list_local_datasets", broken)
    with pytest.raises(DataError, match="could not be listed .OSError: metadata.json: bad JSON"):
        find_dataset("hopper", "medium")


def test_train_writes_transformers_dt_with_provenance(tmp_path, monkeypatch):
    import argparse

    from tasks.d4rl import generate, train

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = make_env("hopper")
    rng = np.random.default_rng(0)
    episodes = [
        generate.run_episode(env, rng.normal(0, 0.1, (3, 11)), np.zeros(11), np.ones(11), seed=i)[0] for i in range(4)
    ]
    generate.write_dataset("generated/hopper/medium-v0", "hopper", "v5", episodes, "GENERATED test data")
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    out = tmp_path / "dt"
    args = parser.parse_args(
        ["--task", "hopper-medium", "--out", str(out), "--steps", "3", "--batch", "4", "--warmup", "1"]
    )
    assert train.main(args) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    info = json.loads((out / "dt_info.json").read_text())
    assert info["generated"] is True and info["dataset_id"] == "generated/hopper/medium-v0"
    assert info["dataset_description"] == "GENERATED test data" and info["dataset_episodes"] == 4
    loaded = DTModels(str(out)).get("hopper-medium")
    r = cached_rollout(loaded.model, loaded.spec, env, 0, CacheFactory(make_policy("full")), max_steps=5)
    assert r.steps >= 1
    bad = parser.parse_args(["--task", "hopper-random", "--out", str(out)])
    assert train.main(bad) == 2


def test_shipped_checkpoints_are_small_and_labelled():
    folders = sorted(p for p in SHIPPED.iterdir() if (p / "config.json").exists())
    assert {p.name for p in folders} == set(TASKS)
    total = sum(f.stat().st_size for p in folders for f in p.iterdir())
    assert total < 5 * 2**20
    for p in folders:
        info = json.loads((p / "dt_info.json").read_text())
        assert info["generated"] is True and info["dataset_id"].startswith("generated/")
