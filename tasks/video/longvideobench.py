"""LongVideoBench (Wu et al., 2024), validation set, video-only questions: ``longvideobench_val_v``.

Follows lmms-eval's ``longvideobench_val_v`` task (the setup the NAMM paper used through
lmms-eval): records of the official validation set (``lvb_val.json`` from the hub dataset
``longvideobench/LongVideoBench``, or its ``validation`` parquet, or the same records as JSON
lines) with ``video_path``, ``question``, the options (``candidates`` list, or ``option0`` ..
``option4`` with ``"N/A"`` for absent ones), ``correct_choice`` (0-based index), ``id``,
``duration_group``, ``question_category``. Videos: ``DATA_DIR/videos/<video_path>`` (the hub's
layout) or ``DATA_DIR/<video_path>``.

Prompt (lmms-eval ``longvideobench_doc_to_text``, default kwargs): the question, then one
``"A. option"`` line per option, then ``"Answer with the option's letter from the given choices
directly.\\n"``; at most 32 new tokens, greedy. Score (lmms-eval ``longvideobench_process_results``):
strip the answer prefixes, take the first letter A-E; when none is found lmms-eval picks a random
option — here a random option seeded by the question id, so runs are reproducible. The metric is
accuracy over all questions (``lvb_acc``).
"""

from __future__ import annotations

import random
import re

from tasks import register_suite
from tasks.base import DataError, Sample
from tasks.video.base import VideoSuite

POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option is", "The correct option is", "Best answer:", "Best option:")


def options_of(record: dict) -> list[str]:
    if isinstance(record.get("candidates"), list):
        return [str(c) for c in record["candidates"]]
    out = []
    for i in range(5):
        option = record.get(f"option{i}")
        if option is None or option == "N/A":
            break
        out.append(str(option))
    return out


def parse_choice(response: str, n_options: int, seed: str) -> str:
    """lmms-eval's ``parse_multi_choice_response`` (random fallback seeded by ``seed``)."""
    choices = [chr(ord("A") + i) for i in range(n_options)]
    s = response.strip()
    for prefix in ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return random.Random(seed).choice(choices)
    match = re.search(r"[ABCDE]", s)
    return match[0] if match else random.Random(seed).choice(choices)


@register_suite("longvideobench")
class LongVideoBench(VideoSuite):
    tasks = ("longvideobench_val_v",)
    task_ids = {"longvideobench_val_v": "LongVideoBench"}
    files = {"longvideobench_val_v": ("lvb_val.json", "longvideobench_val_v.jsonl", "lvb_val.jsonl",
                                      "validation-00000-of-00001.parquet")}
    required = ("video_path", "question", "correct_choice")
    video_field = "video_path"
    video_dirs = ("videos", "")
    hint = ("(the LongVideoBench validation records from the hub dataset longvideobench/LongVideoBench) and the "
            "videos under DIR/videos/")
    max_new_tokens = 32

    def to_sample(self, task: str, record: dict, n: int) -> Sample:
        options = options_of(record)
        if not options:
            raise DataError(f"longvideobench record {n}: no options (expected candidates or option0..option4)")
        try:
            correct = int(record["correct_choice"])
        except (TypeError, ValueError):
            raise DataError(f"longvideobench record {n}: correct_choice must be an option index, got "
                            f"{record['correct_choice']!r}") from None
        if not 0 <= correct < len(options):
            raise DataError(f"longvideobench record {n}: correct_choice {correct} out of range for {len(options)} options")
        lines = "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(options))
        prompt = f"{record['question']}\n{lines}\n{POST_PROMPT}"
        meta = {k: record[k] for k in ("duration_group", "question_category", "duration", "topic_category", "level")
                if k in record}
        meta["n_options"] = len(options)
        return Sample(id=str(record.get("id", n)), task=task, prompt=prompt, answers=[chr(ord("A") + correct)],
                      max_new_tokens=self.max_new_tokens, metadata=meta, all_classes=None, chat=True)

    def score(self, sample: Sample, prediction: str) -> float:
        n_options = int(sample.metadata.get("n_options", 5))
        return float(parse_choice(prediction, n_options, sample.id) == sample.answers[0])
