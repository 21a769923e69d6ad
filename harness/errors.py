"""User-facing errors: bad input is reported as one line and exit code 2, never a traceback."""


class UsageError(Exception):
    """Bad input from the user (unknown name, missing path, invalid number).

    The CLI prints ``error: <message>`` on one line and exits with status 2. The message must say
    what to do (e.g. list the valid choices).
    """

    exit_code = 2


def choose(kind: str, name: str, choices) -> None:
    """Raise :class:`UsageError` unless ``name`` is one of ``choices``."""
    choices = sorted(choices)
    if name not in choices:
        raise UsageError(f"unknown {kind} {name!r}; choose one of: {', '.join(choices)}")
