"""Hub loading failures (tasks/data.py): only "offline / not cached" falls back to the next data
source; any other failure stops the run with one line naming its cause (exit 2, nothing written).

The hub loaders are replaced by functions that raise; nothing here touches the network."""

from __future__ import annotations

import json

import datasets
import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

import tasks.data
from harness.cli import main
from tasks import infinitebench as ib
from tasks.base import DataError
from tasks.data import hub_failure, is_offline_error, load_hub


def chained(outer, cause):
    try:
        try:
            raise cause
        except Exception as inner:
            raise outer from inner
    except Exception as err:  # noqa: BLE001
        return err


OFFLINE = [
    ConnectionError("Couldn't reach 'Xnhyacinth/LongBench' on the Hub (OfflineModeIsEnabled)"),  # datasets, offline
    OfflineModeIsEnabled("Cannot reach https://huggingface.co/...: offline mode is enabled."),
    LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic has been "
                            "disabled."),
    ValueError("Couldn't find cache for Xnhyacinth/LongBench for config 'trec'"),  # datasets' cache builder
    FileNotFoundError("Dataset xinrongzhang2022/InfiniteBench is not cached in None"),
    TimeoutError("timed out"),
    chained(RuntimeError("download failed"), ConnectionError("connection refused")),
]
NOT_OFFLINE = [
    PermissionError(13, "Permission denied", "/cache/datasets/lock"),
    ValueError("Feature type 'List' not found. Available feature types: ['Value', 'Sequence']"),  # datasets version
    OSError(28, "No space left on device"),
    type("RepositoryNotFoundError", (OSError,), {})("401 Client Error: Repository Not Found (authentication)"),
    datasets.exceptions.DatasetNotFoundError("Dataset 'x/y' is a gated dataset on the Hub."),
    chained(PermissionError(13, "Permission denied"), ConnectionError("offline")),  # a real failure while offline
    KeyError("answers"),
]


@pytest.mark.parametrize("err", OFFLINE, ids=lambda e: type(e).__name__)
def test_offline_errors_fall_back(err):
    assert is_offline_error(err)
    assert hub_failure(err, "hub dataset x/y") is None


@pytest.mark.parametrize("err", NOT_OFFLINE, ids=lambda e: type(e).__name__)
def test_other_errors_name_their_cause(err):
    assert not is_offline_error(err)
    with pytest.raises(DataError) as info:
        hub_failure(err, "hub dataset x/y")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"hub dataset x/y could not be loaded ({type(err).__name__}")
    assert "--data-dir" in msg


def raising(err):
    def load(*args, **kwargs):
        raise err
    return load


def test_load_hub(monkeypatch):
    monkeypatch.setattr(tasks.data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", raising(ConnectionError("Couldn't reach 'x/y' on the Hub")))
    assert load_hub("x/y", name="trec", split="test") is None
    monkeypatch.setattr(datasets, "load_dataset", raising(PermissionError(13, "Permission denied", "/cache")))
    with pytest.raises(DataError, match=r"^hub dataset x/y \(trec\) could not be loaded \(PermissionError: "
                                        r"\[Errno 13\] Permission denied: '/cache'\)"):
        load_hub("x/y", name="trec", split="test")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"input": "q"}])
    with pytest.raises(DataError, match="row 0: lacks field"):
        load_hub("x/y", required=("answers",), name="trec")


def test_infinitebench_hub_records(monkeypatch):
    monkeypatch.setattr(ib, "hub_reachable", lambda: True)
    monkeypatch.setattr(tasks.data, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(LocalEntryNotFoundError("not in the cache")))
    monkeypatch.setattr(datasets, "load_dataset", raising(ConnectionError("Couldn't reach it on the Hub")))
    assert ib._hub_records("passkey") is None  # offline: both caches tried, nothing there
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(PermissionError(13, "Permission denied")))
    with pytest.raises(DataError, match=r"^hub file xinrongzhang2022/InfiniteBench/passkey.jsonl could not be "
                                        r"loaded \(PermissionError"):
        ib._hub_records("passkey")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(LocalEntryNotFoundError("not in the cache")))
    monkeypatch.setattr(datasets, "load_dataset", raising(ValueError("Feature type 'List' not found")))
    with pytest.raises(DataError, match=r"^hub dataset xinrongzhang2022/InfiniteBench passkey.jsonl could not be "
                                        r"loaded \(ValueError: Feature type 'List' not found\)"):
        ib._hub_records("passkey")


# ---- through the command line ----------------------------------------------------------------------


@pytest.fixture
def hub_up(monkeypatch):
    """The hub "answers" (no connection is made: every loader below is replaced)."""
    monkeypatch.setattr(tasks.data, "hub_reachable", lambda: True)
    monkeypatch.setattr(ib, "hub_reachable", lambda: True)


def run(model_dir, out, suite, tasks_):
    return main(["run", "--model", str(model_dir), "--suite", suite, "--tasks", tasks_, "--limit", "1",
                 "--max-length", "640", "--out", str(out), "--quiet"])


def error_lines(capsys):
    return [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith(("error", "warning"))]


@pytest.mark.parametrize("suite,task,loader,where", [
    ("longbench", "passage_count", "datasets", "hub dataset Xnhyacinth/LongBench (passage_count)"),
    ("infinitebench", "passkey", "hf_hub_download", "hub file xinrongzhang2022/InfiniteBench/passkey.jsonl"),
])
@pytest.mark.parametrize("err,cause", [
    (PermissionError(13, "Permission denied", "/root/.cache/huggingface"),
     "PermissionError: [Errno 13] Permission denied: '/root/.cache/huggingface'"),
    (ValueError("Feature type 'List' not found"), "ValueError: Feature type 'List' not found"),
])
def test_hub_failure_stops_the_run(tiny_model_dir, tmp_path, capsys, monkeypatch, hub_up, suite, task, loader, where,
                                   err, cause):
    monkeypatch.setattr(datasets, "load_dataset", raising(err))
    if loader == "hf_hub_download":
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(err))
    out = tmp_path / "run"
    assert run(tiny_model_dir, out, suite, task) == 2
    assert error_lines(capsys) == [f"error: {where} could not be loaded ({cause}); fix that, or pass --data-dir DIR "
                                   "with local copies of the official files"]
    assert not out.exists()


@pytest.mark.parametrize("suite,task", [("longbench", "passage_count"), ("infinitebench", "passkey")])
def test_offline_hub_falls_back_to_generated(tiny_model_dir, tmp_path, capsys, monkeypatch, hub_up, suite, task):
    monkeypatch.setattr(datasets, "load_dataset", raising(ConnectionError("Couldn't reach it on the Hub")))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(LocalEntryNotFoundError("not cached")))
    out = tmp_path / "run"
    assert run(tiny_model_dir, out, suite, task) == 0
    assert not [ln for ln in error_lines(capsys) if ln.startswith("error")]
    (rec,) = [json.loads(ln) for ln in (out / "records.jsonl").read_text().splitlines()]
    assert rec["task"] == task and rec["source"] == "generated"
