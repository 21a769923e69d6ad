"""Fitness of NAMM parameter vectors: task score normalised by the full cache on the SAME prompts.

Paper §3.3: per task, the population member's score divided by the base model's full-cache score
on the same sampled prompts; the fitness is the mean over tasks. Full-cache reference scores are
computed once per prompt and kept in ``references.jsonl``.

Two rules for a task whose full-cache mean is 0 on the sampled prompts (:data:`FITNESS_RULES`):
``offset`` (default) counts it ``1 + mean(member)``; ``paper`` is the public code's
``mean(member) / (mean(full) + 1e-7)`` everywhere. Beyond the paper, an optional memory term:
``fitness = mean over tasks of the normalised score - memory_weight * kept fraction``, the kept
fraction being the mean over the member's prompts of (cache logical size at the end) / (tokens the
cache saw: prompt tokens fed + generated tokens); with a ``memory_target`` T the term is a hinge,
``memory_weight * max(0, kept fraction - T)``: caches at or below T cost nothing. Also beyond the
paper, a dense term for tasks scored right-or-wrong: ``+ progress_weight *`` the task's mean
*answer progress* (how far greedy decoding followed the reference continuation, in [0, 1]: see
:func:`harness.generation.greedy_generate`), so that members that nearly retrieve an answer rank above
members that lose it entirely, and all-equal scores (a tie for CMA-ES) still rank. The reference
continuation (:meth:`References.target`) is the full cache's own prediction where it scored above 0,
else the first answer after the full prediction's leading whitespace.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness import records


FITNESS_RULES = ("offset", "paper")
PAPER_EPSILON = 1e-7  # evo-memory: score / (reference + 1e-7)


def normalised(member_scores: list[float], reference_scores: list[float], rule: str = "offset") -> float:
    """The member's mean score over a task's prompts relative to the full cache's on the same prompts.

    ``rule="offset"``: ``mean(member) / mean(full)``; when the full cache scores 0 on every one of
    these prompts that ratio is undefined and the task counts ``1 + mean(member)`` (the full cache as
    1, any success above it). ``rule="paper"``: ``mean(member) / (mean(full) + 1e-7)`` always, as the
    paper's public code (a success where the full cache failed then counts ~1e7).
    """
    ref = sum(reference_scores) / len(reference_scores)
    mean = sum(member_scores) / len(member_scores)
    if rule == "paper":
        return mean / (ref + PAPER_EPSILON)
    if rule != "offset":
        raise ValueError(f"unknown fitness rule {rule!r}; choose one of: {', '.join(FITNESS_RULES)}")
    return mean / ref if ref > 0 else 1.0 + mean


def kept_fraction(result: dict, prompt_tokens: int) -> float:
    """The share of the tokens a cache saw that it still holds at the end of one evaluation:
    ``result["cache"]["logical_mean"] / (prompt_tokens + result["new_tokens"])``."""
    return result["cache"]["logical_mean"] / (prompt_tokens + result["new_tokens"])


class References:
    """Full-cache scores per ``(task, sample id)``, computed on first use and appended to a file."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write = path, write
        rows = records.read_records(path, repair=write)
        self.scores = {(r["task"], r["id"]): r["score"] for r in rows}
        self.predictions = {(r["task"], r["id"]): r.get("prediction", "") for r in rows}

    def get(self, evaluator, sample, cropped) -> float:
        key = (sample.task, sample.id)
        if key not in self.scores:
            from policies import make_policy

            result = evaluator.evaluate(sample, make_policy("full"), cropped=cropped)[0]
            self.scores[key] = result["score"]
            self.predictions[key] = result["prediction"]
            if self.write:
                records.append_record(self.path, {"task": sample.task, "id": sample.id, "score": result["score"],
                                                  "prediction": result["prediction"]})
        return self.scores[key]

    def target(self, evaluator, sample, cropped) -> str:
        """The reference continuation for answer progress: the full cache's prediction where it scored
        above 0, else ``sample.answers[0]`` after the full prediction's leading whitespace (the model's
        answers start like ``" 50008"``)."""
        score, prediction = self.get(evaluator, sample, cropped), self.predictions[(sample.task, sample.id)]
        if score > 0 or not sample.answers:
            return prediction
        return prediction[: len(prediction) - len(prediction.lstrip())] + str(sample.answers[0])


def make_member_policy(config, params: torch.Tensor, norm_mean: torch.Tensor, norm_var: torch.Tensor):
    """The NAMM policy scoring batch element i with row i of ``params`` (``[members, n_params]``)."""
    from policies import make_policy

    return make_policy(config.policy, params=params.float(), norm_mean=norm_mean, norm_var=norm_var,
                       gamma=config.gamma, n_up=config.n_up, threshold=config.threshold)


def evaluate_members(evaluator, config, params, norm_mean, norm_var, prompts, targets=None) -> list[dict]:
    """Score every row of ``params`` (``[m, n_params]``) on ``prompts`` (``[(sample, cropped)]``).

    Returns one dict per member: ``{"scores": {task: [score per prompt]}, "cache": mean logical size,
    "kept": mean kept fraction}`` (means over the prompts; see :func:`kept_fraction`), with
    ``targets`` (token ids per prompt, aligned with ``prompts``) also ``"progress": {task: [answer
    progress per prompt]}``. Members are evaluated ``config.member_batch`` at a time as a batch of
    copies of each prompt.
    """
    m = params.shape[0]
    out = [{"scores": {}, "cache": 0.0, "kept": 0.0} for _ in range(m)]
    step = config.member_batch or m
    for k, (sample, cropped) in enumerate(prompts):
        target = targets[k] if targets is not None else None
        for start in range(0, m, step):
            chunk = params[start : start + step]
            policy = make_member_policy(config, chunk, norm_mean, norm_var)
            results = evaluator.evaluate(sample, policy, batch=chunk.shape[0], cropped=cropped, target=target)
            for i, result in enumerate(results):
                member = out[start + i]
                member["scores"].setdefault(sample.task, []).append(result["score"])
                if target is not None:
                    member.setdefault("progress", {}).setdefault(sample.task, []).append(result["progress"])
                member["cache"] += result["cache"]["logical_mean"] / len(prompts)
                member["kept"] += kept_fraction(result, len(cropped)) / len(prompts)
    return out


def memory_term(kept: float, memory_weight: float = 0.0, memory_target: float | None = None) -> float:
    """What the cache costs in the fitness: ``memory_weight * kept``, or with ``memory_target`` T
    ``memory_weight * max(0, kept - T)`` (beyond the paper; 0 by default, as the paper)."""
    excess = kept if memory_target is None else max(0.0, kept - memory_target)
    return memory_weight * excess


def fitness_of(member: dict, references: dict[str, list[float]], rule: str = "offset",
               memory_weight: float = 0.0, memory_target: float | None = None,
               progress_weight: float = 0.0) -> tuple[float, dict[str, float]]:
    """``(fitness, per-task normalised scores)``: fitness = mean over tasks of :func:`normalised`
    (plus ``progress_weight`` times the task's mean answer progress, when ``member`` has it) minus
    :func:`memory_term` of ``member["kept"]``."""
    per_task = {task: normalised(scores, references[task], rule) for task, scores in member["scores"].items()}
    progress = member.get("progress") or {}
    dense = {task: progress_weight * sum(progress[task]) / len(progress[task]) if progress_weight and task in progress
             else 0.0 for task in per_task}
    score = sum(per_task[t] + dense[t] for t in per_task) / len(per_task)
    return score - memory_term(member["kept"], memory_weight, memory_target), per_task


def write_log(path: Path, log: list[dict]) -> None:
    """Rewrite ``fit.jsonl`` atomically from the fit state's log (used on resume)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in log))
    tmp.replace(path)
