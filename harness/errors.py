"""User-facing errors: bad input is reported as one line and exit code 2, never a traceback."""

from tasks.base import UsageError  # noqa: F401  (defined with the task API; re-exported)


def choose(kind: str, name: str, choices) -> None:
    """Raise :class:`UsageError` unless ``name`` is one of ``choices``."""
    choices = sorted(choices)
    if name not in choices:
        raise UsageError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")
