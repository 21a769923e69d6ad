"""The paper's table layouts: suite names and order, task-id order, category headers, row names,
and how each table's overall normalised score is computed.

Overall normalisation ("All tasks", in brackets), as the paper's tables do it:

- ``mean-of-ratios``: the mean over tasks of the per-task normalised scores (LongBench, Tables 2,
  5, 12, 16, 17; also the fitness of the fit, paper §3.3)
- ``ratio-of-means``: the row's average score divided by the full-cache row's average score
  (InfiniteBench, ChouBun, D4RL, NIAH: Tables 3, 4, 7, 13-15, 18 — "calculated using the average
  performance of the base model with full cache")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MEAN_OF_RATIOS = "mean-of-ratios"
RATIO_OF_MEANS = "ratio-of-means"
CONVENTIONS = (MEAN_OF_RATIOS, RATIO_OF_MEANS)

#: Suites in the order of the paper's tables; other suites follow alphabetically.
SUITE_ORDER = ("longbench", "infinitebench", "choubun", "longvideobench", "mlvu", "d4rl", "niah")

LONGBENCH_CATEGORIES = {"1": "Single-Doc QA", "2": "Multi-Doc QA", "3": "Summarization",
                        "4": "Few-shot Learning", "5": "Synthetic", "6": "Code"}


_D4RL_ENVS = ("Hopper", "Walker2d", "HalfCheetah")
_D4RL_QUALITIES = ("medium", "medium-replay", "expert")


@dataclass(frozen=True)
class SuiteLayout:
    title: str
    convention: str = MEAN_OF_RATIOS  # used with --paper
    task_norm: bool = True  # per-task normalised score in brackets (--paper; always on otherwise)
    order: tuple[str, ...] = ()  # paper task ids in column order
    categories: dict[str, str] = field(default_factory=dict)  # task id -> category header
    id_categories: bool = False  # LongBench ids "g-k": category from g, order numeric


LAYOUTS = {
    "longbench": SuiteLayout("LongBench", MEAN_OF_RATIOS, True, id_categories=True),
    "infinitebench": SuiteLayout(
        "InfiniteBench", RATIO_OF_MEANS, False,
        order=("Ret.PassKey", "Ret.Number", "Ret.KV", "En.Dia", "En.Sum", "En.MC", "En.QA", "ZH.QA", "Math.Find",
               "Math.Calc", "Code.Run", "Code.Debug"),
        categories={"Ret.PassKey": "Retrieval", "Ret.Number": "Retrieval", "Ret.KV": "Retrieval",
                    "En.Dia": "Dialogue", "En.Sum": "Novel", "En.MC": "Novel", "En.QA": "Novel", "ZH.QA": "Novel",
                    "Math.Find": "Math", "Math.Calc": "Math", "Code.Run": "Code", "Code.Debug": "Code"}),
    "choubun": SuiteLayout(
        "ChouBun", RATIO_OF_MEANS, True, order=("JA.WikiQA", "JA.EdinetQA", "JA.CorpSecQA", "JA.CorpSecSum"),
        categories={"JA.WikiQA": "Extractive QA", "JA.EdinetQA": "Extractive QA", "JA.CorpSecQA": "Extractive QA",
                    "JA.CorpSecSum": "Summarization"}),
    "d4rl": SuiteLayout(
        "D4RL", RATIO_OF_MEANS, True, order=tuple(f"{env}-{q}" for env in _D4RL_ENVS for q in _D4RL_QUALITIES),
        categories={f"{env}-{q}": env for env in _D4RL_ENVS for q in _D4RL_QUALITIES}),
    # paper Table 6 (video): multiple-choice accuracy; MLVU's official number is metrics.json's official_score
    "longvideobench": SuiteLayout("LongVideoBench", RATIO_OF_MEANS, True, order=("LongVideoBench",)),
    "mlvu": SuiteLayout("MLVU", RATIO_OF_MEANS, True, order=("MLVU",)),
    "niah": SuiteLayout("Needle in a haystack", RATIO_OF_MEANS, True,
                        order=("NIAH.PassKey", "NIAH.Needle"),
                        categories={"NIAH.PassKey": "Retrieval", "NIAH.Needle": "Retrieval"}),
}

POLICY_NAMES = {"full": "Full cache", "h2o": "H2O", "l2": "L2", "streaming": "StreamingLLM"}
PAPER_FULL_NAME = "Base model"
POLICY_ORDER = ("full", "h2o", "l2", "streaming", "namm_mlp", "namm_bam")


def layout(suite: str) -> SuiteLayout:
    return LAYOUTS.get(suite, SuiteLayout(suite))


def suite_sort_key(suite: str) -> tuple:
    return (SUITE_ORDER.index(suite), "") if suite in SUITE_ORDER else (len(SUITE_ORDER), suite)


_LB_ID = re.compile(r"^(\d+)-(\d+)$")


def order_task_ids(suite: str, task_ids: list[str]) -> list[str]:
    """Paper order of ``task_ids`` (unknown ids keep their given order, after the known ones)."""
    lay = layout(suite)
    if lay.id_categories and all(_LB_ID.match(t) for t in task_ids):
        return sorted(task_ids, key=lambda t: tuple(int(x) for x in _LB_ID.match(t).groups()))
    if lay.order:
        known = [t for t in lay.order if t in task_ids]
        return known + [t for t in task_ids if t not in known]
    return list(task_ids)


def category(suite: str, task_id: str) -> str | None:
    lay = layout(suite)
    if lay.id_categories:
        m = _LB_ID.match(task_id)
        return LONGBENCH_CATEGORIES.get(m.group(1)) if m else None
    return lay.categories.get(task_id)
