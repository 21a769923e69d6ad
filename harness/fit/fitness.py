"""Fitness of NAMM parameter vectors: task score normalised by the full cache on the SAME prompts.

Paper §3.3: per task, the population member's score divided by the base model's full-cache score
on the same sampled prompts; the fitness is the mean over tasks. Full-cache reference scores are
computed once per prompt and kept in ``references.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness import records


def normalised(member_scores: list[float], reference_scores: list[float]) -> float:
    """``mean(member) / mean(full)`` over the same prompts.

    When the full cache scores 0 on every one of these prompts the ratio is undefined; the task
    then counts ``1 + mean(member)`` (the full cache as 1, any success above it).
    """
    ref = sum(reference_scores) / len(reference_scores)
    mean = sum(member_scores) / len(member_scores)
    return mean / ref if ref > 0 else 1.0 + mean


class References:
    """Full-cache scores per ``(task, sample id)``, computed on first use and appended to a file."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write = path, write
        self.scores = {(r["task"], r["id"]): r["score"] for r in records.read_records(path, repair=write)}

    def get(self, evaluator, sample, cropped) -> float:
        key = (sample.task, sample.id)
        if key not in self.scores:
            from policies import make_policy

            result = evaluator.evaluate(sample, make_policy("full"), cropped=cropped)[0]
            self.scores[key] = result["score"]
            if self.write:
                records.append_record(self.path, {"task": sample.task, "id": sample.id, "score": result["score"],
                                                  "prediction": result["prediction"]})
        return self.scores[key]


def make_member_policy(config, params: torch.Tensor, norm_mean: torch.Tensor, norm_var: torch.Tensor):
    """The NAMM policy scoring batch element i with row i of ``params`` (``[members, n_params]``)."""
    from policies import make_policy

    return make_policy(config.policy, params=params.float(), norm_mean=norm_mean, norm_var=norm_var,
                       gamma=config.gamma, n_up=config.n_up, threshold=config.threshold)


def evaluate_members(evaluator, config, params, norm_mean, norm_var, prompts) -> list[dict]:
    """Score every row of ``params`` (``[m, n_params]``) on ``prompts`` (``[(sample, cropped)]``).

    Returns one dict per member: ``{"scores": {task: [score per prompt]}, "cache": mean logical size}``.
    Members are evaluated ``config.member_batch`` at a time as a batch of copies of each prompt.
    """
    m = params.shape[0]
    out = [{"scores": {}, "cache": 0.0} for _ in range(m)]
    step = config.member_batch or m
    for sample, cropped in prompts:
        for start in range(0, m, step):
            chunk = params[start : start + step]
            policy = make_member_policy(config, chunk, norm_mean, norm_var)
            for i, result in enumerate(evaluator.evaluate(sample, policy, batch=chunk.shape[0], cropped=cropped)):
                member = out[start + i]
                member["scores"].setdefault(sample.task, []).append(result["score"])
                member["cache"] += result["cache"]["logical_mean"] / len(prompts)
    return out


def fitness_of(member: dict, references: dict[str, list[float]]) -> tuple[float, dict[str, float]]:
    """Mean over tasks of the normalised score, and the per-task values."""
    per_task = {task: normalised(scores, references[task]) for task, scores in member["scores"].items()}
    return sum(per_task.values()) / len(per_task), per_task


def write_log(path: Path, log: list[dict]) -> None:
    """Rewrite ``fit.jsonl`` atomically from the fit state's log (used on resume)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in log))
    tmp.replace(path)
