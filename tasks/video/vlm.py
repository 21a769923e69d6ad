"""A transformers video-LLM (LLaVA-NeXT-Video) whose language model runs with the eviction cache.

The path (the same for ``python -m harness run --suite longvideobench|mlvu`` and the lmms-eval
model): frames → pixel values → the vision tower + projector (once) → the prompt's token
embeddings with the video features scattered into the ``<video>`` placeholders → chunked prefill
of the language model through an :class:`harness.cache.EvictionCache` (the policy runs every
``n_up`` tokens seen, image and text tokens alike) → greedy decoding → text.

Prompt format follows lmms-eval's ``llava_hf`` model (plain transformers): the user turn is
``"<video>\\n" + question``; the tokenizer's chat template is applied when it has one, else the
Vicuna template lmms-eval falls back to; the single ``<video>`` token is expanded to
``n_frames x tokens_per_frame`` placeholders, as the transformers processor does.

Image-token accounting: every prompt position is marked image (and which frame) or text; at the
end each evicting layer's kept positions (:attr:`harness.cache.EvictionLayer.positions`, real slots
only) are counted per kind, per KV head, and averaged over heads and layers.

Pixel preprocessing: ``preprocess="builtin"`` (default when torchvision is missing) is a torch
re-implementation of LLaVA-NeXT-Video's video processor (shortest edge resize, bicubic with
antialias, centre crop, rescale, CLIP normalisation; sizes from the model folder's
``video_preprocessor_config.json`` / ``preprocessor_config.json``, else the vision tower's image
size); ``"hf"`` uses transformers' ``LlavaNextVideoVideoProcessor`` (needs torchvision).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.errors import UsageError

DEFAULT_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"
VIDEO_TOKEN = "<video>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# lmms-eval's llava_hf fallback when the tokenizer has no chat template
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious user and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "USER: {{ message['content'] }} {% elif message['role'] == 'user' %}USER: {{ message['content'] }} {% else %} "
    "ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
PREPROCESS = ("auto", "builtin", "hf")


@dataclass
class VideoBundle:
    """A loaded video-LLM: model (attached to the eviction attention), tokenizer, pixel settings."""

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


@dataclass
class VideoInputs:
    input_ids: torch.Tensor  # [1, L] with the <video> placeholder expanded
    pixel_values_videos: torch.Tensor  # [1, F, 3, H, W]
    frame_of: torch.Tensor  # [L] long: frame index of each position, -1 for text
    n_frames: int

    @property
    def image_mask(self) -> torch.Tensor:
        return self.frame_of >= 0


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

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
    """Load a transformers LLaVA-NeXT-Video model (hub id or local folder) and attach the eviction
    attention. Failures (offline, missing files) → one-line :class:`UsageError`."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    from harness.attention import attach

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
    attach(model)
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


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------

def preprocess_frames(frames, pixel: dict) -> torch.Tensor:
    """``[F, H, W, 3]`` uint8 → ``[1, F, 3, crop_h, crop_w]`` float (resize, crop, rescale, normalise)."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()  # [F, 3, H, W]
    h, w = x.shape[-2:]
    size = pixel["size"]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)
    ch, cw = pixel["crop"]
    top, left = max(0, (new_h - ch) // 2), max(0, (new_w - cw) // 2)
    x = x[..., top : top + ch, left : left + cw]
    if x.shape[-2:] != (ch, cw):  # smaller than the crop: pad like a centre crop would
        x = F.pad(x, (0, cw - x.shape[-1], 0, ch - x.shape[-2]))
    x = x * pixel["rescale"]
    mean = torch.tensor(pixel["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pixel["std"]).view(1, 3, 1, 1)
    return ((x - mean) / std)[None]


def chat_text(tokenizer, question: str) -> str:
    """The templated prompt text, lmms-eval ``llava_hf`` style: user turn ``"<video>\\n" + question``
    in the tokenizer's chat template, else in the Vicuna template lmms-eval falls back to. A
    template that only renders structured content (``[{"type": "video"}, {"type": "text", ...}]``,
    as transformers processors' templates do) gets that form."""
    content = question if VIDEO_TOKEN in question else f"{VIDEO_TOKEN}\n{question}"
    tries = []
    if tokenizer.chat_template:
        tries.append((tokenizer.chat_template, [{"role": "user", "content": content}]))
        tries.append((tokenizer.chat_template, [{"role": "user", "content": [
            {"type": "video"}, {"type": "text", "text": question.replace(VIDEO_TOKEN, "")}]}]))
    tries.append((VICUNA_CHAT_TEMPLATE, [{"role": "user", "content": content}]))
    for template, messages in tries:
        try:
            text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that cannot render this form
            continue
        if text.count(VIDEO_TOKEN) == 1:
            return text
    raise UsageError("cannot build a prompt with one <video> token with this tokenizer's chat template")


def prompt_ids(bundle: VideoBundle, question: str) -> list[int]:
    """Token ids of the templated prompt with ONE ``<video>`` placeholder (not yet expanded)."""
    ids = bundle.tokenizer(chat_text(bundle.tokenizer, question)).input_ids
    if ids.count(bundle.video_token_id) != 1:
        raise UsageError(f"the prompt must hold exactly one {VIDEO_TOKEN} token after tokenisation "
                         f"(found {ids.count(bundle.video_token_id)}); check the model's tokenizer")
    return list(ids)


def count_input_tokens(bundle: VideoBundle, question: str, n_frames: int) -> int:
    """Prompt length in tokens after the video placeholder is expanded (no video decoding)."""
    return len(prompt_ids(bundle, question)) - 1 + n_frames * bundle.tokens_per_frame


def build_inputs(bundle: VideoBundle, frames, question: str) -> VideoInputs:
    """Pixel values and expanded input ids for ``frames`` (``[F, H, W, 3]`` uint8) and ``question``."""
    n = int(frames.shape[0])
    if bundle.preprocess == "hf":
        pv = bundle.hf_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
    else:
        pv = preprocess_frames(frames, bundle.pixel)
    ids = prompt_ids(bundle, question)
    at = ids.index(bundle.video_token_id)
    n_img = n * bundle.tokens_per_frame
    expanded = ids[:at] + [bundle.video_token_id] * n_img + ids[at + 1 :]
    frame_of = torch.full((len(expanded),), -1, dtype=torch.long)
    frame_of[at : at + n_img] = torch.arange(n).repeat_interleave(bundle.tokens_per_frame)
    return VideoInputs(torch.tensor([expanded]), pv, frame_of, n)


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------

@dataclass
class VideoGeneration:
    tokens: list[int]
    vision_s: float
    prefill_s: float
    decode_s: float


def _stop_ids(bundle: VideoBundle) -> set[int]:
    from harness.generation import stop_token_ids

    return stop_token_ids(bundle.model, bundle.tokenizer)


@torch.inference_mode()
def generate_with_cache(bundle: VideoBundle, inputs: VideoInputs, cache, max_new_tokens: int,
                        chunk_size: int = 512, stop_ids: set[int] | None = None) -> VideoGeneration:
    """Greedy generation with the language model reading/writing ``cache``.

    The video features are computed once and scattered into the prompt embeddings; the prompt is
    then fed ``chunk_size`` tokens at a time (positions come from the cache: tokens seen).
    """
    model = bundle.model
    stop_ids = _stop_ids(bundle) if stop_ids is None else stop_ids
    device, dtype = bundle.device, bundle.dtype
    ids = inputs.input_ids.to(device)
    start = time.perf_counter()
    feats = model.get_video_features(pixel_values_videos=inputs.pixel_values_videos.to(device, dtype))
    feats = getattr(feats, "pooler_output", feats)
    feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])
    embeds = model.get_input_embeddings()(ids)
    mask = ids == bundle.video_token_id
    if int(mask.sum()) != feats.shape[0]:
        raise RuntimeError(f"{int(mask.sum())} video placeholders but {feats.shape[0]} video features; "
                           "tokens_per_frame does not match the model")
    embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), feats.to(embeds.dtype))
    vision_s = time.perf_counter() - start

    start = time.perf_counter()
    logits = None
    for s in range(0, embeds.shape[1], chunk_size):
        out = model(inputs_embeds=embeds[:, s : s + chunk_size], past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        logits = out.logits[:, -1]
    prefill_s = time.perf_counter() - start
    tokens: list[int] = []
    start = time.perf_counter()
    for step in range(max_new_tokens):
        token = int(logits[0].argmax(-1))
        if token in stop_ids:
            break
        tokens.append(token)
        if step + 1 == max_new_tokens:
            break
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1]
    return VideoGeneration(tokens, vision_s, prefill_s, time.perf_counter() - start)


@torch.inference_mode()
def generate_unwrapped(bundle: VideoBundle, inputs: VideoInputs, max_new_tokens: int) -> list[int]:
    """The stock transformers path: ``model.generate`` (greedy, sdpa attention, its own cache)."""
    model = bundle.model
    current = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        ids = inputs.input_ids.to(bundle.device)
        stop = sorted(_stop_ids(bundle))
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values_videos=inputs.pixel_values_videos.to(bundle.device, bundle.dtype),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=stop or None, pad_token_id=stop[0] if stop else None)
    finally:
        model.set_attn_implementation(current)
    new = out[0, ids.shape[1] :].tolist()
    cut = next((i for i, t in enumerate(new) if t in set(stop)), len(new))
    return new[:cut]


# ------------------------------------------------------------------------------------------------
# Image vs text accounting
# ------------------------------------------------------------------------------------------------

def modality_stats(cache, frame_of: torch.Tensor) -> dict:
    """Image vs text tokens seen and kept (per KV head, averaged over heads and evicting layers).

    Positions past the prompt (generated tokens) count as text. ``frames_kept`` is, per frame, the
    fraction of its tokens kept (mean over layers and heads); ``frames_dropped`` counts frames with
    under half of their tokens left. ``layers`` gives the per-layer image/text kept counts.
    """
    layers = cache.eviction_layers
    n_frames = int(frame_of.max()) + 1 if frame_of.numel() and int(frame_of.max()) >= 0 else 0
    n_image = int((frame_of >= 0).sum())
    seen = max((layer.seen for layer in layers), default=0)
    per_layer, image_kept, text_kept, frame_fraction = [], [], [], []
    for layer in layers:
        if layer.positions is None:
            continue
        pos = layer.positions  # [b, h, n]
        valid = layer.valid if layer.valid is not None else torch.ones_like(pos, dtype=torch.bool)
        table = torch.full((max(seen, frame_of.numel()),), -1, dtype=torch.long, device=pos.device)
        table[: frame_of.numel()] = frame_of.to(pos.device)
        frame = table[pos.clamp(max=table.numel() - 1)]
        is_img = (frame >= 0) & valid
        img = is_img.sum(-1).float().mean()  # mean over batch and heads
        txt = (valid & (frame < 0)).sum(-1).float().mean()
        image_kept.append(float(img))
        text_kept.append(float(txt))
        if n_frames:
            counts = torch.zeros(*pos.shape[:2], n_frames, device=pos.device)
            counts.scatter_add_(-1, frame.clamp(min=0), is_img.float())
            frame_fraction.append(counts.mean((0, 1)) / max(1, n_image // n_frames))
        per_layer.append({"layer": layer.layer_idx, "image_kept": round(float(img), 3), "text_kept": round(float(txt), 3)})
    mean = lambda xs: round(sum(xs) / len(xs), 3) if xs else 0.0
    text_seen = seen - n_image
    out = {
        "image_seen": n_image,
        "text_seen": text_seen,
        "image_kept": mean(image_kept),
        "text_kept": mean(text_kept),
        "image_kept_fraction": round(mean(image_kept) / n_image, 4) if n_image else None,
        "text_kept_fraction": round(mean(text_kept) / text_seen, 4) if text_seen > 0 else None,
        "layers": per_layer,
    }
    if frame_fraction:
        ff = torch.stack(frame_fraction).mean(0)
        out["frames_kept"] = [round(float(x), 3) for x in ff]
        out["frames_dropped"] = int((ff < 0.5).sum())
    return out


def cache_summary(cache, frame_of: torch.Tensor) -> dict:
    """The record's ``cache`` entry: the language suites' keys plus ``modality`` (image vs text)."""
    return {**cache.summary(), "modality": modality_stats(cache, frame_of)}


def run_sample(bundle: VideoBundle, frames, question: str, policy, max_new_tokens: int, n_up: int = 512,
               cache_mode: str = "original", prefill_chunk: int | None = None) -> dict:
    """One question about one video under ``policy``: prediction, new_tokens, cache, timing, tokens."""
    from harness.cache import EvictionCache

    inputs = build_inputs(bundle, frames, question)
    cache = EvictionCache(bundle.model.config, policy, n_up=n_up, mode=cache_mode)
    gen = generate_with_cache(bundle, inputs, cache, max_new_tokens, prefill_chunk or n_up)
    return {
        "prediction": bundle.tokenizer.decode(gen.tokens, skip_special_tokens=True),
        "tokens": gen.tokens,
        "new_tokens": len(gen.tokens),
        "cache": cache_summary(cache, inputs.frame_of),
        "timing": {"vision_s": round(gen.vision_s, 4), "prefill_s": round(gen.prefill_s, 4),
                   "decode_s": round(gen.decode_s, 4), "policy_s": round(cache.policy_seconds(), 4)},
        "input_tokens": int(inputs.input_ids.shape[1]),
        "image_tokens": int(inputs.image_mask.sum()),
        "text_tokens": int((~inputs.image_mask).sum()),
    }
