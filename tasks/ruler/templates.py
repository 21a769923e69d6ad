"""RULER's task templates, answer prefixes, generation budgets and the 13 task configurations.

Facts copied from NVIDIA/RULER: ``scripts/data/synthetic/constants.py`` (:data:`KINDS`: the
template, answer prefix and ``tokens_to_generate`` of each task kind) and ``scripts/synthetic.yaml``
(:data:`CONFIGS`: which kind, haystack and sizes each of the 13 tasks uses). RULER's ``prepare.py``
appends the answer prefix to the template (``template + answer_prefix``) before formatting; the
generators here format that same full text and then split it as RULER and kvpress do:

* :func:`split_answer_prefix`: RULER cuts the answer prefix off the formatted text at the last
  occurrence of the prefix's first 10 characters (``input_text.rfind(answer_prefix[:10])``);
* :func:`split_question`: NVIDIA/kvpress (``evaluation/benchmarks/ruler/create_huggingface_dataset.py``,
  the ``simonjegou/ruler`` hub dataset) splits RULER's ``input`` into ``context`` and ``question`` at
  the last match of a per-kind question pattern (:data:`QUESTION_PATTERNS`);
* :func:`finish`: kvpress's answer prefix starts at its first word, so the space RULER puts in front
  of it ends the question instead (``prompt + answer_prefix`` is RULER's base-template text exactly).
"""

from __future__ import annotations

import re

#: RULER constants.py, per task kind
KINDS = {
    "niah": {
        "tokens_to_generate": 128,
        "template": "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?",  # noqa: E501
        "answer_prefix": " The special magic {type_needle_v} for {query} mentioned in the provided text are",
    },
    "variable_tracking": {
        "tokens_to_generate": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",  # noqa: E501
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are: ",  # noqa: E501
    },
    "common_words_extraction": {
        "tokens_to_generate": 120,
        "template": "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",  # noqa: E501
        "answer_prefix": " Answer: The top 10 words that appear most often in the list are:",
    },
    "freq_words_extraction": {
        "tokens_to_generate": 50,
        "template": "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?",  # noqa: E501
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
    },
    "qa": {
        "tokens_to_generate": 32,
        "template": "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",  # noqa: E501
        "answer_prefix": " Answer:",
    },
}

#: RULER synthetic.yaml: task -> {"task": kind, **args}
CONFIGS = {
    "niah_single_1": {"task": "niah", "type_haystack": "noise", "type_needle_k": "words", "type_needle_v": "numbers",
                      "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1},
    "niah_single_2": {"task": "niah", "type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers",
                      "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1},
    "niah_single_3": {"task": "niah", "type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "uuids",
                      "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1},
    "niah_multikey_1": {"task": "niah", "type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers",
                        "num_needle_k": 4, "num_needle_v": 1, "num_needle_q": 1},
    "niah_multikey_2": {"task": "niah", "type_haystack": "needle", "type_needle_k": "words",
                        "type_needle_v": "numbers", "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1},
    "niah_multikey_3": {"task": "niah", "type_haystack": "needle", "type_needle_k": "uuids", "type_needle_v": "uuids",
                        "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 1},
    "niah_multivalue": {"task": "niah", "type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers",
                        "num_needle_k": 1, "num_needle_v": 4, "num_needle_q": 1},
    "niah_multiquery": {"task": "niah", "type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers",
                        "num_needle_k": 1, "num_needle_v": 1, "num_needle_q": 4},
    "vt": {"task": "variable_tracking", "type_haystack": "noise", "num_chains": 1, "num_hops": 4},
    "cwe": {"task": "common_words_extraction", "freq_cw": 30, "freq_ucw": 3, "num_cw": 10},
    "fwe": {"task": "freq_words_extraction", "alpha": 2.0},
    "qa_1": {"task": "qa", "dataset": "squad"},
    "qa_2": {"task": "qa", "dataset": "hotpotqa"},
}

TASKS = tuple(CONFIGS)
#: the tasks whose answers are all in the prompt (``string_match_all``); qa_* use ``string_match_part``
SYNTHETIC = tuple(t for t in TASKS if CONFIGS[t]["task"] != "qa")

#: kvpress create_huggingface_dataset.py, per kind: where the question starts (last match)
QUESTION_PATTERNS = {
    "niah": re.compile(r"What (?:is|are all) the special magic"),
    "variable_tracking": re.compile(r"Question: Find all variables that are assigned the value"),
    "common_words_extraction": re.compile(r"Question: What are the 10 most common words in the above list\?"),
    "freq_words_extraction": re.compile(r"Question: Do not provide any explanation\."),
    "qa": re.compile(r"Answer the question based on the given documents\."),
}


def kind(task: str) -> str:
    """RULER's task kind of ``task`` (``niah``, ``variable_tracking``, ... ``qa``)."""
    return CONFIGS[task]["task"]


def max_new_tokens(task: str) -> int:
    """RULER's ``tokens_to_generate`` for ``task``."""
    return KINDS[kind(task)]["tokens_to_generate"]


def full_template(task_kind: str) -> str:
    """``template + answer_prefix`` of a kind: the text RULER's generators format (base model template)."""
    spec = KINDS[task_kind]
    return spec["template"] + spec["answer_prefix"]


def split_answer_prefix(task_kind: str, text: str) -> tuple[str, str]:
    """``(input, answer_prefix)``: ``text`` cut at the last occurrence of the kind's answer prefix's
    first 10 characters, as RULER's generators cut it; ``(text, "")`` when it does not occur."""
    at = text.rfind(KINDS[task_kind]["answer_prefix"][:10])
    return (text, "") if at < 0 else (text[:at], text[at:])


def split_question(task_kind: str, text: str) -> tuple[str, str]:
    """``(context, question)`` of RULER's ``input`` at the last match of the kind's question pattern
    (kvpress's split); ``(text, "")`` when the pattern does not occur."""
    matches = list(QUESTION_PATTERNS[task_kind].finditer(text))
    if not matches:
        return text, ""
    at = matches[-1].start()
    return text[:at], text[at:]


def finish(task_kind: str, input_text: str, answer_prefix: str) -> tuple[str, str, str]:
    """``(prompt, question, answer_prefix)`` for a :class:`~tasks.base.Sample` from RULER's ``input``
    and ``answer_prefix``: the prefix's leading whitespace moves to the end of the prompt and of the
    question (kvpress's split), so ``prompt + answer_prefix == input_text + answer_prefix`` and
    ``prompt.endswith(question)``; ``question`` is ``""`` when the input has no question pattern."""
    stripped = answer_prefix.lstrip()
    space = answer_prefix[: len(answer_prefix) - len(stripped)]
    _, question = split_question(task_kind, input_text)
    prompt = input_text + space
    return prompt, (question + space if question else ""), stripped


def singular_niah_template(template: str) -> str:
    """RULER niah.py's rewording of the template when one value is asked for
    (``num_needle_q * num_needle_v == 1``): "Some ... are" -> "A ... is", "are all" -> "is"."""
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    return template
