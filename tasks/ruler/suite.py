"""The RULER suite (``--suite ruler``): RULER's 13 tasks generated offline at a grid of lengths.

See ``tasks/ruler/README.md`` for what is generated, what is RULER's own, and how to pass data.
Every sample: ``prompt`` is RULER's ``input`` (base model template), ``answer_prefix`` RULER's answer
prefix, ``question`` the query part after the context (kvpress's split, :mod:`tasks.ruler.templates`),
``max_new_tokens`` RULER's ``tokens_to_generate``, ``chat=True`` (the runner applies the model's chat
template, as kvpress and RULER's chat-model templates do; ``--chat-template off`` gives RULER's
``base`` template). Scores: :mod:`tasks.scoring.ruler` (``"ruler/<task>"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from tasks import register_suite
from tasks.base import ContextTooSmall, Sample, Suite, TaskUnavailable
from tasks.ruler import haystack as hs
from tasks.ruler import prepared, qa, templates
from tasks.ruler.generator import Generator, sample_key
from tasks.ruler.niah import NiahGenerator
from tasks.ruler.variable_tracking import VariableTrackingGenerator
from tasks.ruler.words import CommonWordsGenerator, FrequentWordsGenerator

LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
N_SAMPLES = 10  # per task per length (RULER's default is 500)
HAYSTACKS = ("auto", "essay", "substitute")


def _positive_ints(name: str, value, default) -> tuple[int, ...]:
    """``value`` (one number or a list) as positive integers; ``ValueError`` (one line) otherwise."""
    if value is None or value == "":
        return tuple(default)
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError(f"ruler {name} must be positive integers, got {v!r}; e.g. --suite-arg {name}=4096,8192")
        v = int(v)  # a string raises int()'s own error, which the CLI turns into an option message
        if v < 1:
            raise ValueError(f"ruler {name} must be positive integers, got {v}; e.g. --suite-arg {name}=4096,8192")
        out.append(v)
    if not out:
        raise ValueError(f"ruler {name} must list at least one integer; e.g. --suite-arg {name}=4096,8192")
    return tuple(out)


@register_suite("ruler")
class Ruler(Suite):
    """RULER (Hsieh et al. 2024), its 13 tasks made locally by RULER's public recipes, or read from
    RULER ``prepare.py`` files in ``--data-dir``.

    Options (``--suite-arg KEY=VALUE``; ``--data-dir`` sets ``data_dir``):

    * ``lengths``: target sequence lengths in tokens (default :data:`LENGTHS`); those above the run's
      ``max_length`` are dropped (none left: :class:`ContextTooSmall`);
    * ``n_samples``: samples per task per length (default :data:`N_SAMPLES`);
    * ``haystack``: essay haystack of ``niah_single_2/3``, ``niah_multikey_1``, ``niah_multivalue``,
      ``niah_multiquery``: ``auto`` (Paul Graham essays from ``--data-dir`` when there, else the
      labelled offline substitute), ``essay`` (the essays or :class:`TaskUnavailable`), ``substitute``;
    * ``seed``: overrides the run's ``--seed`` for the samples (default: the run's).

    ``generated`` is False: samples are generated unless ``--data-dir`` holds prepared files, and each
    sample's ``metadata["source"]`` says which.
    """

    tasks = templates.TASKS
    generated = False

    def __init__(self, data_dir=None, lengths=None, n_samples=N_SAMPLES, haystack="auto", seed=None):
        if data_dir and not Path(data_dir).is_dir():
            raise ValueError(f"ruler data_dir {data_dir!r} is not a folder")
        self.data_dir = str(data_dir) if data_dir else None
        self.lengths = tuple(sorted(set(_positive_ints("lengths", lengths, LENGTHS))))
        if isinstance(n_samples, bool) or (isinstance(n_samples, float) and not n_samples.is_integer()):
            raise ValueError(f"ruler n_samples takes one positive integer, got {n_samples!r}; "
                             "e.g. --suite-arg n_samples=10")
        self.n_samples = int(n_samples)  # a string or a list raises int()'s error: the CLI names the option
        if self.n_samples < 1:
            raise ValueError(f"ruler n_samples must be a positive integer, got {self.n_samples}; "
                             "e.g. --suite-arg n_samples=10")
        if haystack not in HAYSTACKS:
            raise ValueError(f"ruler haystack must be one of {', '.join(HAYSTACKS)}, got {haystack!r}")
        self.haystack = haystack
        if isinstance(seed, bool) or (isinstance(seed, float) and not seed.is_integer()):
            raise ValueError(f"ruler seed must be an integer, got {seed!r}; e.g. --suite-arg seed=42")
        self.seed = None if seed is None or seed == "" else int(seed)

    # -- data ------------------------------------------------------------------------------------

    def _resources(self, task: str) -> dict:
        """What the task's generator reads: essay words (essay haystacks) or QA data; raises
        :class:`TaskUnavailable` when it is not here."""
        cfg = templates.CONFIGS[task]
        if cfg["task"] == "qa":
            qas, docs, source = qa.load_qa(task, cfg["dataset"], self.data_dir)
            return {"qas": qas, "docs": docs, "source": source}
        if cfg.get("type_haystack") == "essay":
            words, labels = hs.essay_words(self.data_dir, self.haystack)
            if not words:
                raise TaskUnavailable(f"ruler/{task}: --suite-arg haystack=essay needs the Paul Graham essays: put "
                                      "RULER's PaulGrahamEssays.json (or a PaulGrahamEssays/ folder of .txt essays) in "
                                      "--data-dir DIR, or use haystack=auto")
            return {"essay": words, "labels": labels}
        return {}

    def generator(self, task: str, length: int, tokenizer, seed: int, resources: dict) -> Generator:
        """The generator of ``task`` at target ``length``."""
        cfg = templates.CONFIGS[task]
        kind = cfg["task"]
        if kind == "niah":
            return NiahGenerator(cfg, length, resources.get("essay", ()), resources.get("labels"))
        if kind == "variable_tracking":
            return VariableTrackingGenerator(cfg, length, tokenizer, f"{seed}:{task}:{length}")
        if kind == "common_words_extraction":
            return CommonWordsGenerator(cfg, length, seed, self.data_dir)
        if kind == "freq_words_extraction":
            return FrequentWordsGenerator(cfg, length)
        return qa.QAGenerator(cfg, resources["qas"], resources["docs"], resources["source"])

    # -- samples ---------------------------------------------------------------------------------

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        """Samples of ``task``: per length of ``lengths`` that fits ``max_length`` (ascending),
        ``n_samples`` read from a prepared file or generated. Raises (at the call) :class:`KeyError`
        for an unknown task, :class:`TaskUnavailable` when its data is missing and
        :class:`ContextTooSmall` when no length fits."""
        if task not in templates.CONFIGS:
            raise KeyError(f"unknown ruler task {task!r}; tasks: {', '.join(self.tasks)}")
        seed = self.seed if self.seed is not None else int(seed)
        flat = prepared.flat_file(self.data_dir, task)
        if flat is not None:
            return prepared.read_prepared(flat, task, None, self.n_samples)
        lengths = [n for n in self.lengths if n <= max_length]
        if not lengths:
            raise ContextTooSmall(f"ruler/{task}: no length of {','.join(map(str, self.lengths))} fits max_length "
                                  f"{max_length}; pass e.g. --suite-arg lengths={max_length}")
        plan = [(n, prepared.length_file(self.data_dir, n, task)) for n in lengths]
        resources = self._resources(task) if any(f is None for _, f in plan) else {}
        first = next((n for n, f in plan if f is None), None)
        if first is not None:
            self._check_room(task, first, tokenizer, seed, resources)
        return self._iterate(task, tokenizer, plan, seed, resources)

    def _check_room(self, task: str, length: int, tokenizer, seed: int, resources: dict) -> None:
        """:class:`ContextTooSmall` when the smallest sample of ``task`` does not fit ``length``."""
        gen = self.generator(task, length, tokenizer, seed, resources)
        _, _, _, n_tok = self.measure(task, tokenizer, gen.draft(gen.min_size(0), sample_key(seed, task, length, 0), 0))
        if n_tok + templates.max_new_tokens(task) > length:
            raise ContextTooSmall(f"ruler/{task}: its smallest prompt ({n_tok} tokens + "
                                  f"{templates.max_new_tokens(task)} to generate) does not fit length {length}; "
                                  "use larger --suite-arg lengths")

    def _iterate(self, task, tokenizer, plan, seed, resources) -> Iterator[Sample]:
        for length, path in plan:
            if path is not None:
                yield from prepared.read_prepared(path, task, length, self.n_samples)
            else:
                yield from self.generate(task, tokenizer, length, seed, resources)

    @staticmethod
    def measure(task: str, tokenizer, draft) -> tuple[str, str, str, int]:
        """``(prompt, question, answer_prefix, tokens)`` of a draft: RULER's split, then the tokens the
        runner will feed (:func:`tasks.ruler.haystack.prompt_tokens`)."""
        kind = templates.kind(task)
        text, prefix = templates.split_answer_prefix(kind, draft.text)
        prompt, question, prefix = templates.finish(kind, text, prefix)
        return prompt, question, prefix, hs.prompt_tokens(tokenizer, prompt, prefix)

    def generate(self, task: str, tokenizer, length: int, seed: int, resources: dict) -> Iterator[Sample]:
        """``n_samples`` generated samples of ``task`` at ``length`` (RULER's sizing: the haystack size
        is searched once, on sample 0; a sample that does not fit at that size is re-fitted below it)."""
        gen = self.generator(task, length, tokenizer, seed, resources)
        ttg = templates.max_new_tokens(task)
        key0 = sample_key(seed, task, length, 0)
        fitted = hs.fit_size(lambda n: self.measure(task, tokenizer, gen.draft(n, key0, 0))[3] + ttg,
                             length, gen.min_size(0), gen.incremental)
        if fitted is None:
            raise ContextTooSmall(f"ruler/{task}: no sample fits length {length}; use larger --suite-arg lengths")
        for i in range(self.n_samples):
            key, floor = sample_key(seed, task, length, i), gen.min_size(i)
            seen: dict[int, tuple] = {}

            def count(n: int) -> int:
                draft = gen.draft(n, key, i)
                seen[n] = (draft, *self.measure(task, tokenizer, draft))
                return seen[n][4] + ttg

            n = max(fitted, floor)
            if count(n) > length:  # re-fit this sample below the shared size
                n = hs.fit_size(count, length, floor, gen.incremental, above=(n, seen[n][4] + ttg))
                if n is None:
                    raise ContextTooSmall(f"ruler/{task}: sample {i} does not fit length {length} even with the "
                                          "smallest haystack; use larger --suite-arg lengths")
            draft, prompt, question, prefix, n_tok = seen[n]
            yield Sample(
                id=f"{task}-{length}-{i}",
                task=task,
                prompt=prompt,
                answers=list(draft.answers),
                max_new_tokens=ttg,
                metadata={"source": "generated", "generated": True, "length": length,
                          "config": dict(templates.CONFIGS[task]), **gen.labels, "haystack_size": n,
                          "haystack_unit": gen.unit, "prompt_tokens": n_tok, "seed": seed, **draft.info},
                chat=True,
                answer_prefix=prefix,
                question=question,
            )

    # -- scores ----------------------------------------------------------------------------------

    def score(self, sample: Sample, prediction: str) -> float:
        """RULER's per-example score (``string_match_all`` / ``string_match_part``) in [0, 1]."""
        from tasks import scoring

        return scoring.score(f"ruler/{sample.task}", prediction, sample.answers)

    def aggregate(self, records: list[dict]) -> dict:
        """RULER's summary: ``{"tasks": {task: {length: score}}, "average": {length: score}}``, each
        score ``round(100 * mean, 2)`` as RULER's ``evaluate.py`` reports it (the average is the mean
        over the tasks present at that length)."""
        from tasks.scoring.ruler import summary

        return summary(records)
