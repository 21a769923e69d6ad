"""lmms-eval model ``namm_video``: a transformers video-LLM whose language model runs with our
eviction cache. Imported only when lmms-eval is installed (it imports lmms_eval).

Registration with lmms-eval (see ``tasks/video/README.md``):

- entry point (lmms-eval's registry v2, checked with lmms-eval 0.7.3): group ``lmms_eval.models``,
  name ``namm_video``, value ``harness.lmms_eval_plugin:manifests`` (declared in this project's
  ``pyproject.toml``);
- in-process: importing this module also registers the class with ``lmms_eval.api.registry``
  (the decorator older lmms-eval versions look up).

Usage::

    lmms-eval --model namm_video \\
        --model_args pretrained=llava-hf/LLaVA-NeXT-Video-7B-hf,policy=namm_bam,max_frames_num=48 \\
        --tasks longvideobench_val_v,mlvu_dev --batch_size 1

``model_args``: ``pretrained`` (hub id or folder), ``policy`` (full, h2o, l2, streaming, namm_bam,
namm_mlp), ``cache_size`` (tokens per KV head, or a fraction < 1 of the prompt), ``n_up`` (512),
``cache_mode`` (original), ``checkpoint`` (NAMM checkpoint), ``namm_threshold`` (absolute; default:
the policy's threshold plus ``namm_threshold_shift``, 5 — the paper's shift for video),
``recent_window``, ``max_frames_num`` (48), ``prefill_chunk`` (n_up), ``device``, ``dtype``
(default ``float16`` on CUDA, ``float32`` on CPU; ``auto``: ``bfloat16`` on CUDA, ``float32`` on CPU,
the rule of the harness's commands), ``preprocess`` (auto), ``stats_path`` (a JSON-lines
file receiving one record per answered question: cache statistics, image vs text tokens).
Generation is greedy with the task's ``max_new_tokens``; ``until`` strings are ignored, as by
lmms-eval's ``llava_hf``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from harness.cache_factory import CacheFactory
from tasks.video.base import NAMM_THRESHOLD_SHIFT, namm_video_threshold
from tasks.video.frames import read_frames
from tasks.video.generate import run_sample
from tasks.video.inputs import count_input_tokens
from tasks.video.vlm import VideoBundle, load_video_model

NAME = "namm_video"


def _none(value):
    return None if value in (None, "", "None", "none") else value


@register_model(NAME)
class NAMMVideo(lmms):
    """LLaVA-NeXT-Video (transformers) with the harness's eviction cache on its language model."""

    is_simple = True

    def __init__(self, pretrained: str = "llava-hf/LLaVA-NeXT-Video-7B-hf", policy: str = "full",
                 cache_size=None, n_up: int = 512, cache_mode: str = "original", checkpoint=None,
                 namm_threshold=None, namm_threshold_shift: float = NAMM_THRESHOLD_SHIFT, namm_gamma=None,
                 recent_window=None,
                 max_frames_num: int = 48, prefill_chunk=None, device=None, dtype=None, preprocess: str = "auto",
                 stats_path=None, batch_size=1, max_batch_size=None, **kwargs) -> None:
        super().__init__()
        from policies import POLICIES, base_name, make_policy

        if kwargs:
            raise ValueError(f"{NAME}: unknown model_args {', '.join(sorted(kwargs))}")
        if int(batch_size or 1) != 1:
            raise ValueError(f"{NAME}: only batch_size=1 is supported")
        if base_name(policy) not in POLICIES:  # kvpress:<Press>[:ratio] names a kvpress press
            raise ValueError(f"{NAME}: unknown policy {policy!r}; choose one of {', '.join(sorted(POLICIES))}")
        device = _none(device) or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _none(dtype) or ("float16" if str(device).startswith("cuda") else "float32")
        if dtype == "auto":
            from harness.devices import resolve_dtype

            dtype = resolve_dtype(dtype, str(device))
        self._device = torch.device(device)
        self.bundle: VideoBundle = load_video_model(str(pretrained), device=self._device, dtype=dtype,
                                                    preprocess=preprocess)
        self.n_up, self.cache_mode = int(n_up), str(cache_mode)
        self.prefill_chunk = int(prefill_chunk) if _none(prefill_chunk) else None
        self.max_frames_num = int(max_frames_num)
        cache_size = float(cache_size) if _none(cache_size) is not None else None
        self.cache_fraction = cache_size if cache_size is not None and cache_size < 1 else None
        options = {"n_up": self.n_up, "checkpoint": _none(checkpoint), "gamma": _none(namm_gamma),
                   "recent_window": int(recent_window) if _none(recent_window) is not None else None,
                   "budget": int(cache_size) if cache_size is not None and cache_size >= 1 else None}
        # NAMM: the paper's video threshold, the same rule as the runner's video suites
        options["threshold"] = namm_video_threshold(policy, _none(namm_threshold), float(namm_threshold_shift))
        self.policy = make_policy(policy, **{k: v for k, v in options.items() if v is not None})
        self.stats_path = Path(stats_path) if _none(stats_path) else None
        self.stats: list[dict] = []

    # ---- lmms API --------------------------------------------------------------------------------
    @property
    def model(self):
        return self.bundle.model

    @property
    def tokenizer(self):
        return self.bundle.tokenizer

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self):
        return 1

    def _policy_for(self, prompt: str):
        if self.cache_fraction is None or not hasattr(self.policy, "budget"):
            return self.policy
        tokens = count_input_tokens(self.bundle, prompt, self.max_frames_num)
        return dataclasses.replace(self.policy, budget=max(1, math.ceil(self.cache_fraction * tokens)))

    def generate_until(self, requests) -> list[str]:
        from tqdm import tqdm

        out = []
        for req in tqdm(requests, disable=self.rank != 0, desc=NAME):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            videos = [v for v in visuals if isinstance(v, (str, Path))]
            if len(videos) != 1:
                raise ValueError(f"{NAME}: expected one video per question, got {len(visuals)} visual(s) "
                                 f"for {task} doc {doc_id}")
            frames, info = read_frames(videos[0], self.max_frames_num)
            max_new = int((gen_kwargs or {}).get("max_new_tokens", 32))
            caches = CacheFactory(self._policy_for(context), self.n_up, self.cache_mode)
            result = run_sample(self.bundle, frames, context, caches, max_new, self.prefill_chunk)
            out.append(result["prediction"])
            record = {"task": task, "doc_id": doc_id, "prediction": result["prediction"],
                      "new_tokens": result["new_tokens"], "input_tokens": result["input_tokens"],
                      "image_tokens": result["image_tokens"], "budget": getattr(self._policy_for(context), "budget", None),
                      "cache": result["cache"], "timing": result["timing"],
                      "video": {"total_frames": info["total_frames"], "indices": info["indices"]}}
            self.stats.append(record)
            if self.stats_path is not None:
                self.stats_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.stats_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), result["prediction"])
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{NAME}: loglikelihood is not supported (the video tasks generate)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{NAME}: multi-round generation is not supported")
