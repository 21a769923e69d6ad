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


def get_suite(name: str, options: dict | None = None) -> Suite:
    """Instantiate suite ``name`` with constructor ``options`` (``KeyError`` if unknown,
    ``ValueError`` naming the accepted options if an option is not one of them)."""
    cls = SUITES[name]
    options = options or {}
    check_options(name, cls, options)
    return cls(**options)


def check_options(name: str, cls, options: dict, positional: tuple[str, ...] = ()) -> None:
    """``ValueError`` naming the accepted options when ``options`` holds one ``cls.__init__`` does not
    take (``positional``: constructor arguments that are not options)."""
    import inspect

    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *positional)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"suite {name} has no option {unknown[0]!r}; options: {', '.join(accepted) or 'none'}")


from tasks import choubun, infinitebench, jsonl_suite, longbench, niah, ruler, video  # noqa: E402,F401  (suites register on import)
from tasks.d4rl import suite as _d4rl  # noqa: E402,F401  (gymnasium/mujoco/minari load only when used)
from tasks.scoring import score  # noqa: E402

__all__ = ["SUITES", "Sample", "Suite", "check_options", "get_suite", "register_suite", "score"]
