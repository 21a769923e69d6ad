"""``python -m harness.lm_eval_cli ARGS``: lm-eval's own command line with the ``evicting-hf`` model registered.

lm-eval 0.4.13 has no entry-point group for third-party models, so this wrapper imports
:mod:`harness.lm_eval_model` (which registers ``evicting-hf``) and hands ``ARGS`` to lm-eval's CLI
unchanged, e.g.::

    python -m harness.lm_eval_cli run --model evicting-hf \\
        --model_args pretrained=smollm2,policy=h2o,cache_size=1024 --tasks gsm8k --limit 10

``evicting-hf``'s ``model_args`` are checked before lm-eval loads any task or data; bad ones (unknown
policy or key, bad numbers, a missing model) print ``error: <one line>`` and exit 2.
"""

from __future__ import annotations

import sys

from harness.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging

        from harness.lm_eval_model import NAME, model_settings  # importing registers evicting-hf
    except ImportError as err:
        print(f"error: lm-evaluation-harness is not installed: pip install -e '.[lm-eval]' ({err})", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # what lm-eval's own entry point (lm_eval.__main__.cli_evaluate) does
    try:
        setup_logging()
        parser = HarnessCLI()
        args = parser.parse_args()
        if getattr(args, "model", None) == NAME and isinstance(getattr(args, "model_args", None), dict):
            model_settings(**args.model_args)  # fail fast, before lm-eval loads tasks and data
        parser.execute(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
