"""LongBench (v1) suite (``longbench``): the 21 tasks with the official prompts and answer lengths.

Prompts, max new tokens and the no-chat-template list are LongBench's (``config/dataset2prompt.json``,
``config/dataset2maxlen.json`` and ``pred.py`` of THUDM/LongBench; copied as the NAMM code
SakanaAI/evo-memory used them). A prompt is the task template formatted with the record's fields
(``template.format(**record)``, as ``pred.py`` does). Scores come from the official metrics through
:func:`tasks.scoring.score` (``"longbench/<task>"``).

Note on one template: LongBench's ``narrativeqa`` prompt reads "asconcisely" (sic) in the release the
NAMM code copied; THUDM later corrected it to "as concisely". The release text is kept here.

Data, in the order tried with ``source="auto"``:

1. ``data-dir``: ``<data_dir>/<task>.jsonl`` (or ``<data_dir>/data/<task>.jsonl``, the layout of the
   official ``data.zip``), one record per line with the official fields ``input, context, answers,
   length, dataset, language, all_classes, _id``. A malformed line is a :class:`DataError` naming
   ``file:line``.
2. ``hub``: the parquet mirror ``Xnhyacinth/LongBench`` (config = task, split ``test``; the copy
   lm-eval and kvpress use) through ``datasets``; tried only when the hub answers or the dataset is
   in the local cache (``source="hub"`` always tries).
3. ``generated`` (``passage_retrieval_en`` and ``passage_count`` only; every such sample says
   ``metadata["source"] == "generated"``): made here, offline, by LongBench's construction recipe
   (LongBench ``task.md``) from offline paragraphs (:mod:`tasks.offline_text`), NOT the official data:

   * ``passage_retrieval_en``: 30 distinct paragraphs, shown as ``Paragraph 1: ...`` to
     ``Paragraph 30: ...``; the "abstract" asked about belongs to one of them; answer
     ``"Paragraph N"``. DEVIATION: LongBench's abstract is a GPT-3.5-Turbo summary of the
     paragraph; with no summariser offline the abstract here is one sentence (at least 8 words)
     copied verbatim from paragraph N, chosen so that it occurs exactly once in the context. The
     task is therefore easier than the official one (an exact-match lookup).
   * ``passage_count``: K paragraph slots showing u distinct paragraphs (2 <= u <= K-1, so some
     paragraph repeats); each distinct paragraph is shown once and the remaining K-u slots repeat
     paragraphs drawn at random (all but one distinct paragraph can repeat: one is always single,
     which lets the size be tuned finely); the slots are shuffled and shown as
     ``Paragraph 1: ...``; answer ``str(u)``. K = clip(round(length / 250), 4, 64) and u is
     uniform in [max(2, K // 4), K - 1] (LongBench does not publish its counts; this gives
     paragraphs of about 250 tokens, the size of a Wikipedia paragraph).

   Paragraphs are separated by blank lines. The official template is kept word for word, so the
   prompt still says the paragraphs are "from Wikipedia" (they are Python documentation prose).
   Each generated prompt (plain text, no special tokens, model tokenizer) has between
   ``length - tol`` and ``length`` tokens, ``tol = max(16, 2% of length)``, where ``length`` is each
   of ``lengths`` (default: ``max_length - max_new_tokens - 64``, the model context minus the answer
   and 64 tokens for a chat template, so the runner never crops a generated prompt; lengths that do
   not fit are dropped). Paragraph sizes scale with ``length``; lengths must be at least
   :data:`MIN_LENGTH` (else :class:`~tasks.base.ContextTooSmall`, a :class:`TaskUnavailable`) and at
   most 80% of the offline text (about 66K SmolLM2 tokens, else :class:`TaskUnavailable`).
   ``n_samples`` samples per length, deterministic for a seed (samples are made lazily, one per
   ``next()``).

Any other task with no data here raises :class:`TaskUnavailable` when ``samples`` is called.
``lengths``/``n_samples`` only concern generated samples. Not reproduced: ``pred.py`` also stops
``samsum`` generation at a newline (the official scorer keeps only the first line anyway).
"""

from __future__ import annotations

import random
from typing import Iterator

from tasks import register_suite
from tasks.base import ContextTooSmall, Sample, TaskUnavailable
from tasks.official_data import OfficialDataSuite

# --------------------------------------------------------------------------------------------
# Official constants (LongBench config/dataset2prompt.json, dataset2maxlen.json, pred.py)
# --------------------------------------------------------------------------------------------

PROMPTS = {
    "narrativeqa": "You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",  # noqa: E501
    "qasper": "You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",  # noqa: E501
    "multifieldqa_en": "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "multifieldqa_zh": "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：",  # noqa: E501
    "hotpotqa": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "2wikimqa": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "musique": "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",  # noqa: E501
    "dureader": "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：",  # noqa: E501
    "gov_report": "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",  # noqa: E501
    "qmsum": "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",  # noqa: E501
    "multi_news": "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",  # noqa: E501
    "vcsum": "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：",  # noqa: E501
    "trec": "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",  # noqa: E501
    "triviaqa": "Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}",  # noqa: E501
    "samsum": "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",  # noqa: E501
    "lsht": "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}",  # noqa: E501
    "passage_count": "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",  # noqa: E501
    "passage_retrieval_en": "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",  # noqa: E501
    "passage_retrieval_zh": "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",  # noqa: E501
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",  # noqa: E501
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",  # noqa: E501
}

MAX_NEW_TOKENS = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64,
    "hotpotqa": 32, "2wikimqa": 32, "musique": 32, "dureader": 128,
    "gov_report": 512, "qmsum": 512, "multi_news": 512, "vcsum": 512,
    "trec": 64, "triviaqa": 32, "samsum": 128, "lsht": 64,
    "passage_count": 32, "passage_retrieval_en": 32, "passage_retrieval_zh": 32,
    "lcc": 64, "repobench-p": 64,
}

#: pred.py: "chat models are better off without build prompts on these tasks"
NO_CHAT = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})

#: Task ids of the NAMM paper (Table 2), in that order.
TASK_IDS = {
    "narrativeqa": "1-1", "qasper": "1-2", "multifieldqa_en": "1-3", "multifieldqa_zh": "1-4",
    "hotpotqa": "2-1", "2wikimqa": "2-2", "musique": "2-3", "dureader": "2-4",
    "gov_report": "3-1", "qmsum": "3-2", "multi_news": "3-3", "vcsum": "3-4",
    "trec": "4-1", "triviaqa": "4-2", "samsum": "4-3", "lsht": "4-4",
    "passage_count": "5-1", "passage_retrieval_en": "5-2", "passage_retrieval_zh": "5-3",
    "lcc": "6-1", "repobench-p": "6-2",
}

#: The official record fields (every line of a data-dir file must have them).
FIELDS = ("input", "context", "answers", "length", "dataset", "language", "all_classes", "_id")
#: Fields a hub row must have (the rest are read when present).
HUB_FIELDS = ("input", "context", "answers")
HUB_REPO = "Xnhyacinth/LongBench"

GENERATED_TASKS = ("passage_retrieval_en", "passage_count")

# generated tasks
RETRIEVAL_PARAGRAPHS = 30
COUNT_PARAGRAPH_TOKENS = 250
COUNT_MIN_PARAGRAPHS, COUNT_MAX_PARAGRAPHS = 4, 64
QUERY_MIN_WORDS = 8
MARGIN = 64  # tokens left free for a chat template (default length = max_length - max_new_tokens - MARGIN)
MIN_LENGTH = {"passage_retrieval_en": 1536, "passage_count": 512}
CAPACITY_SHARE = 0.8  # at most this share of the offline text's tokens in one sample
N_SAMPLES = 200  # LongBench has 200 samples per synthetic task

_CODE_TASKS = frozenset({"lcc", "repobench-p"})


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _as_lengths(v) -> tuple[int, ...] | None:
    if v is None or v == "":
        return None
    vals = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else (v,)))
    if not vals or min(vals) < 1:
        raise ValueError("longbench lengths must be positive token counts")
    return vals


@register_suite("longbench")
class LongBench(OfficialDataSuite):
    """LongBench v1: official data from ``data_dir`` or the hub; ``passage_retrieval_en`` and
    ``passage_count`` also generated offline (see the module docstring).

    Options: ``data_dir`` (folder with ``<task>.jsonl``), ``source`` (``auto`` | ``hub`` |
    ``data-dir`` | ``generated``), ``lengths`` (token lengths of generated samples; default the model
    context minus max new tokens and a 64-token margin), ``n_samples`` (generated samples per length).
    """

    tasks = tuple(TASK_IDS)
    task_ids = dict(TASK_IDS)
    generated = False

    benchmark = "longbench"
    prompts = PROMPTS
    max_new_tokens = MAX_NEW_TOKENS
    no_chat = NO_CHAT
    hub_repo = HUB_REPO
    fields = FIELDS
    hub_fields = HUB_FIELDS
    generated_tasks = GENERATED_TASKS
    format_hint = "official LongBench format"

    def __init__(self, data_dir=None, source="auto", lengths=None, n_samples=N_SAMPLES):
        super().__init__(data_dir=data_dir, source=source)
        self.lengths = _as_lengths(lengths)
        self.n_samples = int(n_samples)
        if self.n_samples < 1:
            raise ValueError("longbench n_samples must be a positive integer")
        self._counts: dict[int, tuple[object, object]] = {}

    def length_unit(self, task: str, record: dict) -> str:
        # LongBench counts words for English and code, characters for Chinese
        return "characters" if record.get("language") == "zh" and task not in _CODE_TASKS else "words"

    # -- generated tasks -------------------------------------------------------------------------

    def token_counts(self, tokenizer):
        """Per-sentence token counts of the offline text under ``tokenizer`` (cached per tokenizer)."""
        from tasks import offline_text

        hit = self._counts.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        counts = offline_text.TokenCounts(tokenizer)
        self._counts[id(tokenizer)] = (tokenizer, counts)
        return counts

    def generated_lengths(self, task: str, max_length: int) -> list[int]:
        """Target lengths of ``task``'s generated samples under ``max_length`` (the model context)."""
        limit = max_length - MAX_NEW_TOKENS[task] - MARGIN
        if self.lengths is None:
            return [limit]
        fits = [n for n in self.lengths if n <= limit]
        return fits or [limit]

    def generated_samples(self, task: str, tokenizer, max_length: int, seed: int) -> Iterator[Sample]:
        lengths = self.generated_lengths(task, max_length)
        if min(lengths) < MIN_LENGTH[task]:
            need = MIN_LENGTH[task] + MAX_NEW_TOKENS[task] + MARGIN
            raise ContextTooSmall(f"longbench/{task}: generated samples need lengths of at least {MIN_LENGTH[task]} "
                                  f"tokens (a context of {need}); got {min(lengths)} with max_length {max_length}")
        counts = self.token_counts(tokenizer)
        if max(lengths) > CAPACITY_SHARE * counts.total:
            raise TaskUnavailable(f"longbench/{task}: the offline text ({counts.total} tokens) is too short for "
                                  f"{max(lengths)}-token samples; use lengths up to "
                                  f"{int(CAPACITY_SHARE * counts.total)} or pass --data-dir DIR with {task}.jsonl")
        return (self.make_sample(task, tokenizer, n, i, seed) for n in lengths for i in range(self.n_samples))

    @staticmethod
    def count_structure(length: int, rng: random.Random) -> tuple[int, list[int]]:
        """``(unique, order)`` of a passage_count sample: ``order[k]`` is the distinct paragraph shown
        in slot k (values 0..unique-1, each at least once)."""
        k = min(COUNT_MAX_PARAGRAPHS, max(COUNT_MIN_PARAGRAPHS, round(length / COUNT_PARAGRAPH_TOKENS)))
        unique = rng.randint(max(2, k // 4), k - 1)
        mult = [1] * unique
        for _ in range(k - unique):  # the repeats; the last distinct paragraph stays single
            mult[rng.randrange(unique - 1)] += 1
        # the most repeated paragraphs are drawn first, single ones last: they fine-tune the size
        mult.sort(reverse=True)
        order = [j for j in range(unique) for _ in range(mult[j])]
        rng.shuffle(order)
        return unique, order

    @staticmethod
    def _retrieval_runs(rng: random.Random, counts, budget: float, n: int):
        """``(runs, query, t)``: ``n`` distinct paragraphs and a query sentence (at least
        :data:`QUERY_MIN_WORDS` words) copied from paragraph ``t``, found in no other paragraph; the
        paragraphs and the query together aim at ``budget`` tokens."""
        from tasks import offline_text

        sents = offline_text.sentences()
        draw = offline_text.ParagraphDraw(rng, counts)
        runs: list[tuple[int, int]] = []
        used = 0
        for k in range(n - 1):
            runs.append(draw.take(max(1.0, (budget - used) / (n - k))))
            used += counts.span(*runs[-1])
        texts = [offline_text.paragraph_text(r) for r in runs]
        targets = list(range(n - 1))
        rng.shuffle(targets)
        for t in targets:
            cands = [i for i in range(*runs[t]) if len(sents[i].split()) >= QUERY_MIN_WORDS]
            rng.shuffle(cands)
            for i in cands:
                if sum(x.count(sents[i]) for x in texts) == 1:
                    break
            else:
                continue
            # the last paragraph makes up the rest of the budget (it may not contain the query)
            last = draw.take_best(max(1.0, budget - used - counts.counts[i]))
            if sents[i] in offline_text.paragraph_text(last):  # pragma: no cover - a sentence inside another
                continue
            runs.append(last)
            return runs, sents[i], t
        raise RuntimeError("no paragraph has a usable query sentence")  # pragma: no cover

    def make_sample(self, task: str, tokenizer, length: int, index: int, seed: int = 0) -> Sample:
        """Generated sample ``index`` of ``task`` at ``length`` tokens (see the module docstring)."""
        from tasks import offline_text

        if task not in GENERATED_TASKS:
            raise KeyError(f"longbench/{task} is not generated; generated: {', '.join(GENERATED_TASKS)}")
        counts = self.token_counts(tokenizer)
        template = PROMPTS[task]
        key = f"{seed}:{task}:{length}:{index}"
        if task == "passage_retrieval_en":
            unique, order = RETRIEVAL_PARAGRAPHS, list(range(RETRIEVAL_PARAGRAPHS))
            random.Random(key + ":structure").shuffle(order)  # slot k shows drawn paragraph order[k]
        else:
            unique, order = self.count_structure(length, random.Random(key + ":structure"))
        weights = [order.count(j) for j in range(unique)]
        tol = max(16.0, 0.02 * length)
        aim = length - tol / 2

        def build(budget: float):
            rng = random.Random(key)
            info: dict = {}
            query = ""
            if task == "passage_retrieval_en":
                runs, query, info["target"] = self._retrieval_runs(rng, counts, budget, unique)
                info["target"] = order.index(info["target"]) + 1
            else:
                runs = offline_text.draw_paragraphs(rng, counts, budget, weights)
            texts = [offline_text.paragraph_text(r) for r in runs]
            context = "\n\n".join(f"Paragraph {k + 1}: {texts[j]}" for k, j in enumerate(order))
            if query and context.count(query) != 1:  # pragma: no cover - checked in _retrieval_runs
                raise RuntimeError(f"longbench/{task}: the query sentence is not unique in the context")
            prompt = template.format(context=context, input=query)
            info["question"] = template.split("{context}", 1)[1].format(input=query)  # what follows the context
            return prompt, _n_tokens(tokenizer, prompt), info, [len(range(*r)) for r in runs]

        # the budget covers the paragraphs (and the query sentence); the rest is the template and labels
        budget = aim - _n_tokens(tokenizer, template.format(context="", input="")) - 6 * len(order)
        best = None
        for _ in range(20):
            prompt, n_tok, info, n_sents = build(budget)
            rank = (not length - tol <= n_tok <= length, abs(n_tok - aim))
            if best is None or rank < best[0]:
                best = (rank, prompt, n_tok, info, n_sents)
            if not rank[0]:
                break
            budget -= n_tok - aim
        rank, prompt, n_tok, info, n_sents = best
        if rank[0]:
            raise RuntimeError(f"longbench/{task}: could not size sample {index} to {length} tokens "
                               f"(got {n_tok}; tolerance {tol:g})")

        metadata = {
            "source": "generated",
            "generated": True,
            "length": length,
            "length_unit": "tokens",
            "prompt_tokens": n_tok,
            "recipe": f"LongBench {task} construction (task.md) on offline text",
            **offline_text.text_info(),
            "paragraphs": len(order),
            "mean_paragraph_sentences": round(sum(n_sents) / len(n_sents), 2),
        }
        if task == "passage_retrieval_en":
            answers = [f"Paragraph {info['target']}"]
            metadata["target_paragraph"] = info["target"]
            metadata["abstract"] = "one verbatim sentence of the paragraph (LongBench: a GPT-3.5 summary)"
        else:
            answers = [str(unique)]
            metadata["unique_paragraphs"] = unique
        return Sample(
            id=f"{task}-{length}-{index}",
            task=task,
            prompt=prompt,
            answers=answers,
            max_new_tokens=MAX_NEW_TOKENS[task],
            metadata=metadata,
            all_classes=None,
            chat=task not in NO_CHAT,
            question=info["question"],
        )
