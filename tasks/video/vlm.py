"""Loading a transformers video-LLM (LLaVA-NeXT-Video) for the video suites and the lmms-eval model.

The whole path (the same for ``python -m harness run --suite longvideobench|mlvu`` and the lmms-eval
model ``namm_video``): frames → pixel values (:mod:`tasks.video.inputs`) → the vision tower +
projector (once) → the prompt's token embeddings with the video features scattered into the
``<video>`` placeholders → chunked prefill of the language model through an eviction cache made by
the runner's cache factory (the policy runs every ``n_up`` tokens seen, image and text tokens
alike) → greedy decoding → text (:mod:`tasks.video.generate`); image vs text tokens kept are counted
by :mod:`tasks.video.modality`.

Pixel preprocessing: ``preprocess="builtin"`` (default when torchvision is missing) is a torch
re-implementation of LLaVA-NeXT-Video's video processor (shortest edge resize, bicubic with
antialias, centre crop, rescale, CLIP normalisation; sizes from the model folder's
``video_preprocessor_config.json`` / ``preprocessor_config.json``, else the vision tower's image
size); ``"hf"`` uses transformers' ``LlavaNextVideoVideoProcessor`` (needs torchvision).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tasks.base import UsageError

DEFAULT_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"
VIDEO_TOKEN = "<video>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS = ("auto", "builtin", "hf")


@dataclass
class VideoBundle:
    """A loaded video-LLM: model, tokenizer, pixel settings (its attention is routed through the
    eviction kernel by the cache factory when a sample runs)."""

    model: object
    tokenizer: object
    name: str
    location: str
    pixel: dict  # size (shortest edge), crop (h, w), mean, std, rescale
    video_token_id: int
    tokens_per_frame: int
    preprocess: str = "builtin"
    hf_processor: object = field(default=None, repr=False)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype


def _torchvision_ok() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA torchvision on a CPU torch raises at import
        return False
    return True


def _pixel_settings(location: str, vision_config) -> dict:
    size = crop = int(vision_config.image_size)
    mean, std, rescale = CLIP_MEAN, CLIP_STD, 1 / 255
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        p = Path(location) / name
        if p.is_file():
            cfg = json.loads(p.read_text())
            s = cfg.get("size") or {}
            size = int(s.get("shortest_edge", s.get("height", size))) if isinstance(s, dict) else int(s)
            c = cfg.get("crop_size") or {}
            crop = int(c.get("height", crop)) if isinstance(c, dict) else int(c)
            mean = tuple(cfg.get("image_mean", mean))
            std = tuple(cfg.get("image_std", std))
            rescale = float(cfg.get("rescale_factor", rescale))
            break
    return {"size": size, "crop": (crop, crop), "mean": mean, "std": std, "rescale": rescale}


def load_video_model(spec: str | None, device="cpu", dtype: str = "float32", preprocess: str = "auto") -> VideoBundle:
    """Load a transformers LLaVA-NeXT-Video model (hub id or local folder). Failures (offline,
    missing files) → one-line :class:`UsageError`."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    if preprocess not in PREPROCESS:
        raise UsageError(f"unknown preprocess {preprocess!r}; choose one of: {', '.join(PREPROCESS)}")
    from tasks.data import hub_reachable

    spec = spec or DEFAULT_MODEL
    is_dir = Path(spec).expanduser().is_dir()
    location = str(Path(spec).expanduser().resolve()) if is_dir else spec
    local = {"local_files_only": True} if not is_dir and not hub_reachable() else {}  # no 25 s retries offline
    try:
        config = AutoConfig.from_pretrained(location, **local)
    except (OSError, ValueError) as err:
        raise UsageError(
            f"could not load video model {spec!r} ({str(err).splitlines()[0][:160]}); pass --model with a local "
            f"folder holding a transformers LLaVA-NeXT-Video model (e.g. a download of {DEFAULT_MODEL}) or run "
            "with hub access") from err
    if not hasattr(config, "video_token_id") and not hasattr(config, "video_token_index"):
        raise UsageError(f"model {spec!r} ({config.model_type}) is not a video-LLM with a <video> token; "
                         f"use a LLaVA-NeXT-Video model such as {DEFAULT_MODEL}")
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        model = AutoModelForImageTextToText.from_pretrained(location, dtype=torch_dtype, **local)
        tokenizer = AutoTokenizer.from_pretrained(location, **local)
    except OSError as err:
        raise UsageError(f"could not load video model {spec!r}: {str(err).splitlines()[0][:200]}") from err
    model.to(device).eval()
    video_token_id = getattr(config, "video_token_id", None) or config.video_token_index
    vc = config.vision_config
    stride = int(getattr(config, "spatial_pool_stride", 1) or 1)
    tokens_per_frame = ((vc.image_size // vc.patch_size) // stride) ** 2
    hf_processor = None
    chosen = preprocess
    if preprocess == "auto":
        chosen = "hf" if _torchvision_ok() else "builtin"
    if chosen == "hf":
        try:
            from transformers import AutoVideoProcessor

            hf_processor = AutoVideoProcessor.from_pretrained(location, **local)
        except Exception as err:
            if preprocess == "hf":
                raise UsageError(f"preprocess=hf: cannot load the transformers video processor of {spec!r} "
                                 f"({str(err).splitlines()[0][:160]}); it needs torchvision") from err
            chosen = "builtin"
    name = Path(location).name if is_dir else spec.replace("/", "--")
    return VideoBundle(model, tokenizer, name, location, _pixel_settings(location, vc), int(video_token_id),
                       int(tokens_per_frame), chosen, hf_processor)
