"""MLVU (Zhou et al., 2024), dev set, multiple-choice questions: ``mlvu_dev``.

Follows lmms-eval's ``mlvu_dev`` task (the setup the NAMM paper used through lmms-eval): records
of the hub dataset ``sy1998/MLVU_dev`` (as JSON lines, a JSON array or its parquet file) with
``video_name``, ``question`` (the question followed by its ``(A) ...`` option lines),
``answer`` (the correct letter; ``"(B) text"`` or an option text — the original MLVU json — is
mapped to its letter, the latter through ``candidates``)
and ``task_type`` (plotQA, needle, ego, count, order, anomaly_reco, topic_reasoning). Videos:
``DATA_DIR/<video_name>``, ``DATA_DIR/video/<video_name>`` or one sub-folder deeper (MLVU groups
videos by task).

Prompt (lmms-eval ``mlvu_doc_to_text`` with the task's default kwargs): the question, then
``"\\nOnly give the best option.\\nBest option: ("``; at most 16 new tokens, greedy. Score
(lmms-eval ``extract_characters_regex``, the dev-set version): the character before the first
``")"`` of the stripped answer, else the whole stripped answer, must equal the answer letter.
Official figure (``mlvu_aggregate_results_dev``): the mean over the 7 task types of the per-type
accuracy — :meth:`MLVU.aggregate`; ``metrics.json``'s plain mean over questions is the micro
average.
"""

from __future__ import annotations

import re

from tasks import register_suite
from tasks.base import DataError, Sample
from tasks.video.base import VideoSuite

POST_PROMPT = "\nOnly give the best option.\nBest option: ("
TASK_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")


def extract_choice(response: str) -> str:
    s = response.strip()
    if ")" in s:
        i = s.index(")")
        return s[i - 1 : i]
    return s


@register_suite("mlvu")
class MLVU(VideoSuite):
    tasks = ("mlvu_dev",)
    task_ids = {"mlvu_dev": "MLVU"}
    files = {"mlvu_dev": ("mlvu_dev.jsonl", "mlvu_dev.json", "test-00000-of-00001.parquet")}
    required = ("video_name", "question", "answer", "task_type")
    video_field = "video_name"
    video_dirs = ("", "video", "videos")
    hint = "(the MLVU dev records of the hub dataset sy1998/MLVU_dev) and the videos under DIR/ or DIR/video/"
    max_new_tokens = 16

    def to_sample(self, task: str, record: dict, n: int) -> Sample:
        answer = str(record["answer"]).strip()
        lettered = re.match(r"^\(([A-F])\)", answer)  # "(B) yellow"
        if lettered:
            answer = lettered[1]
        if not re.fullmatch(r"[A-F]", answer):
            candidates = record.get("candidates") or []
            if answer not in candidates:
                raise DataError(f"mlvu record {n}: answer {answer!r} is neither an option letter nor one of its candidates")
            answer = chr(ord("A") + list(candidates).index(answer))
        meta = {"task_type": record["task_type"]}
        if "duration" in record:
            meta["duration"] = record["duration"]
        sample_id = str(record.get("question_id") or record.get("id") or f"{n}")
        return Sample(id=sample_id, task=task, prompt=f"{record['question']}{POST_PROMPT}", answers=[answer],
                      max_new_tokens=self.max_new_tokens, metadata=meta, chat=True)

    def score(self, sample: Sample, prediction: str) -> float:
        return float(extract_choice(prediction) == sample.answers[0])

    def aggregate(self, records: list[dict]) -> float:
        """lmms-eval ``mlvu_aggregate_results_dev``: mean over the 7 task types of per-type accuracy
        (a type with no question counts 0, as there)."""
        per_type = {t: [] for t in TASK_TYPES}
        for r in records:
            per_type.setdefault((r.get("metadata") or {}).get("task_type"), []).append(r["score"])
        accs = [100 * sum(v) / len(v) if v else 0.0 for t, v in per_type.items() if t in TASK_TYPES]
        return round(sum(accs) / len(TASK_TYPES), 4)
