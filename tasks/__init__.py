"""Benchmark suites, registered by name. See :mod:`tasks.base` for the API."""

from __future__ import annotations

from tasks.base import Sample, Suite

SUITES: dict[str, type[Suite]] = {}


def register_suite(name: str):
    """Class decorator: make the suite available as ``--suite name``."""

    def wrap(cls):
        if name in SUITES:
            raise ValueError(f"suite {name!r} registered twice")
        cls.name = name
        SUITES[name] = cls
        return cls

    return wrap


def get_suite(name: str) -> Suite:
    """Instantiate suite ``name`` (``KeyError`` if unknown)."""
    return SUITES[name]()


from tasks import niah  # noqa: E402,F401  (suites register on import)

__all__ = ["SUITES", "Sample", "Suite", "get_suite", "register_suite"]
