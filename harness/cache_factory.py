"""What the runner hands a suite that drives its own model loop (video, D4RL): a cache factory.

``tasks/`` never imports ``harness/`` (the one-way flow of ARCHITECTURE.md). A suite with its own
loop (``Suite.evaluate_sample``) gets a :class:`CacheFactory` instead: it routes a model's attention
through the eviction kernel (:meth:`attach`) and makes a fresh :class:`harness.cache.EvictionCache`
for each sample (:meth:`new`) with the run's policy, ``n_up`` and cache mode. The structural type
the suites code against is :class:`tasks.base.CacheFactory`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.attention import attach
from harness.cache import EvictionCache, summarise_layers


@dataclass(frozen=True)
class CacheFactory:
    """``policy`` (one sample's policy, budget resolved), ``n_up`` (tokens between policy updates)
    and ``mode`` (``"original"`` or ``"faithful"``, see :class:`harness.cache.EvictionCache`)."""

    policy: object
    n_up: int = 512
    mode: str = "original"

    def attach(self, model) -> None:
        """Route ``model``'s attention through the eviction kernel (idempotent)."""
        attach(model)

    def new(self, config) -> EvictionCache:
        """A fresh, empty eviction cache for a model with this ``config`` (``PretrainedConfig``)."""
        return EvictionCache(config, self.policy, n_up=self.n_up, mode=self.mode)

    @staticmethod
    def summarise(layer_stats: list[dict]) -> dict:
        """A record's ``cache`` entry from ``cache.stats()`` (see :func:`harness.cache.summarise_layers`)."""
        return summarise_layers(layer_stats)
