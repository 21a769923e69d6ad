"""What the generation loop and ``bench`` measure with, on CPU and CUDA alike: wall time (CUDA events on a GPU), peak memory
(``torch.cuda.max_memory_allocated`` on a GPU, peak RSS on CPU), the KV cache's bytes per token.

On CUDA every measured phase is bracketed by events and the stream is synchronised before the
time is read; CPU phases use ``time.perf_counter``. ``median`` summarises repeats.
"""

from __future__ import annotations

import resource
import statistics
import time

import torch


class Clock:
    """``with clock.phase(): ...`` then ``clock.seconds`` (the last phase's wall time) on ``device``."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = torch.device(device)
        self.seconds = 0.0

    def phase(self):
        return _Phase(self)


class _Phase:
    def __init__(self, clock: Clock):
        self.clock = clock

    def __enter__(self):
        if self.clock.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.clock.cuda:
            self.end.record()
            torch.cuda.synchronize(self.clock.device)
            self.clock.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.clock.seconds = time.perf_counter() - self.t0
        return False


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def reset_peak_memory(device) -> None:
    """Start a new peak-memory window (CUDA; on CPU peak RSS cannot be reset, a process is one window)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: ``VmHWM`` of ``/proc/self/status`` on Linux (the
    peak since the program started: ``ru_maxrss`` also counts the parent's before ``exec``), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device) -> dict:
    """``{"peak_memory_mb", "peak_memory_kind"}``: GPU memory allocated by torch at its peak on CUDA,
    the process's peak resident set size on CPU."""
    if torch.device(device).type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_kind": "cuda_max_allocated"}
    return {"peak_memory_mb": round(peak_rss_mb(), 1), "peak_memory_kind": "cpu_peak_rss"}


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes one token's keys and values take in the cache, over all attention layers:
    ``2 x layers x kv_heads x head_dim x element size`` (a sliding-window layer counts like the
    others; its window caps what it holds)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * torch.empty((), dtype=dtype).element_size()
