"""InfiniteBench's official per-example metrics (OpenBMB/InfiniteBench ``src/compute_scores.py``).

Each ``get_score_one_<task>`` of the official scorer is reproduced for the 12 tasks, in its latest
form (labels given as one-element lists are unwrapped for passkey, number_string, code_run and
math_find; ``longbook_choice_eng`` strips the prediction and accepts an exact option; ``code_debug``
strips first and knows the prefix "correct option is:"). ``answers`` is the record's label exactly
as the official code sees it (``ground_truth`` / ``label`` in a predictions file: a string, a
number or a list; ``[option, letter]`` for longbook_choice_eng and code_debug) or the same label as
strings, which is how the suite stores it (``Sample.answers`` is a list of strings).

Metric facts kept from the original:

* passkey / number_string: the first run of digits in the prediction equals the label (string
  comparison, leading zeros count).
* kv_retrieval: the label is one of the words left after replacing ``\\n : " ' . , ? ! { }`` by
  spaces.
* longbook_sum_eng: ROUGE-Lsum F-measure of ``rouge-score`` as HF ``evaluate``'s ``rouge`` metric
  computes it (default tokenizer, no stemmer); a list of references is scored with
  ``RougeScorer.score_multi`` (the best reference), as ``evaluate`` does for a list.
* longbook_choice_eng: the first character if it is A-D; else an answer prefix ("answer is:",
  "answer:", "answer is", "option is") followed by the option or its letter; else the first word
  that is a substring of "ABCD".
* longbook_qa_eng: SQuAD-normalised token F1, best over the answers.
* longbook_qa_chn: character F1 after lower-casing and removing ASCII and Chinese punctuation and
  all whitespace, best over the answers.
* longdialogue_qa_eng: the first answer is one of the upper-cased words of the prediction.
* math_find: the first ``\\d+\\.\\d+|\\d+`` of the prediction equals the label (as int for an int
  label, as float for a float label).
* math_calc: the fraction of the expected values that the prediction's numbers reproduce before
  the first mismatch (digits only: minus signs are ignored, as in the original).
* code_run: the last word of the prediction (after replacing ``\\n . ` ' " :`` by spaces), as an
  int, equals the label.
* code_debug: the prediction starts "<letter>." or "<letter>:", or after the first answer prefix
  ("answer is:", "is:", "answer:", "correct option is:") it starts with the letter or the function
  name.

Deviations, all on inputs where the original raises or cannot be right:

* math_find with an int label and a float first number ("13.5"): the original raises
  ``ValueError`` (``int("13.5")``); this returns 0.
* Labels given as strings (the suite's form) are read back as the original types: "13" -> 13 and
  "51.0" -> 51.0 for math_find, ints for code_run and math_calc (the original compares an int label
  with ints, so a string label would always score 0).
* A string label for longbook_qa_eng / longbook_qa_chn / longdialogue_qa_eng is treated as a
  one-element list (the original would iterate its characters); a list label for kv_retrieval
  matches if any element is a word (the original tests list membership in a list of words, which is
  never true). The official data never has these forms.
* An empty prediction scores 0 everywhere (the original indexes ``pred[0]`` in older versions).

Scores are 0..1 floats; InfiniteBench reports 100 x the mean.
"""

from __future__ import annotations

import re
import string
from collections import Counter

# -------------------------------------------------------------------------------------------
# helpers (as in compute_scores.py)
# -------------------------------------------------------------------------------------------

_CN_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."  # noqa: E501
)
_EN_PUNCT = set(string.punctuation)
_ZH_PUNCT = set(string.punctuation + _CN_PUNCTUATION)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, the articles a/an/the and extra whitespace (SQuAD)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _EN_PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    """Lower-case, drop ASCII and Chinese punctuation, remove all whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _ZH_PUNCT)
    return "".join(s.split())


def f1_score(prediction: list, ground_truth: list) -> float:
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction)
    recall = 1.0 * num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def qa_f1_score(pred: str, ground_truths) -> float:
    f1 = 0.0
    for gt in _as_list(ground_truths):
        f1 = max(f1, f1_score(normalize_answer(pred).split(), normalize_answer(str(gt)).split()))
    return f1


def qa_f1_score_zh(pred: str, ground_truths) -> float:
    f1 = 0.0
    for gt in _as_list(ground_truths):
        f1 = max(f1, f1_score(list(normalize_zh_answer(pred)), list(normalize_zh_answer(str(gt)))))
    return f1


def first_int_match(prediction: str) -> str:
    """The first run of digits in ``prediction`` ("" when there is none)."""
    for item in re.split("[^0-9]", prediction):
        if item != "":
            return item
    return ""


def _as_list(label) -> list:
    return list(label) if isinstance(label, (list, tuple)) else [label]


def _first(label):
    """The official ``if isinstance(label, list): label = label[0]``."""
    if isinstance(label, (list, tuple)):
        return label[0] if label else None
    return label


def _number(label):
    """An int or float label; strings are read back ("13" -> 13, "51.0" -> 51.0)."""
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, (int, float)):
        return label
    if isinstance(label, str):
        s = label.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        try:
            return float(s)
        except ValueError:
            return None
    return None


# -------------------------------------------------------------------------------------------
# per-task scorers: fn(prediction, label) -> float
# -------------------------------------------------------------------------------------------


def score_passkey(pred: str, label) -> float:
    label = _first(label)
    return float(label is not None and str(label) == first_int_match(pred))


score_number_string = score_passkey


def score_kv_retrieval(pred: str, label) -> float:
    for c in ["\n", ":", '"', "'", ".", ",", "?", "!", "{", "}"]:
        pred = pred.replace(c, " ")
    words = pred.split()
    return float(any(str(lab) in words for lab in _as_list(label)))


def score_code_run(pred: str, label) -> float:
    label = _number(_first(label))
    pred = pred.strip()
    for c in ["\n", ".", "`", "'", '"', ":"]:
        pred = pred.replace(c, " ")
    words = pred.split()
    if not words or label is None:
        return 0.0
    try:
        return float(label == int(words[-1]))
    except ValueError:
        return 0.0


def score_code_debug(pred: str, label) -> float:
    pred = pred.strip()
    label_c, fn_name = label[1], label[0]
    if pred[:2] in [f"{label_c}.", f"{label_c}:"]:
        return 1.0
    ans_prefixes = ["answer is:", "is:", "answer:", "correct option is:"]
    for c in ["\n", "`", "'", '"', "-", "*", "Option", "option"]:
        pred = pred.replace(c, " ")
    while "  " in pred:
        pred = pred.replace("  ", " ")
    for prefix in ans_prefixes:
        idx = pred.find(prefix)
        if idx == -1:
            continue
        if len(pred) < idx + len(prefix) + 1:  # the prediction ends with this prefix
            return 0.0
        pred = pred[idx + len(prefix) + 1:]
        return float(any(pred.startswith(s) for s in (label_c, fn_name)))
    return 0.0


def score_math_find(pred: str, label) -> float:
    label = _number(_first(label))
    first_num = re.search(r"\d+\.\d+|\d+", pred)
    if first_num is None or label is None:
        return 0.0
    first_num = first_num.group(0).strip()
    if isinstance(label, int):
        try:
            return float(int(first_num) == label)
        except ValueError:  # the original raises here (int("13.5")); see the module docstring
            return 0.0
    return float(float(first_num) == label)


def score_longdialogue_qa_eng(pred: str, label) -> float:
    label = _as_list(label)[0]
    pred = pred.strip()
    for c in ["\n", ":", '"', "'", ".", ",", "?", "!", "{", "}"]:
        pred = pred.replace(c, " ")
    words = [x.upper() for x in pred.split()]
    return float(label in words)


def score_longbook_choice_eng(pred: str, label) -> float:
    pred = pred.strip()
    if pred == "":
        return 0.0
    if pred[0] in "ABCD":
        return float(pred[0] in label)
    if pred in label:
        return 1.0
    for c in ["\n", '"', "'", ".", ",", "?", "!", "{", "}"]:
        pred = pred.replace(c, " ")
    while "  " in pred:
        pred = pred.replace("  ", " ")
    for prefix in ["answer is:", "answer:", "answer is", "option is"]:
        idx = pred.find(prefix)
        if idx == -1:
            continue
        if len(pred) < idx + len(prefix) + 1:  # the prediction ends with this prefix
            return 0.0
        after_prefix = pred[idx + len(prefix) + 1:]
        return float(any(after_prefix.startswith(s) for s in label))
    for word in pred.split():  # finally the first word that is (a substring of) "ABCD"
        if word in "ABCD":
            return float(word in label)
    return 0.0


def score_longbook_qa_eng(pred: str, label) -> float:
    return qa_f1_score(pred, label)


def score_longbook_qa_chn(pred: str, label) -> float:
    return qa_f1_score_zh(pred, label)


_ROUGE = None


def _rouge_scorer():
    global _ROUGE
    if _ROUGE is None:
        try:
            from rouge_score import rouge_scorer
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("infinitebench/longbook_sum_eng needs rouge-score: pip install rouge-score") from err
        # what evaluate.load("rouge").compute(...) builds: all four types, no stemmer, default tokenizer
        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    return _ROUGE


def score_longbook_sum_eng(pred: str, label) -> float:
    scorer = _rouge_scorer()
    if isinstance(label, (list, tuple)):
        if not label:
            return 0.0
        return float(scorer.score_multi([str(x) for x in label], pred)["rougeLsum"].fmeasure)
    return float(scorer.score(str(label), pred)["rougeLsum"].fmeasure)


def score_math_calc(pred: str, label) -> float:
    label = _as_list(label)
    if label and isinstance(label[0], (list, tuple)):
        label = list(label[0])
    label = [_number(x) for x in label]
    if not label:
        return 0.0
    pred_nums = [int(item) for item in re.split("[^0-9]", pred) if item != ""]
    cnt = 0
    for i in range(len(label)):
        if i >= len(pred_nums):
            break
        if label[i] == pred_nums[i]:
            cnt += 1
        else:
            break
    return cnt / len(label)


_BY_TASK = {
    "passkey": score_passkey,
    "number_string": score_number_string,
    "kv_retrieval": score_kv_retrieval,
    "longbook_sum_eng": score_longbook_sum_eng,
    "longbook_choice_eng": score_longbook_choice_eng,
    "longbook_qa_eng": score_longbook_qa_eng,
    "longbook_qa_chn": score_longbook_qa_chn,
    "longdialogue_qa_eng": score_longdialogue_qa_eng,
    "math_find": score_math_find,
    "math_calc": score_math_calc,
    "code_run": score_code_run,
    "code_debug": score_code_debug,
}


def _wrap(fn):
    def scorer(prediction, answers, all_classes=None) -> float:
        return float(fn(prediction or "", answers))

    scorer.__name__ = fn.__name__
    scorer.__doc__ = fn.__doc__
    return scorer


#: ``{task: fn(prediction, answers, all_classes) -> float}`` for :func:`tasks.scoring.score`.
SCORERS = {task: _wrap(fn) for task, fn in _BY_TASK.items()}
