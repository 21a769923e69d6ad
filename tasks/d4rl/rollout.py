"""Decision Transformer rollouts: token by token through an :class:`EvictionCache`, or uncached.

Each env step adds three tokens in the DT's order ``(R_t, s_t, a_t)``: return-to-go, state,
action, each embedded exactly as ``DecisionTransformerModel.forward`` does (modality linear +
timestep embedding, then ``embed_ln``; GPT-2 position ids all zero). transformers'
``DecisionTransformerModel.forward`` does not take ``past_key_values``, so the cached rollout
drives its GPT-2 encoder (``model.encoder``, a ``DecisionTransformerGPT2Model`` whose attention
goes through transformers' attention interface and ``Cache.update``) directly with
``inputs_embeds`` and an eviction cache made by the runner's cache factory
(:class:`tasks.base.CacheFactory`); no modeling code is forked. The action ``a_t`` is
``predict_action`` of the encoder output at the ``s_t`` token.

``feed="step"`` (default) sends ``[a_{t-1}, R_t, s_t]`` in one forward call per env step;
``feed="token"`` sends one token per call. Both are the same causal computation; the cache runs
its policy every ``n_up`` tokens seen, at the end of the call that crosses the multiple.

The uncached reference recomputes ``DecisionTransformerModel.forward`` (the stock model) over the
whole episode so far (``window=None``; the paper's 3,000-token full context) or over the last
``window`` steps (the original DT evaluation), at every env step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tasks.base import CacheFactory, cache_kwargs

FEEDS = ("step", "token")


@dataclass
class DTSpec:
    """How a DT checkpoint expects its inputs (stored in ``dt_info.json`` next to the weights)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    return_scale: float = 1000.0
    target_return: float = 3600.0

    def norm_state(self, obs) -> torch.Tensor:
        return torch.as_tensor((np.asarray(obs) - self.state_mean) / self.state_std, dtype=torch.float32)


@dataclass
class Rollout:
    episode_return: float
    steps: int
    actions: list[np.ndarray]
    rewards: list[float]
    terminated: bool
    cache_stats: list[dict] | None = None
    physical_max: int = 0  # most tokens any evicting layer physically held at any time
    physical_max_after_update: int = 0  # most tokens held right after a policy update
    n_updates: int = 0
    timing: dict = field(default_factory=dict)
    reference_actions: list[np.ndarray] | None = None  # uncached DT on this rollout's own history


class CachedDT:
    """Feed a DT token by token into an eviction cache (made by ``caches``) and read action predictions."""

    def __init__(self, model, caches: CacheFactory, feed: str = "step"):
        if feed not in FEEDS:
            raise ValueError(f"unknown feed {feed!r}; choose one of {', '.join(FEEDS)}")
        caches.attach(model)  # idempotent: the encoder's attention goes through the eviction kernel
        self.model, self.feed = model, feed
        self.cache = caches.new(model.config)
        self.param = next(model.parameters())
        self.pending: list[torch.Tensor] = []  # embedded tokens not yet fed
        self.physical_max = 0
        self.physical_max_after_update = 0

    def _time(self, t: int) -> torch.Tensor:
        return self.model.embed_timestep(torch.tensor([t], device=self.param.device))[0]

    def _embed(self, kind: str, value: torch.Tensor, t: int) -> torch.Tensor:
        layer = {"return": self.model.embed_return, "state": self.model.embed_state, "action": self.model.embed_action}[
            kind
        ]
        return self.model.embed_ln(layer(value.to(self.param)) + self._time(t))

    def add(self, kind: str, value: torch.Tensor, t: int) -> None:
        self.pending.append(self._embed(kind, value, t))

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """Feed the pending tokens; return the encoder output of the last one (``[hidden]``)."""
        chunks = [self.pending] if self.feed == "step" else [[e] for e in self.pending]
        self.pending = []
        for chunk in chunks:
            x = torch.stack(chunk)[None]  # [1, q, hidden]
            out = self.model.encoder(
                inputs_embeds=x,
                **cache_kwargs(self.model.encoder, self.cache),
                use_cache=True,
                position_ids=torch.zeros(1, x.shape[1], dtype=torch.long, device=x.device),
            )
            self._track()
        return out.last_hidden_state[0, -1]

    def _track(self) -> None:
        for layer in self.cache.eviction_layers:
            n = int(layer.keys.shape[-2])
            self.physical_max = max(self.physical_max, n)
            if layer.n_updates and layer.updated_at == layer.seen:
                self.physical_max_after_update = max(self.physical_max_after_update, n)

    @torch.inference_mode()
    def act(self, rtg: float, state: torch.Tensor, t: int) -> np.ndarray:
        self.add("return", torch.tensor([rtg]), t)
        self.add("state", state, t)
        hidden = self.flush()
        return self.model.predict_action(hidden).float().cpu().numpy()


@torch.inference_mode()
def cached_rollout(
    model,
    spec: DTSpec,
    env,
    seed: int,
    caches: CacheFactory,
    max_steps: int | None = None,
    feed: str = "step",
    reference_window: int | None | bool = False,
) -> Rollout:
    """One episode with the DT fed token by token through an eviction cache made by ``caches``.

    ``reference_window`` (``None``: whole episode; ``N``: last N steps; ``False``: off) also computes,
    at every step, the stock uncached DT's action on exactly this rollout's history (teacher-forced,
    so chaotic env dynamics cannot amplify float rounding differences) into ``reference_actions``.
    """
    dt = CachedDT(model, caches, feed)
    obs, _ = env.reset(seed=int(seed))
    rtg = spec.target_return / spec.return_scale
    actions, rewards, terminated = [], [], False
    check = reference_window is not False
    states, acts, rtgs, reference = [], [], [rtg], []
    limit = max_steps or model.config.max_ep_len
    start = time.perf_counter()
    t = 0
    while t < limit:
        state = spec.norm_state(obs)
        action = dt.act(rtg, state, t)
        if check:
            states.append(state)
            reference.append(uncached_action(model, spec, states, acts, rtgs, t, reference_window))
            acts.append(torch.as_tensor(action))
        obs, reward, term, trunc, _ = env.step(action)
        actions.append(action)
        rewards.append(float(reward))
        rtg -= float(reward) / spec.return_scale
        rtgs.append(rtg)
        t += 1
        if term or trunc:
            terminated = bool(term)
            break
        dt.add("action", torch.as_tensor(action), t - 1)  # a_{t-1} goes with the next step's tokens
    elapsed = time.perf_counter() - start
    policy_s = dt.cache.policy_seconds()
    return Rollout(
        episode_return=float(sum(rewards)),
        steps=t,
        actions=actions,
        rewards=rewards,
        terminated=terminated,
        cache_stats=dt.cache.stats(),
        physical_max=dt.physical_max,
        physical_max_after_update=dt.physical_max_after_update,
        n_updates=sum(layer.n_updates for layer in dt.cache.eviction_layers),
        timing={
            "rollout_s": round(elapsed, 4),
            "policy_s": round(policy_s, 4),
            "steps_per_s": round(t / elapsed, 2) if elapsed else None,
        },
        reference_actions=reference if check else None,
    )


@torch.inference_mode()
def uncached_action(model, spec: DTSpec, states, actions, rtgs, t: int, window: int | None = None) -> np.ndarray:
    """Stock ``DecisionTransformerModel.forward`` over steps ``0..t`` (or the last ``window``)."""
    lo = 0 if window is None else max(0, t + 1 - window)
    param = next(model.parameters())
    s = torch.stack(states[lo : t + 1])[None].to(param)
    act_dim = model.config.act_dim
    a = torch.stack([*actions[lo:t], torch.zeros(act_dim)])[None].to(param) if t >= lo else None
    r = torch.tensor(rtgs[lo : t + 1], dtype=torch.float32)[None, :, None].to(param)
    ts = torch.arange(lo, t + 1, device=param.device)[None]
    out = model(
        states=s,
        actions=a,
        rewards=torch.zeros_like(r),
        returns_to_go=r,
        timesteps=ts,
        attention_mask=torch.ones(1, t + 1 - lo, dtype=torch.long, device=param.device),
        return_dict=True,
    )
    return out.action_preds[0, -1].float().cpu().numpy()


@torch.inference_mode()
def uncached_rollout(
    model, spec: DTSpec, env, seed: int, window: int | None = None, max_steps: int | None = None
) -> Rollout:
    """One episode recomputing the DT over its window at every step (no cache)."""
    obs, _ = env.reset(seed=int(seed))
    states, acts, rtgs = [], [], [spec.target_return / spec.return_scale]
    rewards, terminated = [], False
    limit = max_steps or model.config.max_ep_len
    start = time.perf_counter()
    t = 0
    while t < limit:
        states.append(spec.norm_state(obs))
        action = uncached_action(model, spec, states, acts, rtgs, t, window)
        obs, reward, term, trunc, _ = env.step(action)
        acts.append(torch.as_tensor(action))
        rewards.append(float(reward))
        rtgs.append(rtgs[-1] - float(reward) / spec.return_scale)
        t += 1
        if term or trunc:
            terminated = bool(term)
            break
    elapsed = time.perf_counter() - start
    return Rollout(
        episode_return=float(sum(rewards)),
        steps=t,
        actions=[a.numpy() for a in acts],
        rewards=rewards,
        terminated=terminated,
        timing={
            "rollout_s": round(elapsed, 4),
            "policy_s": 0.0,
            "steps_per_s": round(t / elapsed, 2) if elapsed else None,
        },
    )
