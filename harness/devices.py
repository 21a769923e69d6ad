"""Devices and dtypes on the command line: ``--device``, ``--dtype auto`` and ``--device-map``.

- ``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``);
  with ``--device-map`` it is where the inputs go, the device of the model's first layer.
- ``--dtype auto`` (the default of every command): ``bfloat16`` when ``--device`` is CUDA, else the
  command's CPU default (``run``, ``bench``, ``namm-init`` and lm-eval: ``float32``, the precision of
  the committed references; ``fit``: ``bfloat16`` where the CPU computes it natively, with
  AVX512-BF16 or AMX, else ``float32``: without them torch emulates bf16 and a forward is ~5x
  slower than in fp32, measured in ``results/fit-bench/README.md``). It is resolved to that concrete
  name before anything is recorded, so a run directory made with ``--dtype float32`` on CPU resumes
  without it.
- ``--device-map`` (``auto``, ``balanced``, ``balanced_low_0``, ``sequential``): accelerate spreads
  the model's layers over the GPUs (then the CPU) for a model larger than one GPU; one process only.
"""

from __future__ import annotations

import os

from harness.errors import UsageError, choose

DTYPES = ("float32", "bfloat16", "float16")
AUTO = "auto"
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
DEVICE_HINT = "cpu, cuda, cuda:N or mps"
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placement strategies
DTYPE_HELP = ("auto (default: bfloat16 on CUDA, {cpu} elsewhere), float32, bfloat16 or float16")
DEVICE_MAP_HELP = ("spread the model over the GPUs with accelerate: auto, balanced, balanced_low_0 or sequential "
                   "(a model larger than one GPU; --device is then where the inputs go, the first layer's device)")


def check_device(device: str) -> None:
    """:class:`UsageError` unless ``device`` is a torch device this machine has (cpu, cuda[:N], mps, xpu[:N])."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device; use {DEVICE_HINT}") from None
    if dev.type not in DEVICE_TYPES:
        raise UsageError(f"--device {device!r}: not a device the harness runs on; use {DEVICE_HINT}")
    if dev.type == "cpu":
        return
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type)
    if not backend.is_available():
        raise UsageError(f"--device {device}: no {dev.type} device is available to this torch "
                         f"({torch.__version__}); use --device cpu")
    count = getattr(backend, "device_count", lambda: 1)()
    if dev.index is not None and dev.index >= count:
        raise UsageError(f"--device {device}: this machine has {count} {dev.type} device(s), "
                         f"{dev.type}:0 to {dev.type}:{count - 1}")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX tiles), so that a bf16 forward is
    faster than an fp32 one; without it torch converts every bf16 operand and the forward is slower."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_dtype(dtype: str | None, device: str, cpu_default: str = "float32") -> str:
    """The concrete dtype name for ``--dtype``: ``auto`` (or ``None``) is ``bfloat16`` on a CUDA
    ``device`` and ``cpu_default`` on any other, except that a ``bfloat16`` default falls back to
    ``float32`` on a CPU without bf16 arithmetic (:func:`cpu_computes_bf16`); a concrete name is
    checked and returned as it is."""
    import torch

    if dtype is None or dtype == AUTO:
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError, ValueError):
            kind = None  # check_device reports the bad --device
        if kind == "cuda":
            return "bfloat16"
        if cpu_default == "bfloat16" and kind == "cpu" and not cpu_computes_bf16():
            return "float32"
        return cpu_default
    choose("--dtype", dtype, (*DTYPES, AUTO))
    return dtype


def check_device_map(device_map: str | None, device: str) -> None:
    """:class:`UsageError` unless ``device_map`` is ``None`` or one of :data:`DEVICE_MAPS` usable here:
    one process (not under ``torchrun``), and a GPU ``--device`` when this machine has GPUs (the
    first layer, where the inputs go, is placed on one)."""
    if device_map is None:
        return
    choose("--device-map", device_map, DEVICE_MAPS)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"--device-map {device_map} spreads one model over this machine's devices: "
                         "run it in one process, not under torchrun")
    import torch

    if torch.device(device).type == "cpu" and torch.cuda.is_available():
        raise UsageError(f"--device-map {device_map} puts the first layer on a GPU: pass --device cuda "
                         "(where the inputs go)")


def check_first_layer(model, device: str, device_map: str) -> None:
    """:class:`UsageError` unless the model's input embeddings (its first layer) are on ``device``."""
    import torch

    first = model.get_input_embeddings().weight.device
    want = torch.device(device)
    if want.type == "cuda" and want.index is None:
        want = torch.device("cuda", torch.cuda.current_device())
    if first != want:
        raise UsageError(f"--device {device}: --device-map {device_map} put the first layer on {first}; "
                         f"pass --device {first}")
