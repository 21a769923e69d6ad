"""lm-evaluation-harness model ``evicting-hf``: a Hugging Face decoder whose KV cache is the harness's
:class:`~harness.cache.EvictionCache` (chunked prefill, a policy every ``n_up`` tokens).

lm-eval (checked with 0.4.13) discovers no third-party models through entry points, so the class is
registered when this module is imported (``pip install -e '.[lm-eval]'``)::

    python -m harness.lm_eval_cli run --model evicting-hf \\
        --model_args pretrained=smollm2,policy=h2o,cache_size=1024 --tasks TASK [--include_path DIR]

or, in Python, ``import harness.lm_eval_model`` before ``lm_eval.simple_evaluate(model="evicting-hf", ...)``.

``model_args``: ``pretrained`` (``smollm2`` [default], ``gemma``, ``random:<arch>`` [random weights: speed
and memory only], a folder, a ``.gguf`` file or a hub id;
loaded by :func:`harness.models.load_model`), ``policy`` (``full`` [default], ``h2o``, ``l2``,
``streaming``, ``namm_bam``, ...), ``cache_size`` (tokens, or a fraction < 1 of each prompt),
``n_up`` (512), ``prefill_chunk`` (n_up), ``cache_mode`` (original), ``policy_checkpoint``,
``recent_window``, ``n_sink``, ``namm_threshold``, ``namm_gamma``, ``device``, ``dtype`` (``auto``:
bfloat16 on CUDA, float32 elsewhere; or float32, bfloat16, float16),
``max_length`` (the model's), ``max_gen_toks`` (256, when a task sets none), ``truncation`` (``left``:
lm-eval's rule [default]; ``middle``: the harness's paper rule, for generation), ``add_bos_token``,
``stats_path`` (a JSON-lines file receiving one line of cache statistics per request).

Every request runs on a fresh cache: ``generate_until`` through :func:`harness.generation.greedy_generate`
(greedy only; ``until`` strings are cut afterwards, exactly as lm-eval's ``hf`` model cuts them),
``loglikelihood`` / ``loglikelihood_rolling`` by scoring the continuation's logits computed chunk by
chunk through the same cache, so the continuation is read under the policy's evictions. Per request the
cache statistics (:meth:`EvictionCache.summary`) are kept in ``self.stats``, logged as a summary, and
returned by :meth:`get_model_info` (lm-eval writes it into ``results["config"]``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lm_eval.models  # noqa: F401  (lm-eval registers its own models only into an EMPTY registry)
import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)
from tqdm import tqdm

from harness.cache import EvictionCache
from harness.errors import UsageError, choose
from harness.generation import greedy_generate, middle_crop
from tasks.base import cache_kwargs, stop_token_ids

NAME = "evicting-hf"
log = logging.getLogger("lm_eval.evicting_hf")  # shown by lm-eval's log handler


def _none(value):
    return None if value in (None, "", "None", "none") else value


def _number(cast, value):
    return None if _none(value) is None else cast(value)


@dataclass
class Settings:
    """Validated ``model_args`` (see :func:`model_settings`)."""

    pretrained: str
    config: object  # harness.runner.RunConfig: policy, cache and device settings
    policy: object  # the run's policy, built once
    max_length: int | None
    max_gen_toks: int
    truncation: str
    add_bos_token: bool | None
    stats_path: Path | None


def model_settings(pretrained: str = "smollm2", policy: str = "full", cache_size=None, n_up: int = 512,
                   prefill_chunk=None, cache_mode: str = "original", policy_checkpoint=None, recent_window=None,
                   n_sink=None, namm_threshold=None, namm_gamma=None, device=None, dtype: str = "auto",
                   max_length=None, max_gen_toks: int = 256, truncation: str = "left", add_bos_token=None,
                   stats_path=None, batch_size=1, max_batch_size=None, **unknown) -> Settings:
    """Check ``model_args`` without loading the model; bad ones raise :class:`UsageError` (one line)."""
    import policies
    from harness.cache import MODES
    from harness.devices import resolve_dtype
    from harness.runner import RunConfig, make_run_policy

    if unknown:
        raise UsageError(f"{NAME}: unknown model_args {', '.join(sorted(unknown))}; see harness/lm_eval_model.py")
    choose("policy", policies.base_name(str(policy)), policies.POLICIES)  # kvpress:<Press>[:ratio] → kvpress
    choose("cache mode", str(cache_mode), MODES)
    choose("truncation", str(truncation), ("left", "middle"))
    choose("dtype", str(dtype), ("auto", "float32", "bfloat16", "float16"))
    if str(batch_size) != "1":
        log.warning("%s evaluates one request at a time; batch_size=%s is ignored", NAME, batch_size)
    device = str(_none(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's CLI passes cuda:0 by default
        log.warning("%s: CUDA is not available; running on cpu instead of %s", NAME, device)
        device = "cpu"
    dtype = resolve_dtype(str(dtype), device)  # auto: bfloat16 on CUDA, float32 elsewhere
    try:
        config = RunConfig(
            policy=str(policy), cache_size=_number(float, cache_size), n_up=int(n_up),
            prefill_chunk=_number(int, prefill_chunk), cache_mode=str(cache_mode),
            policy_checkpoint=_none(policy_checkpoint), recent_window=_number(int, recent_window),
            n_sink=_number(int, n_sink), namm_threshold=_number(float, namm_threshold),
            namm_gamma=_number(float, namm_gamma), device=device, dtype=str(dtype),
        )
        limits = _number(int, max_length), int(max_gen_toks)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{NAME}: bad model_args value ({err})") from None
    if config.cache_size is not None and config.cache_size <= 0:
        raise UsageError(f"{NAME}: cache_size must be positive tokens or a fraction in (0, 1)")
    if min(config.n_up, config.prefill_chunk or 1, limits[0] or 1, limits[1]) < 1:
        raise UsageError(f"{NAME}: n_up, prefill_chunk, max_length and max_gen_toks must be positive")
    return Settings(str(pretrained), config, make_run_policy(config), *limits, str(truncation), add_bos_token,
                    Path(stats_path) if _none(stats_path) else None)


@register_model(NAME)
class EvictingHFLM(TemplateLM):
    """A causal LM (batch size 1) evaluated through the harness's eviction cache. See the module docstring."""

    def __init__(self, **model_args) -> None:
        """``model_args``: see :func:`model_settings` and the module docstring."""
        super().__init__()
        from harness.attention import attach
        from harness.models import load_model

        settings = model_settings(**model_args)
        self.config, self.policy = settings.config, settings.policy
        self._device = torch.device(self.config.device)
        self._model, self.tokenizer, self.source = load_model(settings.pretrained, device=self.config.device,
                                                             dtype=self.config.dtype)
        attach(self._model)
        self.stop_ids = stop_token_ids(self._model, self.tokenizer)
        self._max_length, self._max_gen_toks = settings.max_length, settings.max_gen_toks
        self.truncation, self.add_bos_token = settings.truncation, settings.add_bos_token
        self.stats_path = settings.stats_path
        self.stats: list[dict] = []

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """As lm-eval's, but ``model_args`` win over the run's settings (lm-eval's CLI always passes
        ``device``, ``cuda:0`` by default; the base class would fail on ``device`` given twice)."""
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    # ---- properties lm-eval reads -----------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or resolve_max_length(self._model.config, self.tokenizer)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"eviction": {"model": self.source.name, "policy": self.policy.describe(),
                             **{k: getattr(self.config, k) for k in ("cache_size", "n_up", "cache_mode")},
                             **self.cache_summary()}}

    # ---- tokenisation (as lm-eval's ``hf`` model) -------------------------------------------------
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special = False
        return self.tokenizer.encode(string, **({} if special is None else {"add_special_tokens": special}))

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ---- requests ----------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc=f"{NAME} generate_until"):
            context, gen_kwargs = req.args[0], req.args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs or {}, self.max_gen_toks)
            if kwargs.get("do_sample"):
                lm_utils.warning_once(log, f"{NAME} decodes greedily; do_sample/temperature are ignored")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs["max_gen_toks"])
            ids = self.tok_encode(context)
            budget = self.max_length - max_new
            if budget < 1:
                raise UsageError(f"{NAME}: max_gen_toks {max_new} leaves no room in max_length {self.max_length}")
            ids = middle_crop(ids, budget) if self.truncation == "middle" else ids[-budget:]
            cache = self._new_cache(len(ids))
            gen = greedy_generate(self._model, torch.tensor([ids], device=self._device), cache, max_new,
                                  self.config.prefill_chunk or self.config.n_up, self.stop_ids)
            text = postprocess_generated_text(self.tok_decode(gen.tokens), until, None)
            self._record(req, "generate_until", len(ids), len(gen.tokens), cache,
                         {"prefill_s": round(gen.prefill_s, 4), "decode_s": round(gen.decode_s, 4)})
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        self._log_summary("generate_until")
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """``[(key, context ids, continuation ids)]`` → ``[(log p(continuation), is greedy)]``."""
        out = []
        for key, context_enc, continuation_enc in tqdm(requests, disable=disable_tqdm or self.rank != 0,
                                                       desc=f"{NAME} loglikelihood"):
            inputs = (context_enc + continuation_enc)[-(self.max_length + 1):][:-1]
            answer = self._score(inputs, continuation_enc)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
            out.append(answer)
        self._log_summary("loglikelihood")
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc=f"{NAME} loglikelihood_rolling"):
            (string,) = req.args[:1]
            windows = map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            scored = self._loglikelihood_tokens([(None, c, p) for c, p in windows], disable_tqdm=True)
            total = sum(ll for ll, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out

    # ---- internals ---------------------------------------------------------------------------------
    def _new_cache(self, prompt_tokens: int) -> EvictionCache:
        from harness.runner import policy_for_sample

        policy = policy_for_sample(self.policy, self.config, prompt_tokens)
        return EvictionCache(self._model.config, policy, n_up=self.config.n_up, mode=self.config.cache_mode)

    @torch.inference_mode()
    def _score(self, inputs: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Feed ``inputs`` chunk by chunk through a fresh cache; score the last ``len(continuation)`` logits."""
        cache = self._new_cache(len(inputs))
        ids = torch.tensor([inputs], device=self._device)
        chunk, first_scored = self.config.prefill_chunk or self.config.n_up, len(inputs) - len(continuation)
        pieces = []
        for s in range(0, len(inputs), chunk):
            e = min(s + chunk, len(inputs))
            keep = e - max(s, first_scored)  # scored positions in this chunk (logits_to_keep=0 would mean all)
            logits = self._model(input_ids=ids[:, s:e], **cache_kwargs(self._model, cache), use_cache=True,
                                 logits_to_keep=max(keep, 1)).logits
            if keep > 0:
                pieces.append(logits[0, -keep:])
        logprobs = F.log_softmax(torch.cat(pieces).float(), dim=-1)
        target = torch.tensor(continuation, device=logprobs.device)
        answer = (float(logprobs.gather(-1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all()))
        self._record(None, "loglikelihood", len(inputs), 0, cache, {})
        return answer

    def _record(self, req, kind: str, prompt_tokens: int, new_tokens: int, cache: EvictionCache, timing: dict) -> None:
        seen = max((layer.seen for layer in cache.eviction_layers), default=prompt_tokens)  # tokens fed
        record = {"request": kind, "task": getattr(req, "task_name", None), "doc_id": getattr(req, "doc_id", None),
                  "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "tokens_seen": seen,
                  "evicted": any(layer.get("logical", seen) < seen for layer in cache.stats()),
                  "budget": getattr(cache.policy, "budget", None), "cache": cache.summary(),
                  "timing": {**timing, "policy_s": round(cache.policy_seconds(), 4)}}
        self.stats.append(record)
        if self.stats_path is not None:
            self.stats_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.stats_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def cache_summary(self) -> dict:
        """Mean over the requests so far of each request's final cache size (physical slots and
        logical per-head tokens, averaged over evicting layers), and how many requests evicted tokens."""
        n = len(self.stats)
        if not n:
            return {"requests": 0}
        layers = [s["cache"] for s in self.stats]
        return {"requests": n,
                "cache_physical_mean": round(sum(c["physical_mean"] for c in layers) / n, 3),
                "cache_logical_mean": round(sum(c["logical_mean"] for c in layers) / n, 3),
                "prompt_tokens_mean": round(sum(s["prompt_tokens"] for s in self.stats) / n, 1),
                "requests_evicted": sum(s["evicted"] for s in self.stats)}

    def _log_summary(self, kind: str) -> None:
        log.info("%s %s: %s", NAME, kind, self.cache_summary())


__all__ = ["NAME", "EvictingHFLM", "Settings", "model_settings"]
