"""Eviction policies, registered by name.

A new policy is one short file: a dataclass subclass of :class:`policies.base.Policy` (or
:class:`policies.base.BudgetPolicy`, which only needs a ``score``) decorated with
``@register_policy("name")``, plus an import line at the bottom of this file.
"""

from __future__ import annotations

import dataclasses

from policies.base import BudgetPolicy, LayerView, Policy, Selection, topk_mask

POLICIES: dict[str, type[Policy]] = {}


def register_policy(name: str):
    """Class decorator: make the policy available as ``--policy name``."""

    def wrap(cls):
        if name in POLICIES:
            raise ValueError(f"policy {name!r} registered twice")
        cls.name = name
        POLICIES[name] = cls
        return cls

    return wrap


def base_name(name: str) -> str:
    """The registry name of ``name``: ``"kvpress"`` for ``"kvpress:KnormPress:0.5"``."""
    return name.partition(":")[0]


def make_policy(name: str, **options) -> Policy:
    """Build policy ``name``; options that are ``None`` or not fields of the policy are ignored.

    ``"base:spec"`` names are parsed by the policy class's ``parse_spec(spec)`` into more options
    (e.g. ``kvpress:KnormPress:0.5``). Raises ``KeyError`` for an unknown name (the CLI turns it
    into a one-line error) and ``ValueError`` for a bad spec.
    """
    cls = POLICIES[base_name(name)]
    if ":" in name:
        if not hasattr(cls, "parse_spec"):
            raise ValueError(f"policy {cls.name!r} takes no ':' options, got {name!r}")
        options = {**options, **cls.parse_spec(name.partition(":")[2])}
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def policy_summary(name: str) -> str:
    """First line of the policy's docstring, for ``python -m harness list``."""
    return (POLICIES[name].__doc__ or "").strip().splitlines()[0]


# Built-in policies register themselves on import.
from policies import full, h2o, kvpress_adapter, l2, namm, streaming  # noqa: E402,F401

__all__ = ["POLICIES", "BudgetPolicy", "LayerView", "Policy", "Selection", "base_name", "make_policy", "register_policy", "topk_mask"]
