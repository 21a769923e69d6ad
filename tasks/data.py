"""Reading benchmark data: local copies in the official formats, or the hub through ``datasets``.

Used by the suites that load data (LongBench, InfiniteBench, ChouBun). Nothing here knows a
benchmark: callers pass file names, hub ids and the fields a record must have.

Hub failures: only "offline / not cached" (:func:`is_offline_error`) means "no hub data here", so
that a suite may fall back to its next source; any other failure (authentication, a schema or
``datasets`` version problem, a full or unwritable disk) is a :class:`DataError` naming its cause
(:func:`hub_failure`), never a silent fallback to generated data.
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

#: exception classes (by name, anywhere in the class's MRO, so that no optional package is imported)
#: that mean the hub could not be reached or the file is not in the local cache
OFFLINE_ERRORS = frozenset({
    "OfflineModeIsEnabled", "LocalEntryNotFoundError",  # huggingface_hub
    "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",  # httpx
    "ConnectionError", "Timeout", "NewConnectionError", "MaxRetryError",  # requests / urllib3
})
#: messages of ``datasets``' cache lookups that mean "not cached" (they raise plain ValueError /
#: FileNotFoundError); compared lower-cased
OFFLINE_MESSAGES = ("offline mode", "couldn't find cache", "is not cached", "not found in cache",
                    "outgoing traffic has been disabled")


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


def is_offline_error(err: BaseException) -> bool:
    """Whether ``err`` (from ``datasets`` / ``huggingface_hub``) only means "offline or not cached".

    True for connection errors and timeouts (the built-in ``ConnectionError`` / ``TimeoutError``,
    which ``datasets`` raises as "Couldn't reach ... on the Hub", socket errors, and the classes in
    :data:`OFFLINE_ERRORS`) and for the cache-miss messages in :data:`OFFLINE_MESSAGES`, on ``err``
    or on an exception it was raised ``from``. A ``PermissionError`` anywhere in that chain is never
    offline: it is a real failure (e.g. an unwritable cache).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, PermissionError):
            return False
        if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any(cls.__name__ in OFFLINE_ERRORS for cls in type(err).__mro__):
            return True
        text = str(err).lower()
        if any(m in text for m in OFFLINE_MESSAGES):
            return True
        err = err.__cause__
    return False


def hub_failure(err: BaseException, what: str) -> None:
    """Decide what a failed hub load means: return (the caller falls back to its next source) when
    :func:`is_offline_error`, else raise :class:`DataError` naming ``what`` and the cause (one line)."""
    if is_offline_error(err):
        return
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    cause = f"{type(err).__name__}: {first}" if first else type(err).__name__
    raise DataError(f"{what} could not be loaded ({cause}); fix that, or pass --data-dir DIR with local "
                    "copies of the official files") from err


def load_hub(repo: str, required: tuple[str, ...] = (), **kwargs) -> list[dict] | None:
    """Records of hub dataset ``repo`` (``datasets.load_dataset(repo, **kwargs)``), or ``None`` when
    the hub is unreachable and the dataset is not in the local ``datasets`` cache.

    Any other failure of the load raises :class:`DataError` naming its cause (:func:`hub_failure`),
    as do records lacking a ``required`` field.
    """
    try:
        import datasets
    except ImportError as err:  # a required dependency: a broken environment, not "offline"
        raise DataError(f"hub dataset {repo} needs the datasets package ({err}); pip install datasets") from err
    saved = datasets.config.HF_HUB_OFFLINE
    if not hub_reachable():
        datasets.config.HF_HUB_OFFLINE = True  # offline: datasets can still serve a cached copy
    try:
        ds = datasets.load_dataset(repo, **kwargs)
    except Exception as err:  # noqa: BLE001 - sorted by hub_failure: offline → None, else DataError
        what = f"hub dataset {repo}" + (f" ({kwargs['name']})" if kwargs.get("name") else "") + \
            (f" {kwargs['data_files']}" if isinstance(kwargs.get("data_files"), str) else "")
        hub_failure(err, what)
        return None
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
    rows = [dict(r) for r in ds]
    for i, rec in enumerate(rows):
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"hub dataset {repo} row {i}: lacks field(s) {', '.join(missing)}")
    return rows
