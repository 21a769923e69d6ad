"""Prompt and pixel inputs of a video-LLM: the templated prompt with its ``<video>`` placeholder
expanded, each position marked image (with its frame) or text, and the frames' pixel values.

Prompt format follows lmms-eval's ``llava_hf`` model (plain transformers): the user turn is
``"<video>\\n" + question``; the tokenizer's chat template is applied when it has one, else the
Vicuna template lmms-eval falls back to; the single ``<video>`` token is expanded to
``n_frames x tokens_per_frame`` placeholders, as the transformers processor does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.base import UsageError
from tasks.video.vlm import VIDEO_TOKEN, VideoBundle

# lmms-eval's llava_hf fallback when the tokenizer has no chat template
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious user and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "USER: {{ message['content'] }} {% elif message['role'] == 'user' %}USER: {{ message['content'] }} {% else %} "
    "ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass
class VideoInputs:
    input_ids: torch.Tensor  # [1, L] with the <video> placeholder expanded
    pixel_values_videos: torch.Tensor  # [1, F, 3, H, W]
    frame_of: torch.Tensor  # [L] long: frame index of each position, -1 for text
    n_frames: int

    @property
    def image_mask(self) -> torch.Tensor:
        return self.frame_of >= 0


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
