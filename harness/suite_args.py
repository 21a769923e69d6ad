"""``--suite-arg KEY=VALUE``: constructor options of a suite (e.g. ``lengths=2048,4096`` for niah)."""

from __future__ import annotations

from harness.errors import UsageError


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_suite_args(items: list[str] | None) -> dict:
    """``["lengths=2048,4096", "depths=0.5"]`` → ``{"lengths": [2048, 4096], "depths": 0.5}``."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--suite-arg {item!r} must look like KEY=VALUE, e.g. lengths=2048,4096")
        parts = [_value(v) for v in value.split(",") if v]
        options[key] = parts if "," in value else (parts[0] if parts else "")
    return options


def suite_args_of(args) -> dict:
    """``--suite-arg`` values plus the jsonl suite's ``--data`` and ``--metric`` flags."""
    options = parse_suite_args(args.suite_arg)
    for flag in ("data", "metric"):
        value = getattr(args, flag, None)
        if value is not None:
            if args.suite != "jsonl":
                raise UsageError(f"--{flag} is for --suite jsonl (your own records); suite {args.suite} takes "
                                 "--data-dir or --suite-arg")
            options[flag] = value
    return options


def load_suite(name: str, options: dict):
    """The suite with its options; bad names or options become one-line usage errors."""
    import tasks as suites
    from harness.errors import choose
    from tasks.lm_eval_suite import is_lm_eval_suite, load_lm_eval_suite

    if not is_lm_eval_suite(name):  # lm-eval:<task> names an lm-evaluation-harness task
        choose("suite", name, [*suites.SUITES, "lm-eval:<task>"])
    try:
        return load_lm_eval_suite(name, options) if is_lm_eval_suite(name) else suites.get_suite(name, options)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err).splitlines()[0]) from err
