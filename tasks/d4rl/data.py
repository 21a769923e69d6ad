"""Offline datasets: minari's ``mujoco/<env>/<quality>-v0`` when present, else our generated ones.

Lookup order for a task (``MINARI_DATASETS_PATH`` is honoured by minari itself):

1. ``mujoco/<env>/<quality>-v0`` in the local minari root (the Farama re-collection of D4RL's
   grid on gymnasium v5 envs; ``minari download mujoco/hopper/medium-v0`` where there is network);
2. with ``download=True``, minari's remote; only "offline" (:func:`tasks.data.is_offline_error`)
   falls through to the next source, any other failure is a :class:`DataError` naming its cause;
3. ``generated/<env>/<quality>-v0``: made here by :mod:`tasks.d4rl.generate` (NOT D4RL data).

:class:`DatasetNotFound` (a :class:`TaskUnavailable`) says how to provide one. A local minari root
that cannot be listed is a :class:`DataError` too: it never turns silently into "use the generated
data".
"""

from __future__ import annotations

import numpy as np

from tasks.base import DataError, TaskUnavailable
from tasks.d4rl.envs import ENVS, QUALITIES
from tasks.data import is_offline_error

OFFICIAL = "mujoco"
GENERATED = "generated"


class DatasetNotFound(TaskUnavailable):
    pass


def candidate_ids(env: str, quality: str) -> list[tuple[str, str]]:
    """``[(dataset id, source)]`` in lookup order; source is ``minari`` or ``generated``."""
    if env not in ENVS or quality not in QUALITIES:
        raise ValueError(
            f"unknown D4RL dataset {env}/{quality}; envs: {', '.join(ENVS)}; qualities: {', '.join(QUALITIES)}"
        )
    return [(f"{OFFICIAL}/{env}/{quality}-v0", "minari"), (f"{GENERATED}/{env}/{quality}-v0", "generated")]


def _minari():
    try:
        import minari
    except ImportError as err:
        raise DatasetNotFound(f"D4RL datasets need minari: pip install minari ({err})") from err
    return minari


def _cause(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def local_ids() -> set[str]:
    """Dataset ids in the local minari root; a root that cannot be listed is a :class:`DataError`."""
    minari = _minari()
    try:
        return set(minari.list_local_datasets())
    except Exception as err:  # noqa: BLE001  (any cause: say it, never fall back silently)
        from minari.storage.datasets_root_dir import get_dataset_path

        raise DataError(f"the minari datasets under {get_dataset_path()} (MINARI_DATASETS_PATH) could not be "
                        f"listed ({_cause(err)}); fix or move the malformed dataset folder") from err


def find_dataset(env: str, quality: str, download: bool = False, source: str = "auto"):
    """``(minari dataset, dataset id, source)``; ``source`` in auto, minari, generated."""
    minari = _minari()
    from minari.storage.datasets_root_dir import get_dataset_path

    candidates = [c for c in candidate_ids(env, quality) if source in ("auto", c[1])]
    present = local_ids()
    for dataset_id, kind in candidates:
        if dataset_id in present:
            return minari.load_dataset(dataset_id), dataset_id, kind
        if download and kind == "minari":
            try:
                return minari.load_dataset(dataset_id, download=True), dataset_id, kind
            except Exception as err:  # noqa: BLE001  (only "offline" falls through to the next source)
                if not is_offline_error(err):
                    raise DataError(f"minari dataset {dataset_id} could not be downloaded ({_cause(err)}); "
                                    "fix that, or copy the dataset folder into MINARI_DATASETS_PATH") from err
    root = get_dataset_path()
    raise DatasetNotFound(
        f"no dataset for {env}-{quality} under {root} (MINARI_DATASETS_PATH): looked for "
        f"{' and '.join(c[0] for c in candidates)}; provide one with `minari download {OFFICIAL}/{env}/{quality}-v0` "
        f"(network), by copying a minari dataset folder there, or generate a local stand-in with "
        f"`python -m tasks.d4rl.generate --envs {env}` (labelled generated, not D4RL)"
    )


def trajectories(dataset) -> list[dict]:
    """Episodes as numpy arrays: observations ``[T, obs]`` (the final observation dropped), actions
    ``[T, act]``, rewards ``[T]``, terminations ``[T]``."""
    out = []
    for ep in dataset.iterate_episodes():
        obs = np.asarray(ep.observations, dtype=np.float32)
        acts = np.asarray(ep.actions, dtype=np.float32)
        if obs.ndim != 2 or acts.ndim != 2 or len(obs) != len(acts) + 1:
            raise DataError(
                f"{dataset.spec.dataset_id}: episode {ep.id} has observations {obs.shape} / actions {acts.shape}"
            )
        out.append(
            {
                "observations": obs[:-1],
                "actions": acts,
                "rewards": np.asarray(ep.rewards, dtype=np.float32),
                "terminations": np.asarray(ep.terminations, dtype=bool),
            }
        )
    if not out:
        raise DataError(f"{dataset.spec.dataset_id}: no episodes")
    return out


def state_stats(trajs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the states (the DT's input normalisation)."""
    states = np.concatenate([t["observations"] for t in trajs])
    return states.mean(0), states.std(0) + 1e-6
