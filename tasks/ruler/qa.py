"""RULER's question answering (``qa_1`` on SQuAD v2 dev, ``qa_2`` on HotpotQA dev distractor), after
RULER ``scripts/data/synthetic/qa.py``.

Data (the official files RULER's ``download_qa_dataset.sh`` fetches), in this order:

1. ``--data-dir``: ``squad.json`` / ``dev-v2.0.json`` (SQuAD v2 dev) and ``hotpotqa.json`` /
   ``hotpot_dev_distractor_v1.json`` (HotpotQA dev distractor), also under ``json/`` (so that
   ``--data-dir`` may be RULER's ``scripts/data/synthetic`` folder);
2. the hub through ``datasets``: ``rajpurkar/squad_v2`` (split ``validation``) and
   ``hotpotqa/hotpot_qa`` (config ``distractor``, split ``validation``), rebuilt into the official
   structure; tried only when the hub answers or the dataset is cached.

Neither → :class:`~tasks.base.TaskUnavailable` (one line saying how to provide the files).

Documents and questions are RULER's: SQuAD documents are the distinct paragraphs (sorted), the
answerable questions in file order, each with its paragraph and the other paragraphs of its article
as the first distractors; HotpotQA documents are ``"{title}\\n{''.join(sentences)}"`` and a question
keeps all ten of its paragraphs. Sample ``i`` asks question ``i`` (RULER's order); ``n`` documents
are shown: the question's own, then its article's, then random others, shuffled, as
``Document {i}:\\n{text}`` separated by blank lines. Deviation: RULER shuffles with a fixed-seed
generator (the gold document lands at the same place for a given ``n``); here the sample's stream
shuffles.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tasks.base import DataError, TaskUnavailable
from tasks.data import find_file, hub_available, load_hub
from tasks.ruler import templates
from tasks.ruler.generator import Draft, Generator, rng_for

DOCUMENT = "Document {i}:\n{document}"

SOURCES = {
    "squad": {"files": ["squad.json", "dev-v2.0.json", "json/squad.json", "json/dev-v2.0.json"],
              "hub": "rajpurkar/squad_v2", "hub_kwargs": {"split": "validation"},
              "fields": ("title", "context", "question", "answers"), "name": "SQuAD v2 dev (dev-v2.0.json)"},
    "hotpotqa": {"files": ["hotpotqa.json", "hotpot_dev_distractor_v1.json", "json/hotpotqa.json",
                           "json/hotpot_dev_distractor_v1.json"],
                 "hub": "hotpotqa/hotpot_qa", "hub_kwargs": {"name": "distractor", "split": "validation"},
                 "fields": ("question", "answer", "context"), "name": "HotpotQA dev distractor "
                 "(hotpot_dev_distractor_v1.json)"},
}


# --------------------------------------------------------------------------------------------
# Readers of the official structures (RULER read_squad / read_hotpotqa)
# --------------------------------------------------------------------------------------------


def read_squad(data: dict) -> tuple[list[dict], list[str]]:
    """``(questions, documents)`` of SQuAD's official JSON (``{"data": [{"paragraphs": [...]}]}``)."""
    docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
    index = {c: i for i, c in enumerate(docs)}
    qas = []
    for article in data["data"]:
        more = [index[p["context"]] for p in article["paragraphs"]]
        for p in article["paragraphs"]:
            own = index[p["context"]]
            for qa in p["qas"]:
                if not qa.get("is_impossible", not qa["answers"]):
                    qas.append({"query": qa["question"], "outputs": [a["text"] for a in qa["answers"]],
                                "context": [own], "more_context": [i for i in more if i != own],
                                "id": qa.get("id")})
    return qas, docs


def read_hotpotqa(data: list) -> tuple[list[dict], list[str]]:
    """``(questions, documents)`` of HotpotQA's official JSON (a list of ``{"question", "answer",
    "context": [[title, [sentences]], ...]}``)."""
    docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
    index = {c: i for i, c in enumerate(docs)}
    qas = [{"query": d["question"], "outputs": [d["answer"]],
            "context": [index[f"{t}\n{''.join(p)}"] for t, p in d["context"]], "id": d.get("_id")} for d in data]
    return qas, docs


def squad_from_hub(rows: list[dict]) -> dict:
    """The official SQuAD structure from the hub's one-row-per-question table (articles by title,
    paragraphs by context, in row order; a question without answers is impossible)."""
    articles: dict[str, dict[str, list]] = {}
    for r in rows:
        texts = list(r["answers"]["text"])
        qa = {"question": r["question"], "id": r.get("id"), "answers": [{"text": t} for t in texts],
              "is_impossible": not texts}
        articles.setdefault(r["title"], {}).setdefault(r["context"], []).append(qa)
    return {"data": [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
                     for t, ps in articles.items()]}


def hotpotqa_from_hub(rows: list[dict]) -> list:
    """The official HotpotQA structure from the hub's rows (``context = {"title": [...], "sentences": [...]}``)."""
    return [{"_id": r.get("id"), "question": r["question"], "answer": r["answer"],
             "context": [[t, list(s)] for t, s in zip(r["context"]["title"], r["context"]["sentences"])]} for r in rows]


@functools.lru_cache(maxsize=4)
def _read_file(dataset: str, path: Path) -> tuple[list[dict], list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return read_squad(data) if dataset == "squad" else read_hotpotqa(data)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: not the official {SOURCES[dataset]['name']} JSON "
                        f"({type(err).__name__}: {err})") from None


@functools.lru_cache(maxsize=2)
def _read_hub(dataset: str) -> tuple[list[dict], list[str]] | None:
    spec = SOURCES[dataset]
    rows = load_hub(spec["hub"], required=spec["fields"], **spec["hub_kwargs"])
    if rows is None:
        return None
    try:
        return read_squad(squad_from_hub(rows)) if dataset == "squad" else read_hotpotqa(hotpotqa_from_hub(rows))
    except (KeyError, TypeError) as err:
        raise DataError(f"hub dataset {spec['hub']}: unexpected schema ({type(err).__name__}: {err})") from None


def load_qa(task: str, dataset: str, data_dir) -> tuple[list[dict], list[str], str]:
    """``(questions, documents, source label)`` of ``dataset`` (``squad`` | ``hotpotqa``) from
    ``data_dir`` or the hub; :class:`TaskUnavailable` when neither has it, :class:`DataError` when a
    file is malformed or the hub fails for another reason than "offline / not cached"."""
    spec = SOURCES[dataset]
    path = find_file(data_dir, spec["files"])
    if path is not None:
        qas, docs = _read_file(dataset, path)
        source = f"data-dir:{path.name}"
    else:
        got = _read_hub(dataset) if hub_available(spec["hub"]) else None
        if got is None:
            raise TaskUnavailable(f"ruler/{task}: needs {spec['name']}; offline and not cached: put "
                                  f"{spec['files'][0]} (or {spec['files'][1]}) in --data-dir DIR, or run with hub "
                                  f"access ({spec['hub']})")
        qas, docs = got
        source = f"hub:{spec['hub']}"
    if not qas:
        raise DataError(f"ruler/{task}: {source} has no answerable question")
    return qas, docs, source


class QAGenerator(Generator):
    """``qa_1`` / ``qa_2`` at one target length: ``n`` documents, question ``index`` of the dataset."""

    unit = "documents"
    incremental = 10

    def __init__(self, config: dict, qas: list[dict], docs: list[str], source: str):
        self.dataset = config["dataset"]
        self.qas, self.docs = qas, docs
        self.template = templates.full_template("qa")
        self.n_min = len(qas[0]["context"])
        self.labels = {"haystack": f"documents:{self.dataset}", "qa_source": source}

    def min_size(self, index: int) -> int:
        """Documents sample ``index`` needs at least (its own)."""
        return len(self.qas[index % len(self.qas)]["context"])

    def draft(self, n: int, key: str, index: int) -> Draft:
        rng = rng_for(key)
        q = self.qas[index % len(self.qas)]
        own, more = list(q["context"]), list(q.get("more_context", []))
        n = max(n, len(own))
        if n < len(self.docs):
            if n - len(own) > len(more):
                taken = set(own + more)
                others = [i for i in range(len(self.docs)) if i not in taken]
                chosen = own + more + rng.sample(others, n - len(own) - len(more))
            else:
                chosen = own + rng.sample(more, n - len(own))
            shown = [self.docs[i] for i in chosen]
        else:  # RULER: repeat the documents as often as needed
            shown = (self.docs * -(-n // len(self.docs)))[:n]
        rng.shuffle(shown)
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(shown))
        return Draft(self.template.format(context=context, query=q["query"]), list(q["outputs"]),
                     {"question_index": index % len(self.qas), "question_id": q.get("id")})
