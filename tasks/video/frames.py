"""Reading video frames: uniform sampling with PyAV (the ``[video]`` extra).

Frame sampling follows lmms-eval's ``llava_hf`` model (the plain-transformers LLaVA path): ``n``
frame indices ``numpy.linspace(0, total - 1, n)`` cast to int, i.e. uniformly spread over the whole
video, first and last frame included (a video shorter than ``n`` frames repeats frames, as there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.base import UsageError
from tasks.base import DataError

INSTALL_HINT = "pip install -e '.[video]'  (or: pip install av)"


class VideoError(DataError):
    """A video file is missing, unreadable, or has no decodable frames (one line naming the file)."""


def check_frame_count(n_frames) -> int:
    """``n_frames`` as a positive int, else :class:`UsageError` (one line)."""
    try:
        value = int(n_frames)
        ok = value == float(n_frames) and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"n_frames must be a positive integer number of frames to sample, got {n_frames!r}")
    return value


def require_av():
    """Import PyAV, or raise a one-line :class:`UsageError` saying how to install the video extra."""
    try:
        import av
    except ImportError:
        raise UsageError(f"the video suites need PyAV to read videos, which is not installed; install the video "
                         f"extra: {INSTALL_HINT}") from None
    return av


def uniform_indices(total: int, n_frames: int) -> list[int]:
    """``n_frames`` indices spread uniformly over ``total`` frames (lmms-eval ``llava_hf`` rule)."""
    n_frames = check_frame_count(n_frames)
    if total < 1:
        raise ValueError("a video needs at least one frame")
    return np.linspace(0, total - 1, n_frames, dtype=int).tolist()


def read_frames(path: str | Path, n_frames: int = 48) -> tuple[np.ndarray, dict]:
    """``(frames [n, H, W, 3] uint8 RGB, info)`` for ``n_frames`` uniformly sampled frames.

    ``info``: ``total_frames``, ``indices``, ``fps``, ``duration_s``. Every frame is decoded once in
    order (exact indices, no keyframe-seek approximation); only the sampled ones are kept.
    """
    n_frames = check_frame_count(n_frames)
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file {path} not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"video file {path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            total = stream.frames
            if not total:  # container does not say: count by decoding
                total = sum(1 for _ in container.decode(stream))
                container.seek(0)
            if total < 1:
                raise VideoError(f"video file {path} has no frames")
            indices = uniform_indices(total, n_frames)
            wanted = {}
            for i, idx in enumerate(indices):
                wanted.setdefault(idx, []).append(i)
            frames: list[np.ndarray | None] = [None] * n_frames
            last = None
            for idx, frame in enumerate(container.decode(stream)):
                if idx in wanted:
                    arr = frame.to_ndarray(format="rgb24")
                    for slot in wanted[idx]:
                        frames[slot] = arr
                last = frame
                if idx >= indices[-1]:
                    break
            if last is None:
                raise VideoError(f"video file {path} has no decodable frames")
            # the header's frame count can exceed what decodes; fill with the last decoded frame
            tail = last.to_ndarray(format="rgb24")
            frames = [tail if f is None else f for f in frames]
    except VideoError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VideoError(f"cannot read video file {path}: {first}") from err
    info = {"total_frames": int(total), "indices": indices, "fps": fps,
            "duration_s": round(total / fps, 3) if fps else None}
    return np.stack(frames), info


def write_test_video(path: str | Path, n_frames: int = 24, size: tuple[int, int] = (64, 48), fps: int = 8) -> Path:
    """Write a small synthetic mp4 (a coloured square moving over a gradient); for tests and demos."""
    av = require_av()
    path = Path(path)
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            img = np.zeros((height, width, 3), dtype=np.uint8)
            img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            img[..., 2] = (i * 255) // max(1, n_frames - 1)
            x = (i * (width - 16)) // max(1, n_frames - 1)
            img[height // 2 - 8 : height // 2 + 8, x : x + 16] = (255, 255, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
