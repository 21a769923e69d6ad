"""Environments, task names and D4RL score normalisation (no heavy imports at module load).

Tasks are ``<env>-<quality>`` for env in hopper, walker2d, halfcheetah and quality in medium,
medium-replay, expert (the paper's Table 7 grid). Rollouts use gymnasium's MuJoCo envs ``v5``
(default) or ``v4``; the paper used ``v3`` (mujoco-py), which gymnasium >= 1.0 no longer ships.
"""

from __future__ import annotations

from tasks.base import TaskUnavailable

ENVS = {"hopper": "Hopper", "walker2d": "Walker2d", "halfcheetah": "HalfCheetah"}
QUALITIES = ("medium", "medium-replay", "expert")
VERSIONS = ("v5", "v4")
TASKS = tuple(f"{env}-{quality}" for env in ENVS for quality in QUALITIES)

#: D4RL reference returns (random, expert) used by ``get_normalized_score`` (D4RL infos.py).
REF_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
}

MAX_EPISODE_STEPS = 1000


class MujocoMissing(TaskUnavailable):
    """gymnasium's MuJoCo envs cannot be made here (``pip install "gymnasium[mujoco]"``)."""


def split_task(task: str) -> tuple[str, str]:
    """``"hopper-medium-replay"`` → ``("hopper", "medium-replay")``; ``ValueError`` naming the choices."""
    env, _, quality = task.partition("-")
    if env not in ENVS:
        raise ValueError(f"unknown D4RL env {env!r} in task {task!r}; choose one of {', '.join(ENVS)}")
    if quality not in QUALITIES:
        raise ValueError(
            f"unknown D4RL dataset quality {quality!r} in task {task!r}; choose one of {', '.join(QUALITIES)}"
        )
    return env, quality


def env_id(env: str, version: str = "v5") -> str:
    if env not in ENVS:
        raise ValueError(f"unknown D4RL env {env!r}; choose one of {', '.join(ENVS)}")
    if version not in VERSIONS:
        raise ValueError(
            f"unknown MuJoCo env version {version!r}; choose one of {', '.join(VERSIONS)} (v3 needs mujoco-py)"
        )
    return f"{ENVS[env]}-{version}"


def normalized_score(env: str, episode_return: float) -> float:
    """D4RL normalised score: 100 × (return − random) / (expert − random)."""
    low, high = REF_RETURNS[env]
    return 100.0 * (episode_return - low) / (high - low)


def make_env(env: str, version: str = "v5"):
    """A gymnasium MuJoCo env (1,000-step time limit); :class:`MujocoMissing` when it cannot be made."""
    name = env_id(env, version)
    try:
        import gymnasium as gym
    except ImportError as err:
        raise MujocoMissing(f"{name} needs gymnasium with MuJoCo: pip install 'gymnasium[mujoco]' ({err})") from err
    try:
        import mujoco  # noqa: F401
    except ImportError as err:
        raise MujocoMissing(f"{name} needs the mujoco package: pip install 'gymnasium[mujoco]' ({err})") from err
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return gym.make(name, max_episode_steps=MAX_EPISODE_STEPS)
        except gym.error.DependencyNotInstalled as err:
            raise MujocoMissing(
                f"{name} cannot be made: {str(err).splitlines()[0]}; pip install 'gymnasium[mujoco]'"
            ) from err
