"""Tests for harness.fit.cmaes: optimisation works, higher-is-better, determinism, private RNG, exact resume,
diagonal (separable) vs full covariance."""

import os
import pickle

import numpy as np
import pytest

from harness.fit.cmaes import CMAES, CMAESSettings

DIM = 30
TARGET = np.random.RandomState(1234).uniform(-1.0, 1.0, DIM)


def objective(x):
    """Higher is better; maximum 0 at TARGET."""
    x = np.atleast_2d(x)
    return -np.sum((x - TARGET) ** 2, axis=1)


COVARIANCES = ["diagonal", "full"]


def small(seed=0, popsize=8, sigma0=0.3, covariance="diagonal"):
    return CMAESSettings(popsize=popsize, elite_ratio=0.5, sigma0=sigma0, seed=seed, covariance=covariance)


def run(es, gens, between=None):
    """Run ``gens`` generations; return the populations and means seen."""
    pops, means = [], []
    for _ in range(gens):
        if between is not None:
            between()
        x = es.ask()
        pops.append(x)
        es.tell(x, objective(x))
        means.append(es.mean)
    return pops, means


def test_defaults_match_paper_code():
    s = CMAESSettings()
    assert (s.popsize, s.elite_ratio, s.sigma0, s.mean0, s.mu, s.covariance) == (32, 0.5, 0.065, 0.0, 16, "diagonal")
    es = CMAES(10, s)
    assert np.array_equal(es.mean, np.zeros(10))
    assert es.sigma == pytest.approx(0.065)
    assert es.generation == 0
    x = es.ask()
    assert x.shape == (32, 10) and x.dtype == np.float64


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_optimises_synthetic_objective(covariance, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pycma must not write output files
    es = CMAES(DIM, small(covariance=covariance))
    f0 = objective(es.mean)[0]
    d0 = np.linalg.norm(es.mean - TARGET)
    run(es, 40)
    f1 = objective(es.mean)[0]
    d1 = np.linalg.norm(es.mean - TARGET)
    assert es.generation == 40
    assert f0 < -5.0  # initial mean 0 is far from the target (sanity of the test itself)
    assert -f1 < -f0 / 10, (f0, f1)  # squared distance shrank by more than 10x
    assert d1 < d0 / 3
    assert os.listdir(tmp_path) == []


def test_higher_fitness_is_better():
    es = CMAES(DIM, small(popsize=8))
    x = es.ask()
    best = 5  # give one member a clearly highest fitness; everything else equal and low
    fit = np.full(8, -100.0)
    fit[best] = 100.0
    m0 = es.mean
    es.tell(x, fit)
    step = es.mean - m0
    assert np.dot(step, x[best] - m0) > 0
    # the mean moves closer to the best member than to any other member
    dists = np.linalg.norm(x - es.mean, axis=1)
    assert int(np.argmin(dists)) == best
    # and with the sign flipped the same member is pushed away
    es2 = CMAES(DIM, small(popsize=8))
    x2 = es2.ask()
    assert np.array_equal(x, x2)
    es2.tell(x2, -fit)
    assert np.dot(es2.mean - m0, x[best] - m0) < 0


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_same_seed_same_trajectory_different_seed_differs(covariance):
    a, b, c = (CMAES(DIM, small(seed=seed, covariance=covariance)) for seed in (7, 7, 8))
    pa, ma = run(a, 6)
    pb, mb = run(b, 6)
    pc, _ = run(c, 6)
    assert all(np.array_equal(u, v) for u, v in zip(pa, pb))
    assert all(np.array_equal(u, v) for u, v in zip(ma, mb))
    assert not np.array_equal(pa[0], pc[0])


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_rng_is_private(covariance):
    """Unrelated np.random use (including reseeding) does not change the trajectory, and we leave
    numpy's global stream untouched."""
    ref_pops, ref_means = run(CMAES(DIM, small(seed=3, covariance=covariance)), 8)

    noisy = CMAES(DIM, small(seed=3, covariance=covariance))

    def meddle():
        np.random.seed(99)
        np.random.randn(17)
        np.random.rand(3)

    pops, means = run(noisy, 8, between=meddle)
    assert all(np.array_equal(u, v) for u, v in zip(ref_pops, pops))
    assert all(np.array_equal(u, v) for u, v in zip(ref_means, means))

    # our ask/tell/constructor do not consume or reseed the global stream
    np.random.seed(5)
    expected = np.random.RandomState(5).rand(4)
    es = CMAES(DIM, small(seed=3, covariance=covariance))
    run(es, 3)
    assert np.array_equal(np.random.rand(4), expected)


@pytest.mark.parametrize("covariance", COVARIANCES)
@pytest.mark.parametrize("k", [0, 5])
def test_resume_is_bit_identical(k, covariance):
    m = 8
    es = CMAES(DIM, small(seed=11, covariance=covariance))
    run(es, k)
    blob = es.state_dict()
    assert isinstance(blob, bytes)
    cont_pops, cont_means = run(es, m)

    resumed = CMAES.from_state(blob)
    assert resumed.generation == k and resumed.settings == small(seed=11, covariance=covariance)
    assert resumed.n_params == DIM

    def meddle():  # and the resumed run also sees unrelated np.random traffic
        np.random.seed(1)
        np.random.standard_normal(DIM)

    res_pops, res_means = run(resumed, m, between=meddle)
    assert resumed.generation == k + m
    for u, v in zip(cont_pops, res_pops):
        assert np.array_equal(u, v)
    for u, v in zip(cont_means, res_means):
        assert np.array_equal(u, v)
    assert resumed.sigma == es.sigma
    assert np.array_equal(resumed.stds, es.stds)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_state_between_ask_and_tell_resumes_exactly(covariance):
    es = CMAES(DIM, small(seed=2, covariance=covariance))
    run(es, 2)
    x = es.ask()
    blob = es.state_dict()
    es.tell(x, objective(x))
    after, _ = run(es, 3)
    other = CMAES.from_state(blob)
    other.tell(x, objective(x))
    again, _ = run(other, 3)
    assert all(np.array_equal(u, v) for u, v in zip(after, again))


def test_state_dict_round_trip_twice():
    es = CMAES(DIM, small(seed=4))
    run(es, 3)
    es2 = CMAES.from_state(CMAES.from_state(es.state_dict()).state_dict())
    assert np.array_equal(es.ask(), es2.ask())


def test_from_state_rejects_foreign_pickle():
    import pickle

    with pytest.raises(ValueError, match="state_dict"):
        CMAES.from_state(pickle.dumps({"foo": 1}))


@pytest.mark.parametrize("popsize,ratio", [(32, 0.5), (16, 0.5), (8, 0.25), (10, 0.33), (6, 1.0), (5, 0.5)])
def test_mu_from_elite_ratio(popsize, ratio):
    es = CMAES(12, CMAESSettings(popsize=popsize, elite_ratio=ratio))
    assert es.es.sp.weights.mu == int(popsize * ratio)
    assert es.es.popsize == popsize
    assert es.ask().shape == (popsize, 12)


def test_full_covariance_and_no_mirrors():
    es = CMAES(12, CMAESSettings(popsize=4, covariance="full"))
    assert es.es.opts["CMA_diagonal"] is False
    assert es.es.sp.lam_mirr == 0
    assert es.es.sm.C.shape == (12, 12)


def test_diagonal_covariance_has_no_matrix():
    import cma

    es = CMAES(12, CMAESSettings(popsize=4))
    assert es.es.opts["CMA_diagonal"] is True and es.es.sp.lam_mirr == 0
    # separable CMA-ES: an identity sampler, the diagonal lives in sigma_vec (one entry per coordinate)
    assert isinstance(es.es.sm, cma.sampler.GaussStandardConstant)
    assert np.array_equal(es.stds, np.full(12, 0.065))
    x = es.ask()
    es.tell(x, -np.sum(x**2, axis=1))
    assert es.es.sigma_vec.scaling.shape == (12,) and np.ptp(es.es.sigma_vec.scaling) > 0


def test_learning_rates_at_namm_size_explain_the_diagonal_default():
    """BAM has 4,172 parameters: pycma's full-covariance rates are ~2/n^2 (c1 + cmu < 1e-6 per generation,
    < 1e-3 over the paper's 670 generations), the separable ones ~1e3 times larger."""
    sp = CMAES(4172, CMAESSettings(popsize=32)).es.sp
    assert sp.c1 == pytest.approx(2 / 4172**2, rel=0.01)
    assert sp.c1 + sp.cmu < 1e-6 and 670 * (sp.c1 + sp.cmu) < 1e-3
    assert sp.c1_sep + sp.cmu_sep > 1e-3
    assert (sp.c1_sep, sp.cmu_sep) == (pytest.approx(2.32e-4, rel=0.01), pytest.approx(1.70e-3, rel=0.01))


def test_diagonal_adapts_per_coordinate_step_sizes():
    """f = -sum((s_i x_i)^2) with s_i from 1 to 1000: the separable CMA-ES learns small steps along the steep
    coordinates and larger ones along the flat ones; the full covariance, at the same budget, hardly."""
    n = 20
    scales = np.logspace(0, 3, n)

    def f(x):
        return -np.sum((np.atleast_2d(x) * scales) ** 2, axis=1)

    ratios = {}
    for covariance in COVARIANCES:
        es = CMAES(n, small(seed=0, covariance=covariance), x0=np.ones(n))
        assert np.ptp(es.stds) / es.stds[0] < 1e-4  # isotropic at the start
        for _ in range(200):
            x = es.ask()
            es.tell(x, f(x))
        ratios[covariance] = es.stds[0] / es.stds[-1]
        if covariance == "diagonal":
            assert np.corrcoef(np.log(es.stds), np.log(scales))[0, 1] < -0.8  # steeper -> smaller step
    assert ratios["diagonal"] > 20  # measured 37.9 (the ideal is 1000)
    assert ratios["diagonal"] > 5 * ratios["full"]  # full: 3.9


def test_diagonal_state_is_small_at_namm_size():
    """The fit saves after every tell(): at BAM's size that state is well under a megabyte (~0.68 MB
    measured; the full covariance's is ~280 MB), so a fit folder's state.pkl can be committed."""
    es = CMAES(4172, CMAESSettings(popsize=32, seed=0))
    for _ in range(3):
        x = es.ask()
        es.tell(x, -np.sum(x**2, axis=1))
    blob = es.state_dict()
    assert len(blob) < 1_000_000, len(blob)
    resumed = CMAES.from_state(blob)
    assert np.array_equal(resumed.ask(), es.ask())


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_state_after_tell_leaves_out_scratch(covariance):
    """state_dict() after tell() drops pycma's last population; saving every generation (as the fit does)
    leaves the trajectory bit-identical to never saving."""
    saved, plain = (CMAES(DIM, small(seed=5, covariance=covariance)) for _ in range(2))
    pops_saved, means_saved = run(saved, 6, between=saved.state_dict)
    pops_plain, means_plain = run(plain, 6)
    assert all(np.array_equal(u, v) for u, v in zip(pops_saved + means_saved, pops_plain + means_plain))
    saved.state_dict()
    assert saved.es.pop_sorted is None and len(saved.es.ary) == 0 and saved.es._tell2_args == {}
    assert plain.es.pop_sorted.shape == (8, DIM)  # what was left out


def test_state_from_before_the_covariance_setting_is_full():
    """state.pkl files written before `covariance` existed hold full-covariance runs and resume as such."""
    es = CMAES(DIM, small(seed=6, covariance="full"))
    run(es, 2)
    payload = pickle.loads(es.state_dict())
    del payload["settings"]["covariance"]
    old = CMAES.from_state(pickle.dumps(payload))
    assert old.settings.covariance == "full" and old.es.opts["CMA_diagonal"] is False
    assert np.array_equal(old.ask(), es.ask())


def test_x0_is_initial_mean():
    x0 = np.linspace(-1, 1, 9)
    es = CMAES(9, CMAESSettings(popsize=4), x0=x0)
    assert np.array_equal(es.mean, x0)
    with pytest.raises(ValueError, match="x0"):
        CMAES(9, CMAESSettings(popsize=4), x0=np.zeros(8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"popsize": 1}, "popsize"),
        ({"popsize": 0}, "popsize"),
        ({"popsize": 4.0}, "popsize"),
        ({"elite_ratio": 0.0}, "elite_ratio"),
        ({"elite_ratio": 1.5}, "elite_ratio"),
        ({"popsize": 4, "elite_ratio": 0.2}, "elite"),  # int(0.8) = 0
        ({"sigma0": 0.0}, "sigma0"),
        ({"sigma0": -1.0}, "sigma0"),
        ({"sigma0": float("nan")}, "sigma0"),
        ({"seed": -1}, "seed"),
        ({"covariance": "sep"}, "covariance must be one of diagonal, full"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        CMAESSettings(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n_params(n):
    with pytest.raises(ValueError, match="n_params"):
        CMAES(n, CMAESSettings())


def test_tell_validates_shapes_and_values():
    es = CMAES(5, CMAESSettings(popsize=4))
    x = es.ask()
    with pytest.raises(ValueError):
        es.tell(x, np.zeros(3))
    with pytest.raises(ValueError):
        es.tell(x[:, :4], np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        es.tell(x, np.array([0.0, np.nan, 1.0, 2.0]))
    assert es.generation == 0
