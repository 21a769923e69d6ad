"""A fit's checkpoints, each with what it was fitted on and how it validated: the best-validation mean of
a stage (``stage<k>/best.safetensors``) and every validated mean (``checkpoints/gen<N>.safetensors``,
N the global generation), so any validated generation can be held out later."""

from __future__ import annotations

import torch


def write_best(fit, state: dict, stage: int, tasks, validation: dict) -> None:
    """Write ``fit``'s (a :class:`harness.fit.loop.Fit`) best CMA-ES mean ``state["best"]`` of stage
    ``stage`` (0-based) as ``<out>/stage<stage+1>/best.safetensors`` (+ its JSON sidecar)."""
    best = state["best"]
    write_checkpoint(fit, state, fit.out / f"stage{stage + 1}" / "best.safetensors", best["params"],
                     best["generation"], stage, tasks, validation)


def write_validated(fit, state: dict, params, generation: int, stage: int, tasks, validation: dict) -> None:
    """Write the CMA-ES mean ``params`` (``[n_params]``) validated at ``generation`` of stage ``stage`` as
    ``<out>/checkpoints/gen<G>.safetensors``, G the global generation (``fit.jsonl``'s
    ``global_generation``: stages continue its count)."""
    global_generation = len(state["log"]) + 1
    write_checkpoint(fit, state, fit.out / "checkpoints" / f"gen{global_generation}.safetensors", params,
                     generation, stage, tasks, validation)


def write_checkpoint(fit, state: dict, path, params, generation: int, stage: int, tasks,
                     validation: dict) -> None:
    """Write CMA-ES mean ``params`` of generation ``generation`` of stage ``stage`` (0-based) at ``path``
    (+ its JSON sidecar), with the fit's normalisation statistics and ``validation``'s scores."""
    from policies.namm.checkpoint import save_checkpoint

    config = fit.config
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(
        path,
        architecture=config.policy.removeprefix("namm_"),
        params=torch.as_tensor(params, dtype=torch.float32),
        norm_mean=state["norm_mean"],
        norm_var=state["norm_var"],
        hyperparameters={"gamma": config.gamma, "n_up": config.n_up, "n_fft": 32, "hop": 16,
                         "age_dim": 8, "threshold": config.threshold},
        fitted_on=fitted_on(fit, stage, tasks),
        fitness={"validation": validation["tasks"], "validation_mean": validation["mean"],
                 "validation_kept_fraction": validation["kept_fraction"],
                 "generation": generation, "generations_so_far": len(state["log"]) + 1,
                 "popsize": config.popsize, "prompts_per_task": config.prompts_per_task,
                 "cma": config.cma, "fitness_rule": config.fitness_rule,
                 "memory_weight": config.memory_weight, "memory_target": config.memory_target,
                 "progress_weight": config.progress_weight},
    )


def fitted_on(fit, stage: int, tasks) -> dict:
    """What the checkpoint was fitted on; with ``--init``, the earlier fit's tasks come first."""
    config = fit.config
    fitted = {"model": fit.source.name, "suite": config.suite, "tasks": list(tasks), "stage": stage + 1,
              "generated_data": fit.generated_data or fit.suite.generated,
              "statistics_from": f"{config.suite}/{config.stages[0][0][0]}"}
    if config.init is not None:
        prior = fit.init.fitted_on
        earlier = list(prior.get("tasks", [])) if prior.get("suite") == config.suite else []
        fitted.update(tasks=earlier + [t for t in tasks if t not in earlier],
                      stage=int(prior.get("stage", 0)) + stage + 1, init=str(config.init),
                      statistics_from=prior.get("statistics_from", "unknown"),
                      generated_data=fitted["generated_data"] or bool(prior.get("generated_data")))
    return fitted
