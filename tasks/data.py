"""Reading benchmark data: local copies in the official formats, or the hub through ``datasets``.

Used by the suites that load data (LongBench, InfiniteBench, ChouBun). Nothing here knows a
benchmark: callers pass file names, hub ids and the fields a record must have.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
from pathlib import Path

from tasks.base import DataError

HUB_HOST = ("huggingface.co", 443)


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection (checked once per process; never in offline mode).

    Without this check ``datasets`` retries for about 25 s per dataset on a machine with no network.
    """
    if hub_offline():
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), validate=None) -> list[dict]:
    """Records of a JSON-lines file; each must be an object holding the ``required`` fields.

    Blank lines are skipped. A bad line raises :class:`DataError` naming ``file:line``;
    ``validate(record, "file:line")`` may check more and raise it too.
    """
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not valid JSON ({err.msg}); fix or remove the line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataError(f"{path}:{n}: record lacks field(s) {', '.join(missing)}; "
                                f"expected the official fields {', '.join(required)}")
            if validate is not None:
                validate(rec, f"{path}:{n}")
            out.append(rec)
    return out


def find_file(data_dir: str | Path | None, names: list[str]) -> Path | None:
    """The first of ``names`` (relative paths, tried in order) that exists under ``data_dir``."""
    if not data_dir:
        return None
    for name in names:
        p = Path(data_dir) / name
        if p.is_file():
            return p
    return None


def _hub_cache_dirs() -> tuple[Path, Path]:
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = Path(os.environ.get("HF_HOME") or xdg / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or home / "hub")
    ds = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets")
    return hub, ds


def hub_cached(repo: str) -> bool:
    """Whether hub dataset ``repo`` has files in the local hub or ``datasets`` cache (a cheap check:
    no import of ``datasets``)."""
    org, _, name = repo.partition("/")
    hub, ds = _hub_cache_dirs()
    if (hub / f"datasets--{org}--{name}").is_dir():
        return True
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    try:
        return any(p.is_dir() and re.sub(r"[^a-z0-9]", "", p.name.split("___", 1)[1].lower()) == key
                   for p in ds.glob(f"{org}___*"))
    except OSError:
        return False


def hub_available(repo: str) -> bool:
    """Whether loading ``repo`` from the hub is worth trying: the hub answers or a copy is cached."""
    return hub_reachable() or hub_cached(repo)


def load_hub(repo: str, required: tuple[str, ...] = (), **kwargs) -> list[dict] | None:
    """Records of hub dataset ``repo`` (``datasets.load_dataset(repo, **kwargs)``), or ``None`` when
    the hub is unreachable and the dataset is not in the local ``datasets`` cache.

    Records lacking a ``required`` field raise :class:`DataError`.
    """
    try:
        import datasets
    except ImportError:
        return None
    saved = datasets.config.HF_HUB_OFFLINE
    if not hub_reachable():
        datasets.config.HF_HUB_OFFLINE = True  # offline: datasets can still serve a cached copy
    try:
        ds = datasets.load_dataset(repo, **kwargs)
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return None
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
    rows = [dict(r) for r in ds]
    for i, rec in enumerate(rows):
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"hub dataset {repo} row {i}: lacks field(s) {', '.join(missing)}")
    return rows
