"""InfiniteBench suite (``infinitebench``): the 12 tasks of OpenBMB/InfiniteBench.

Prompts (:mod:`tasks.infinitebench_prompts`) are the official open-model templates
(``yarn_mistral_templates`` of ``src/prompt.py``, which InfiniteBench also uses for Yi-200K,
ChatGLM3 and LWM) filled as ``src/eval_utils.py``'s ``create_prompt`` fills them: the question is the record's ``input``; ``longdialogue_qa_eng``'s
template has no question slot; choice tasks get the four ``options`` as ``A.`` .. ``D.``;
``code_run`` takes ``func_N(x)`` from the input; ``math_find``'s first line is "What is <the ...
number> in the following list?" taken from the input by ``r"The .+ of"``. Labels are the official
``get_answer``: ``[option, letter]`` for longbook_choice_eng and code_debug, else ``answer``.
Maximum new tokens are the official ``DATA_NAME_TO_MAX_NEW_TOKENS`` (capped at half the model
context, which only ever touches math_calc's 30,000 and, below 2,400 tokens of context,
longbook_sum_eng's 1,200; the official value is then kept in ``metadata["max_new_tokens_official"]``).
Scoring is the official ``compute_scores.py`` (:mod:`tasks.scoring.infinitebench`). Over-long
prompts are middle-truncated by the runner, as the official scripts do.

Data, per task, with ``source="auto"`` (the default), first found wins:

1. ``data_dir/<task>.jsonl`` — a local copy of the hub file (official fields ``id``, ``context``,
   ``input``, ``answer``, ``options``);
2. the hub dataset ``xinrongzhang2022/InfiniteBench`` (the file ``<task>.jsonl``, through the
   ``huggingface_hub`` cache so that labels keep their JSON types; ``datasets``' cache as a
   fallback) — only when the hub answers or the file is cached;
3. GENERATED data, for the synthetic tasks with a public recipe (passkey, number_string,
   kv_retrieval, math_find; see :mod:`tasks.infinitebench_synth`), sized to the model context
   (:class:`~tasks.base.ContextTooSmall` when the context cannot hold the smallest prompt);
4. otherwise :class:`~tasks.base.TaskUnavailable`.

``source`` = ``hub`` / ``data-dir`` / ``generated`` uses only that source. Every sample records
``metadata["source"]`` and ``metadata["generated"]``.

Chat template (``Sample.chat``): none, for every task, by default — as the official open-model
scripts do (``src/eval_yarn_mistral.py`` and ``src/eval_yi_200k.py`` tokenize the filled template
as plain text; every yarn-mistral template ends with an answer cue to be continued, "The pass key
is", "Answer:", "Summary:", ...). With a chat template an instruct model restarts the sentence,
and a tiny budget (passkey 6, math_find 3, code_run 5 new tokens) runs out before the answer
(measured for passkey, see :mod:`tasks.niah`). ``chat_template=on`` (``--suite-arg
chat_template=on``; NOT the official setting) puts the whole filled template in the model's chat
template as the user turn for the free-form tasks (:data:`CHAT_TASKS`: longbook_qa_eng, longbook_qa_chn, longbook_sum_eng), as
LongBench does for its QA and summary tasks; the run's ``--chat-template on|off`` overrides both.

Hub failures: only "offline / not cached" falls back to the next source; any other failure of
the hub download (authentication, a schema or ``datasets`` problem, the disk) is a
:class:`~tasks.base.DataError` naming its cause (:func:`tasks.data.hub_failure`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterator

from tasks import register_suite
from tasks import infinitebench_synth as synth
from tasks.base import ContextTooSmall, DataError, Sample, Suite, TaskUnavailable, question_after
from tasks.data import find_file, hub_failure, hub_reachable, load_hub, read_jsonl
from tasks.infinitebench_prompts import (  # noqa: F401  (re-exported: the record level of this suite)
    CHOICE_TASKS, TEMPLATES, answers_as_strings, check_record, create_prompt, get_answer,
)

HUB_REPO = "xinrongzhang2022/InfiniteBench"

TASKS = (
    "passkey", "number_string", "kv_retrieval", "longbook_sum_eng", "longbook_choice_eng", "longbook_qa_eng",
    "longbook_qa_chn", "longdialogue_qa_eng", "math_find", "math_calc", "code_run", "code_debug",
)

#: the NAMM paper's ids (Table 3 / Table 13); math_calc is not in the paper (InfiniteBench's name)
TASK_IDS = {
    "passkey": "Ret.PassKey", "number_string": "Ret.Number", "kv_retrieval": "Ret.KV",
    "longdialogue_qa_eng": "En.Dia", "longbook_sum_eng": "En.Sum", "longbook_choice_eng": "En.MC",
    "longbook_qa_eng": "En.QA", "longbook_qa_chn": "ZH.QA", "math_find": "Math.Find", "code_run": "Code.Run",
    "code_debug": "Code.Debug", "math_calc": "Math.Calc",
}

#: src/eval_utils.py DATA_NAME_TO_MAX_NEW_TOKENS
MAX_NEW_TOKENS = {
    "passkey": 6, "number_string": 12, "kv_retrieval": 50, "longbook_sum_eng": 1200, "longbook_choice_eng": 40,
    "longbook_qa_eng": 40, "longbook_qa_chn": 40, "longdialogue_qa_eng": 40, "math_find": 3, "math_calc": 30000,
    "code_run": 5, "code_debug": 5,
}

#: the free-form tasks that ``chat_template=on`` puts in the model's chat template (see the module
#: docstring); by default (the official setting) no task uses one
CHAT_TASKS = ("longbook_qa_eng", "longbook_qa_chn", "longbook_sum_eng")
CHAT_SETTINGS = ("off", "on")

GENERABLE = synth.GENERABLE
SOURCES = ("auto", "hub", "data-dir", "generated")
REQUIRED = ("context", "input", "answer")
MARGIN = 16  # tokens kept free next to length + max_new_tokens (chat template, special tokens)
MIN_LENGTH = 128
DEFAULT_SAMPLES = 20

_KV_KEY = re.compile(r'Key: "([^"]+)"')
_NEEDLE_CUE = {"passkey": "The pass key is", "number_string": "The sequence of digits is"}


def _line_of(path: Path, index: int) -> int:
    """The line number of the ``index``-th non-blank line (how :func:`read_jsonl` counts records)."""
    seen = -1
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == index:
                    return n
    return 0


def _hub_records(task: str) -> tuple[list[dict], str] | None:
    """The hub file ``<task>.jsonl`` (downloaded, or from the local cache when the hub is not reachable);
    ``None`` only when the hub is offline and neither cache holds it (any other failure: DataError)."""
    name = f"{task}.jsonl"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        hf_hub_download = None
    if hf_hub_download is not None:
        try:
            path = hf_hub_download(HUB_REPO, name, repo_type="dataset", local_files_only=not hub_reachable())
        except Exception as err:  # noqa: BLE001 - offline / not cached → try datasets' cache; else DataError
            hub_failure(err, f"hub file {HUB_REPO}/{name}")
            path = None
        if path:
            return read_jsonl(path, REQUIRED), str(path)
    rows = load_hub(HUB_REPO, REQUIRED, data_files=name, split="train")
    if rows is None:
        return None
    return rows, f"hub dataset {HUB_REPO} {name}"


def _as_tuple(value, cast) -> tuple | None:
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(cast(v) for v in values)


# --------------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------------


@register_suite("infinitebench")
class InfiniteBench(Suite):
    """InfiniteBench: official data (local copy or hub) or, for the synthetic tasks, GENERATED data.

    Options (``--suite-arg KEY=VALUE``; ``--data-dir`` sets ``data_dir``):

    * ``data_dir``: a folder with ``<task>.jsonl`` files as on the hub.
    * ``source``: ``auto`` (data_dir, then hub, then generated), ``hub``, ``data-dir`` or ``generated``.
    * ``lengths``: prompt lengths in tokens for generated samples (default: one length filling the
      model context, ``max_length - max_new_tokens - 16``); lengths that do not fit are skipped.
    * ``n_samples``: generated samples per length (default 20).
    * ``depths``: needle depths in [0, 1] for generated passkey / number_string / kv_retrieval,
      cycled over the samples (default: ``n_samples`` depths evenly spaced from 0 to 1, the
      official grid).
    * ``chat_template``: ``off`` (default, the official scripts: every prompt is plain text) or
      ``on`` (the model's chat template for longbook_qa_eng, longbook_qa_chn, longbook_sum_eng).
    """

    tasks = TASKS
    task_ids = TASK_IDS
    generated = False

    def __init__(self, data_dir=None, source="auto", lengths=None, n_samples=DEFAULT_SAMPLES, depths=None,
                 chat_template="off"):
        if source not in SOURCES:
            raise ValueError(f"infinitebench source must be one of {', '.join(SOURCES)}, got {source!r}")
        if data_dir is not None and data_dir != "" and not Path(data_dir).is_dir():
            raise ValueError(f"infinitebench data_dir {data_dir!r} is not a folder")
        if source == "data-dir" and not data_dir:
            raise ValueError("infinitebench source=data-dir needs --data-dir DIR (a folder with <task>.jsonl files)")
        self.data_dir = str(data_dir) if data_dir else None
        self.source = source
        self.lengths = _as_tuple(lengths, int)
        self.n_samples = int(n_samples)
        self.depths = _as_tuple(depths, float)
        if self.lengths is not None and (not self.lengths or min(self.lengths) < 1):
            raise ValueError("infinitebench lengths must be positive token counts")
        if self.n_samples < 1:
            raise ValueError("infinitebench n_samples must be at least 1")
        if self.depths is not None and (not self.depths or not all(0.0 <= d <= 1.0 for d in self.depths)):
            raise ValueError("infinitebench depths must be fractions in [0, 1]")
        if chat_template not in CHAT_SETTINGS:
            raise ValueError(f"infinitebench chat_template must be off (official: no chat template) or on "
                             f"(chat template for {', '.join(CHAT_TASKS)}), got {chat_template!r}")
        self.chat_template = chat_template
        self.generated = source == "generated"  # True only when every sample is generated
        self._hub_cache: dict[str, tuple[list[dict], str] | None] = {}

    # -- settings --------------------------------------------------------------------------------

    @staticmethod
    def max_new_tokens(task: str, max_length: int) -> int:
        """The official budget, capped at half the context so that a prompt still fits."""
        return max(1, min(MAX_NEW_TOKENS[task], max_length // 2))

    def grid_lengths(self, task: str, max_length: int) -> list[int]:
        """Prompt lengths (tokens) of the generated samples of ``task`` under ``max_length``."""
        mnt = self.max_new_tokens(task, max_length)
        full = max_length - mnt - MARGIN
        if self.lengths is None:
            return [max(MIN_LENGTH, full)]
        fits = [n for n in self.lengths if n <= full]
        if len(fits) < len(self.lengths):
            warnings.warn(f"infinitebench/{task}: lengths above {full} tokens do not fit max_length {max_length} "
                          f"with {mnt} new tokens and are skipped", stacklevel=2)
        return fits or [max(MIN_LENGTH, full)]

    def uses_chat(self, task: str) -> bool:
        """``Sample.chat`` of ``task``: False unless ``chat_template=on`` and ``task`` is free-form."""
        return self.chat_template == "on" and task in CHAT_TASKS

    def sample_depths(self) -> list[float]:
        """The needle depth of each of the ``n_samples`` generated samples of one length."""
        if self.depths is not None:
            return [self.depths[i % len(self.depths)] for i in range(self.n_samples)]
        n = self.n_samples
        return [0.5] if n == 1 else [round(i / (n - 1), 6) for i in range(n)]

    # -- data ------------------------------------------------------------------------------------

    def _local(self, task: str) -> tuple[list[dict], str] | None:
        path = find_file(self.data_dir, [f"{task}.jsonl"])
        if path is None:
            return None
        return read_jsonl(path, REQUIRED), str(path)

    def _hub(self, task: str) -> tuple[list[dict], str] | None:
        if task not in self._hub_cache:
            self._hub_cache[task] = _hub_records(task)
        return self._hub_cache[task]

    def _find_data(self, task: str) -> tuple[list[dict], str, str] | None:
        """``(records, where, source)`` from the data sources that ``self.source`` allows."""
        if self.source in ("auto", "data-dir"):
            found = self._local(task)
            if found:
                return found[0], found[1], "data-dir"
        if self.source in ("auto", "hub"):
            found = self._hub(task)
            if found:
                return found[0], found[1], "hub"
        return None

    def _unavailable(self, task: str) -> TaskUnavailable:
        hint = f"pass --data-dir DIR with {task}.jsonl (official format) or run with hub access"
        if self.source == "data-dir":
            return TaskUnavailable(f"infinitebench/{task}: no {task}.jsonl in {self.data_dir}; {hint}")
        if self.source == "hub":
            return TaskUnavailable(f"infinitebench/{task}: hub dataset {HUB_REPO} not reachable or cached; {hint}")
        if self.source == "generated":
            return TaskUnavailable(f"infinitebench/{task}: no generation recipe here (generated: "
                                   f"{', '.join(GENERABLE)}); {hint}")
        return TaskUnavailable(f"infinitebench/{task}: no data here; {hint}")

    # -- samples ---------------------------------------------------------------------------------

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        if task not in MAX_NEW_TOKENS:  # everything below is checked at the call, not at the first next()
            raise KeyError(f"unknown infinitebench task {task!r}; tasks: {', '.join(TASKS)}")
        mnt = self.max_new_tokens(task, max_length)
        found = None if self.source == "generated" else self._find_data(task)
        if found is not None:
            records, where, source = found
            built = self._data_samples(task, records, where, source, mnt)
            return iter(built)
        if self.source in ("auto", "generated") and task in GENERABLE:
            lengths = self.grid_lengths(task, max_length)
            # the smallest record must fit the smallest length: checked now, the rest is made lazily
            try:
                next(self._generated_samples(task, tokenizer, [min(lengths)], seed, mnt, count=1))
            except ValueError as err:  # the context is too small for this task's smallest prompt
                raise ContextTooSmall(str(err).splitlines()[0]) from err
            return self._generated_samples(task, tokenizer, lengths, seed, mnt)
        raise self._unavailable(task)

    def _data_samples(self, task: str, records: list[dict], where: str, source: str, mnt: int) -> list[Sample]:
        out = []
        seen: set[str] = set()
        for i, rec in enumerate(records):
            problem = check_record(task, rec)
            sid = str(rec.get("id", i))
            if problem is None and sid in seen:
                problem = f"duplicate id {sid!r}"
            if problem is not None:
                path = Path(where)
                loc = f"{where}:{_line_of(path, i)}" if path.is_file() else f"{where} row {i}"
                raise DataError(f"{loc}: {problem}")
            seen.add(sid)
            meta = {"source": source, "generated": False, "official_id": rec.get("id"),
                    "context_chars": len(rec["context"])}
            depth = self._data_depth(task, rec)
            if depth is not None:
                meta["depth"] = depth
            if mnt != MAX_NEW_TOKENS[task]:
                meta["max_new_tokens_official"] = MAX_NEW_TOKENS[task]
            prompt = create_prompt(task, rec)
            out.append(Sample(id=sid, task=task, prompt=prompt, question=question_after(prompt, rec["context"]),
                              answers=answers_as_strings(task, get_answer(task, rec)), max_new_tokens=mnt,
                              metadata=meta, chat=self.uses_chat(task)))
        return out

    @staticmethod
    def _data_depth(task: str, rec: dict) -> float | None:
        """Needle depth of an official record: character offset of the needle / context length."""
        context = rec["context"]
        if task in _NEEDLE_CUE:
            pos = context.find(_NEEDLE_CUE[task])
        elif task == "kv_retrieval":
            m = _KV_KEY.search(rec["input"])
            pos = context.find(f'"{m.group(1)}"') if m else -1
        else:
            return None
        return round(pos / len(context), 4) if pos >= 0 and context else None

    def _generated_samples(self, task, tokenizer, lengths, seed, mnt, count=None) -> Iterator[Sample]:
        def n_tokens(rec: dict) -> int:
            return len(tokenizer(create_prompt(task, rec))["input_ids"])

        depths = self.sample_depths()
        for length in lengths:
            for i in range(self.n_samples if count is None else count):
                depth = None if task == "math_find" else depths[i]
                yield self.make_sample(task, i, length, seed, depth, n_tokens, mnt)

    def make_sample(self, task: str, index: int, length: int, seed: int, depth: float | None, count, mnt: int
                    ) -> Sample:
        """The ``index``-th generated sample of ``task`` at ``length`` tokens (``count(record)`` = prompt tokens)."""
        rec = synth.generate(task, index, length, seed, depth, count)
        gen = rec.pop("_gen")
        meta = {"source": "generated", "generated": True, "recipe": synth.RECIPE, "seed": seed, "length": length,
                "prompt_tokens": gen.pop("prompt_tokens")}
        if depth is not None:
            meta["depth"] = depth
        meta.update({k: round(v, 4) if isinstance(v, float) else v for k, v in gen.items()})
        prompt = create_prompt(task, rec)
        return Sample(id=f"{task}-{length}-{index}", task=task, prompt=prompt,
                      question=question_after(prompt, rec["context"]), answers=answers_as_strings(task, get_answer(task, rec)), max_new_tokens=mnt, metadata=meta,
                      chat=self.uses_chat(task))

    def score(self, sample: Sample, prediction: str) -> float:
        from tasks.scoring import score

        return score(f"infinitebench/{sample.task}", prediction, sample.answers)
