"""Image vs text accounting of a video-LLM's eviction cache.

Every prompt position is marked image (and which frame) or text; at the end each evicting layer's
kept positions (``layer.positions`` of the cache's ``eviction_layers``, real slots only, see
:class:`harness.cache.EvictionLayer`) are counted per kind, per KV head, and averaged over heads
and layers.
"""

from __future__ import annotations

import torch


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
