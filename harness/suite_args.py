"""``--suite-arg KEY=VALUE``: constructor options of a suite (e.g. ``lengths=2048,4096`` for niah)."""

from __future__ import annotations

import re

from harness.errors import UsageError

#: examples for the options most suites take; others get one by the type expected
EXAMPLES = {"lengths": "2048,4096", "depths": "0,0.5,1", "n_samples": "20", "max_new_tokens": "64",
            "max_steps": "1000", "num_fewshot": "0"}
#: Python's message for int() / float() of a list (``a,b`` given to a one-number option)
_SCALAR = re.compile(r"^(?:int|float)\(\) argument must be .*, not '(?:list|tuple)'$")
#: Python's messages for a failed int() / float() of a string, e.g. ``invalid literal for int()
#: with base 10: 'abc'``: the kind of number and the value's repr
_CAST = re.compile(r"^(?:invalid literal for (int)\(\) with base \d+|could not convert string to (float)): (.+)$")


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
        raise UsageError(cast_error(name, options, err) or str(err).splitlines()[0]) from err


def cast_error(suite: str, options: dict, err: Exception) -> str | None:
    """The one-line message for a ``--suite-arg`` value a suite could not read as a number (Python's
    ``invalid literal for int()`` names no option; nor does ``int()`` of a list, for a one-number
    option given ``a,b``): the option, its value and an example; ``None`` when ``err`` is not such an
    error or no option holds the value."""
    if _SCALAR.match(str(err).strip()):  # int([2048, 4096]): a list given to a one-number option
        lists = [k for k, v in options.items() if isinstance(v, (list, tuple))]
        if len(lists) == 1:
            key = lists[0]
            return (f"--suite-arg {key}={','.join(str(v) for v in options[key])}: suite {suite} option {key} "
                    f"takes one number, not a list; e.g. --suite-arg {key}={EXAMPLES.get(key, '4096').split(',')[0]}")
        return f"suite {suite}: one of the options {', '.join(lists)} takes one number, not a list" if lists else None
    m = _CAST.match(str(err).strip())
    if m is None:
        return None
    kind = "integers" if m.group(1) else "numbers"
    bad = m.group(3)
    for key, value in options.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and repr(v) == bad for v in items):
            shown = ",".join(str(v) for v in items)
            example = EXAMPLES.get(key, "4096" if kind == "integers" else "0.5")
            return (f"--suite-arg {key}={shown}: suite {suite} option {key} takes {kind}, not {bad}; "
                    f"e.g. --suite-arg {key}={example}")
    return None
