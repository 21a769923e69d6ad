"""D4RL with a Decision Transformer (paper §4.2, Table 7): suite ``d4rl`` in :mod:`tasks.d4rl.suite`.

Modules: ``envs`` (tasks, gymnasium MuJoCo envs, D4RL normalisation), ``data`` (minari datasets),
``generate`` (GENERATED offline stand-in datasets, ARS policies), ``rollout`` (cached / uncached DT
rollouts), ``model`` (DT checkpoints), ``train`` (``fit-dt``), ``bench`` (steps per second).
Nothing heavy is imported here; gymnasium/mujoco/minari are needed only when used.
"""
