"""InfiniteBench records → the official prompt and label (:mod:`tasks.infinitebench`'s record level).

The official open-model templates (``yarn_mistral_templates`` of ``src/prompt.py``), filled as
``create_prompt`` of ``src/eval_utils.py`` fills them, the official ``get_answer`` labels, and the
checks a record must pass to make a sample. Nothing here reads files or knows a data source.
"""

from __future__ import annotations

import re

#: src/prompt.py yarn_mistral_templates (the official prompts for open models)
TEMPLATES = {
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
               "I will quiz you about the important information.\n\n{context}\n\n{input}\n\nThe pass key is",
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you "
                     "about the important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is",
    "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n"
                    "{context}\n\n{input}",
    "longbook_sum_eng": "Summarize the book below.\n\n{context}\n\nSummary:",
    "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n"
                           "A. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\n"
                           "The letter of the correct answer is",
    "longbook_qa_eng": "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\n"
                       "Question: {question}\nAnswer:",
    "longbook_qa_chn": "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
    "math_find": "{prefix}\n\n{context}\n\n{input}",
    "math_calc": "Let us calculate the intermediate values of an expression.\n\nExpression: 1 + 3 + 4\n"
                 "Values: [1, 4, 8]\n\nExpression: 8 - 3 + 2 - 4\nValues: [8, 5, 7, 3]\n\n"
                 "Expression: {context}\nValues:",
    "code_run": "There is a function called {func} in the following Python code.\n\n{context}\n\n"
                "Please compute the exact value of {func_call}. The value of {func_call} is",
    "code_debug": "Following is a Python code where exactly one of the functions/methods has a deliberate error that "
                  "makes it crash.\n\n{context}\n\nOptions:\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\n"
                  "D. {OPTION_D}\n\nThe correct option is:",
    "longdialogue_qa_eng": "Below is a dialogue script where one random occurrence of a character name is replaced "
                           "with \"$$MASK$$\", and you should try to guess who that character is.\n\n{context}\n\n"
                           "The name that has been replaced with $$MASK$$ is likely",
}

CHOICE_TASKS = ("longbook_choice_eng", "code_debug")

_MATH_FIND_TARGET = re.compile(r"The .+ of")
_CODE_RUN_CALL = re.compile(r"func_[0-9]+\(\-?[0-9]+\)")


def create_prompt(task: str, rec: dict) -> str:
    """``create_prompt`` of ``src/eval_utils.py`` for the yarn-mistral templates."""
    template = TEMPLATES[task]
    if task == "code_run":
        func_call = _CODE_RUN_CALL.findall(rec["input"])[0]
        return template.format(func=func_call.split("(")[0], func_call=func_call, context=rec["context"])
    if task in CHOICE_TASKS:
        opts = rec["options"]
        kwargs = {"context": rec["context"], "OPTION_A": opts[0], "OPTION_B": opts[1], "OPTION_C": opts[2],
                  "OPTION_D": opts[3]}
        if task == "longbook_choice_eng":
            kwargs["question"] = rec["input"]
        return template.format(**kwargs)
    if task in ("longdialogue_qa_eng", "longbook_sum_eng", "math_calc"):
        return template.format(context=rec["context"])
    if task in ("longbook_qa_eng", "longbook_qa_chn"):
        return template.format(question=rec["input"], context=rec["context"])
    if task == "math_find":
        target = _MATH_FIND_TARGET.findall(rec["input"])[0].lower()[:-3]
        prefix = f"What is {target} in the following list?"
        return template.format(prefix=prefix, context=rec["context"], input=rec["input"])
    return template.format(context=rec["context"], input=rec["input"])


def get_answer(task: str, rec: dict):
    """``get_answer`` of ``src/eval_utils.py``: ``[option, letter]`` for the choice tasks."""
    answer = rec["answer"]
    if task in CHOICE_TASKS:
        if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
            return list(answer)
        if isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        return [answer, "ABCD"[rec["options"].index(answer)]]
    return answer


def answers_as_strings(task: str, label) -> list[str]:
    """The label as ``Sample.answers`` (strings; the scorer reads numbers back)."""
    if task == "math_calc" and isinstance(label, list) and label and isinstance(label[0], list):
        label = label[0]
    items = label if isinstance(label, list) else [label]
    return [x if isinstance(x, str) else str(x) for x in items]


def check_record(task: str, rec: dict) -> str | None:
    """Why ``rec`` cannot make a sample of ``task`` (``None`` when it can)."""
    for key in ("context", "input"):
        if not isinstance(rec[key], str):
            return f"field {key!r} must be a string, got {type(rec[key]).__name__}"
    answer = rec["answer"]
    if not isinstance(answer, (str, int, float, list)) or isinstance(answer, bool) or answer in ([], ""):
        return f"field 'answer' must be a non-empty string, number or list, got {answer!r:.80}"
    if task in CHOICE_TASKS:
        opts = rec.get("options")
        if not isinstance(opts, list) or len(opts) < 4 or not all(isinstance(o, str) for o in opts[:4]):
            return "field 'options' must list the four options (strings)"
        try:
            get_answer(task, rec)
        except (ValueError, IndexError, TypeError):
            return f"the answer {answer!r:.80} is not one of the options"
    if task == "math_find" and not _MATH_FIND_TARGET.search(rec["input"]):
        return "field 'input' must name the number asked for ('The ... of the list is')"
    if task == "code_run" and not _CODE_RUN_CALL.search(rec["input"]):
        return "field 'input' must contain the call 'func_<n>(<int>)'"
    if task in ("math_find", "code_run", "math_calc"):
        items = answer if isinstance(answer, list) else [answer]
        if task == "math_calc" and items and isinstance(items[0], list):
            items = items[0]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
            return f"field 'answer' must hold numbers for {task}, got {answer!r:.80}"
    return None

