"""What the video suites share: reading official records, resolving videos, the video-LLM path.

A video suite is a :class:`tasks.base.Suite` with two more methods the runner calls instead of its
language path (``load_model`` and ``evaluate_sample``), plus ``input_tokens`` (the prompt length
after the video placeholder is expanded, for ``--cache-size`` fractions) and ``aggregate`` (the
benchmark's official figure over a task's records, when it is not the plain mean of scores).

Records are read from ``data_dir`` in the official formats (JSON lines, a JSON array, or the hub's
parquet files); videos are resolved relative to ``data_dir``. Nothing is generated: without data a
task raises :class:`tasks.base.TaskUnavailable` with one line saying how to provide it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

from tasks.base import CacheFactory, DataError, Sample, Suite, TaskUnavailable
from tasks.video.frames import check_frame_count

N_FRAMES = 48  # paper: 48 uniformly sampled frames x 12 x 12 tokens = 6912 image tokens
NAMM_THRESHOLD_SHIFT = 5.0  # paper §4.2: NAMM's selection threshold shifted by 5 for video (0 -> +5)


def namm_video_threshold(policy: str, threshold: float | None = None,
                         shift: float = NAMM_THRESHOLD_SHIFT) -> float | None:
    """The selection threshold of ``policy`` in a video run, one rule for ``harness run --suite
    longvideobench|mlvu`` and lmms-eval's ``namm_video``: ``threshold`` when given (absolute), else
    the policy's default plus ``shift``; None for policies without a threshold (not NAMM)."""
    from policies import POLICIES, base_name

    cls = POLICIES.get(base_name(policy))
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if "threshold" not in fields:
        return None
    if threshold is not None:
        return float(threshold)
    return float(fields["threshold"].default) + float(shift)


def read_records(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Records of a ``.jsonl``, ``.json`` (array, or object of records) or ``.parquet`` file."""
    from tasks.data import read_jsonl

    if path.suffix == ".jsonl":
        return read_jsonl(path, required)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        rows = pq.read_table(path).to_pylist()
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        rows = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON array of records")
    for n, rec in enumerate(rows, 1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {n} is not a JSON object")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"{path}: record {n} lacks field(s) {', '.join(missing)}; "
                            f"expected the official fields {', '.join(required)}")
    return rows


class VideoSuite(Suite):
    """Base class: subclasses set ``tasks``, ``task_ids``, ``files`` (per task: data file names
    tried in order), ``video_dirs`` and implement :meth:`to_sample` and :meth:`score`."""

    files: ClassVar[dict[str, tuple[str, ...]]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    video_field: ClassVar[str] = "video_path"
    video_dirs: ClassVar[tuple[str, ...]] = ("", "videos")
    hint: ClassVar[str] = ""
    max_new_tokens: ClassVar[int] = 32
    namm_threshold = staticmethod(namm_video_threshold)  # the runner's NAMM threshold for this suite

    def __init__(self, data_dir: str | None = None, n_frames: int = N_FRAMES, preprocess: str = "auto",
                 prefill_chunk: int | None = None):
        self.data_dir = Path(data_dir) if data_dir else None
        self.n_frames = check_frame_count(n_frames)
        self.preprocess = preprocess
        self.prefill_chunk = prefill_chunk

    # ---- data ------------------------------------------------------------------------------------
    def data_file(self, task: str) -> Path:
        for name in self.files[task]:
            if self.data_dir is not None and (self.data_dir / name).is_file():
                return self.data_dir / name
        where = f"in {self.data_dir}" if self.data_dir else "(no --data-dir given)"
        raise TaskUnavailable(f"{task}: no records {where}; pass --data-dir DIR holding "
                              f"{' or '.join(self.files[task])} {self.hint}")

    def resolve_video(self, name: str, record: dict) -> Path:
        """The video file of a record, relative to ``data_dir`` (also one sub-folder deep)."""
        candidates = [self.data_dir / sub / name for sub in self.video_dirs]
        for c in candidates:
            if c.is_file():
                return c
        for sub in self.video_dirs:
            base = self.data_dir / sub
            if base.is_dir():
                for child in sorted(p for p in base.iterdir() if p.is_dir()):
                    if (child / name).is_file():
                        return child / name
        return candidates[0]

    def samples(self, task: str, tokenizer=None, max_length: int | None = None, seed: int = 0):
        path = self.data_file(task)  # raises TaskUnavailable now, not at the first next()
        records = read_records(path, self.required)
        out = []
        for n, rec in enumerate(records, 1):
            video = self.resolve_video(str(rec[self.video_field]), rec)
            if not video.is_file():
                raise DataError(f"{path}: record {n}: video {rec[self.video_field]!r} not found under "
                                f"{self.data_dir} (looked in {', '.join(s or '.' for s in self.video_dirs)})")
            sample = self.to_sample(task, rec, n)
            sample.metadata.update(source="data-dir", generated=False, video=str(video), n_frames=self.n_frames)
            out.append(sample)
        return iter(out)

    def to_sample(self, task: str, record: dict, n: int) -> Sample:
        raise NotImplementedError

    # ---- model path (called by the runner instead of its language path) ---------------------------
    def load_model(self, model: str | None, device="cpu", dtype: str = "float32"):
        """``(VideoBundle, source name)``; ``model`` is a hub id or a local folder."""
        from tasks.video.frames import require_av
        from tasks.video.vlm import load_video_model

        require_av()  # fail before loading 7B weights when videos cannot be read
        bundle = load_video_model(model, device=device, dtype=dtype, preprocess=self.preprocess)
        return bundle, bundle.name

    def input_tokens(self, sample: Sample, bundle) -> int:
        """Prompt tokens after the ``<video>`` placeholder is expanded (frames are not decoded)."""
        from tasks.video.inputs import count_input_tokens

        return count_input_tokens(bundle, sample.prompt, self.n_frames)

    def evaluate_sample(self, sample: Sample, bundle, caches: CacheFactory, device=None) -> dict:
        """Frames → model with an eviction cache from ``caches`` (the runner's
        :class:`tasks.base.CacheFactory`) → answer → score; Evaluator.evaluate's keys plus
        ``input_tokens``/``image_tokens``/``text_tokens``, ``video`` (frame sampling) and
        ``cache.modality`` (image vs text tokens seen and kept)."""
        from tasks.video.frames import read_frames
        from tasks.video.generate import run_sample

        start = time.perf_counter()
        frames, info = read_frames(sample.metadata["video"], self.n_frames)
        frames_s = time.perf_counter() - start
        result = run_sample(bundle, frames, sample.prompt, caches, sample.max_new_tokens, self.prefill_chunk)
        result.pop("tokens")
        result["timing"]["frames_s"] = round(frames_s, 4)
        result["score"] = float(self.score(sample, result["prediction"]))
        result["prompt_tokens"] = result["input_tokens"]
        result["video"] = {"n_frames": self.n_frames, "total_frames": info["total_frames"],
                           "indices": info["indices"], "tokens_per_frame": bundle.tokens_per_frame,
                           "preprocess": bundle.preprocess}
        return result

    def aggregate(self, records: list[dict]) -> float:
        """The benchmark's official figure (x 100) over one task's records; default: mean score."""
        return round(100 * sum(r["score"] for r in records) / len(records), 4) if records else 0.0
