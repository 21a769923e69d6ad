"""Tests for harness.fit.plots: fit.jsonl reading and the training / memory figures."""

import json
import struct

import numpy as np
import pytest

from harness.fit.plots import memory_curve, read_log, training_curves, write_figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAINING_SIZE = (1200, 480)  # 10x4 in at 120 dpi
MEMORY_SIZE = (720, 480)  # 6x4 in at 120 dpi


def record(stage, gen, ggen, tasks, validate=False, best=False):
    rng = np.random.RandomState(ggen)
    mean = 0.3 + 0.05 * ggen
    val = None
    if validate:
        scores = {t: round(mean + 0.1 * i + rng.uniform(-0.05, 0.05), 4) for i, t in enumerate(tasks)}
        val = {"tasks": scores, "mean": sum(scores.values()) / len(scores),
               "cache_logical_mean": 600.0 + 10 * ggen, "best": best}
    return {
        "stage": stage, "generation": gen, "global_generation": ggen, "tasks": list(tasks),
        "fitness": {"mean": mean, "std": 0.1, "min": mean - 0.25, "max": mean + 0.2},
        "task_fitness": {t: mean + 0.05 * i for i, t in enumerate(tasks)},
        "cache": {"logical_mean": 800.0 + 5 * ggen, "physical_mean": 900.0 + 5 * ggen},
        "validation": val, "wall_s": 1.0,
    }


def two_stage_log():
    recs = [record(1, g, g, ["passkey"], validate=g % 2 == 0, best=g in (2, 4)) for g in range(1, 7)]
    recs += [record(2, g, 6 + g, ["passkey", "needle"], validate=g % 2 == 0, best=g == 4) for g in range(1, 7)]
    return recs


def write_log(path, recs, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    return path


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_good_png(path, size):
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 0
    assert png_size(path) == size
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    assert float(np.var(pixels[..., :3])) > 0, f"{path} is blank"


def test_write_figures_two_stages(tmp_path):
    log = write_log(tmp_path / "fit.jsonl", two_stage_log())
    paths = write_figures(log, tmp_path / "figs")
    assert [p.name for p in paths] == ["training_curves.png", "memory_size.png"]
    assert_good_png(paths[0], TRAINING_SIZE)
    assert_good_png(paths[1], MEMORY_SIZE)


@pytest.mark.parametrize("recs", [
    [record(1, 1, 1, ["passkey"])],  # one record, no validation
    [record(1, 1, 1, ["passkey"], validate=True, best=True)],  # one record, validated
    [record(1, g, g, ["passkey"]) for g in range(1, 5)],  # no validation entries at all
    [record(s, 1 + (g - 1) % 3, g, [f"t{k}" for k in range(s)], validate=g % 3 == 0)
     for g in range(1, 19) for s in [(g - 1) // 3 + 1]],  # six stages, six tasks
], ids=["single", "single-validated", "no-validation", "many-stages"])
def test_write_figures_edge_cases(tmp_path, recs):
    paths = write_figures(write_log(tmp_path / "fit.jsonl", recs), tmp_path)
    assert_good_png(paths[0], TRAINING_SIZE)
    assert_good_png(paths[1], MEMORY_SIZE)


def test_missing_optional_fields(tmp_path):
    recs = [{"stage": 1, "generation": g, "global_generation": g, "fitness": {"mean": 0.1 * g}} for g in (1, 2, 3)]
    assert_good_png(training_curves(recs, tmp_path / "t.png"), TRAINING_SIZE)
    assert_good_png(memory_curve(recs, tmp_path / "m.png"), MEMORY_SIZE)


def test_read_log_skips_torn_last_line(tmp_path):
    recs = two_stage_log()
    log = write_log(tmp_path / "fit.jsonl", recs, tail=json.dumps(record(2, 7, 13, ["passkey"]))[:40])
    assert read_log(log) == recs
    write_figures(log, tmp_path)  # still plottable


def test_read_log_rejects_malformed_middle_line(tmp_path):
    log = tmp_path / "fit.jsonl"
    log.write_text(json.dumps(record(1, 1, 1, ["passkey"])) + "\n{not json\n" + json.dumps(record(1, 2, 2, ["passkey"])) + "\n")
    with pytest.raises(ValueError, match=r"fit.jsonl:2"):
        read_log(log)


@pytest.mark.parametrize("content", ["", "\n\n", '{"stage": 1, "gen'], ids=["empty", "blank", "torn-only"])
def test_empty_log_raises(tmp_path, content):
    log = tmp_path / "fit.jsonl"
    log.write_text(content)
    with pytest.raises(ValueError, match="no complete records"):
        read_log(log)
    with pytest.raises(ValueError, match="no complete records"):
        write_figures(log, tmp_path / "figs")
    assert not (tmp_path / "figs").exists()


def test_empty_records_raise(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        training_curves([], tmp_path / "t.png")
    with pytest.raises(ValueError, match="empty"):
        memory_curve([], tmp_path / "m.png")


def test_resumed_duplicate_generation_last_wins(tmp_path):
    recs = two_stage_log()
    import matplotlib.image as mpimg

    clean = training_curves(recs, tmp_path / "clean.png")
    recs.insert(4, dict(recs[4], fitness={"mean": -5.0, "std": 0.0, "min": -5.0, "max": -5.0}))
    # generation 5 appears twice (a resumed fit re-ran it); the later record wins, so the plot is unchanged
    resumed = training_curves(recs, tmp_path / "resumed.png")
    assert np.array_equal(mpimg.imread(clean), mpimg.imread(resumed))
