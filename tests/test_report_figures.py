"""Report figures: rendered headless (Agg), PNG of the expected pixel size and not blank, plus a PDF."""

import json
import random

import numpy as np
import pytest

from test_fit_plots import assert_good_png, two_stage_log, write_log
from tests.report_runs import record, report, write_run

PDF_SIGNATURE = b"%PDF"


def niah_records(seed, keep_fraction=1.0):
    rng = random.Random(seed)
    out = []
    for task in ("passkey",):
        for length in (1024, 2048, 4096):
            for depth in (0.0, 0.5, 1.0):
                tokens = length - 24
                logical = tokens * keep_fraction + 3
                out.append(record(task, f"{task}-{length}-{depth}", float(rng.random() > 0.3), logical, logical,
                                  tokens, f"NIAH.{task}", "generated", {"length": length, "depth": depth}))
    return out


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    runs = [  # one suite keeps the test fast; the tables' own tests cover several suites
        write_run(root / "nfull", "full", niah_records(4), suite="niah"),
        write_run(root / "nh2o", "h2o", niah_records(5, 0.5), suite="niah", cache_size=1024),
        write_run(root / "nh2o512", "h2o", niah_records(6, 0.25), suite="niah", cache_size=512),
    ]
    fits = []
    for name in ("bam", "mlp"):
        fit = root / f"fit-{name}"
        fit.mkdir()
        write_log(fit / "fit.jsonl", two_stage_log())
        (fit / "config.json").write_text(json.dumps({"fit": {"policy": f"namm_{name}"}}))
        fits.append(fit)
    out = root / "out"
    assert report(*runs, "--out", out, "--fit", *fits) == 0
    return out / "figures"


EXPECTED = {  # name -> (width, height) in pixels at 120 dpi
    "tradeoff": (600, 504),  # one suite panel, 5 x 4.2 in
    "layers_niah": (1320, 480),  # 11 x 4 in
    "tasks_niah": (1320, 480),
    "length_niah": (1320, 480),
    "heatmap_niah_passkey": (1200, 408),  # three rows: 3 x 3 + 1 in wide, 3.4 in high
    "fit_fit-bam_training": (1200, 480),  # harness.fit.plots' sizes
    "fit_fit-bam_memory": (720, 480),
    "fit_fit-mlp_training": (1200, 480),
    "fit_fit-mlp_memory": (720, 480),
    "fit_memory": (1200, 456),  # two fits, 5 x 3.8 in each
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figure_png_and_pdf(figures, name):
    assert_good_png(figures / f"{name}.png", EXPECTED[name])
    pdf = figures / f"{name}.pdf"
    assert pdf.read_bytes()[:4] == PDF_SIGNATURE and pdf.stat().st_size > 1000


def test_no_unexpected_figures(figures):
    names = {p.stem for p in figures.glob("*.png")}
    assert names == set(EXPECTED)
    assert {p.stem for p in figures.glob("*.pdf")} == names


def test_heatmap_cells_follow_scores(figures):
    """The passkey heat-map of the full row is not uniform (scores differ by cell)."""
    import matplotlib.image as mpimg

    pixels = mpimg.imread(figures / "heatmap_niah_passkey.png")
    assert float(np.var(pixels[..., :3])) > 0.01


def test_report_markdown_links_figures(figures):
    text = (figures.parent / "report.md").read_text()
    for name in EXPECTED:
        assert f"(figures/{name}.png)" in text
