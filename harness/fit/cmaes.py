"""A small, deterministic, resumable wrapper around pycma's CMA-ES (used by ``python -m harness fit``).

What the paper's code (evo-memory, ``memory_evolution/cma_es.py``) does and how this maps onto pycma:

* full covariance matrix (``covariance="full"``, pycma's ``CMA_diagonal=False``), as the paper;
  or, the default here, a diagonal one (``covariance="diagonal"``: pycma's separable CMA-ES,
  ``CMA_diagonal=True``, which adapts one step size per coordinate with pycma's ``c1_sep`` /
  ``cmu_sep`` learning rates). Why diagonal by default: with BAM's n = 4,172 parameters and a
  population <= 32 the full covariance's learning rates are ~2/n^2 (pycma: c1 = 1.1e-7,
  cmu = 8.7e-7 for popsize 32), so over the paper's 300 + 250 + 120 generations the matrix moves by
  < 1e-3 of its initial value, i.e. it stays isotropic while costing O(n^2) time and a ~280 MB state;
  the diagonal rates are c1_sep = 2.3e-4, cmu_sep = 1.7e-3 (the per-coordinate variances do
  change within a few hundred generations) and the state is ~0.7 MB (684,652 bytes measured at
  popsize 32);
* population ``popsize`` (paper: 32, public base config: 16), elite size ``mu = int(popsize *
  elite_ratio)`` (``CMA_mu``), log-rank recombination weights with negative weights for the
  non-elite members (pycma's default active CMA, ``CMA_active=True``; evo-memory does the same);
* initial step size ``sigma0`` (the code's ``init_sigma = 0.065``; Table 9 of the paper prints 0.65)
  and initial mean ``mean0`` everywhere (0 in the paper), or an explicit ``x0``;
* no bounds, no mirrored sampling (``CMA_mirrors=0``), no output files (``verb_log=0``), no printing.

Fitness convention: **higher is better** (the NAMM fitness is a normalised task score). pycma
minimises, so :meth:`CMAES.tell` negates internally.

Randomness is private to each instance:

* pycma draws every standard-normal sample through its option ``randn`` (``cma/sampler.py``:
  ``arz = self.randn(number, dimension)``; ``cma/evolution_strategy.py`` uses ``opts['randn']`` for
  the remaining draws). We pass a :class:`_PrivateRandn` — a picklable callable owning its own
  ``numpy.random.RandomState(seed)`` — so sampling never touches numpy's global generator. pycma's
  ``seed`` option only seeds the *global* generator when ``randn is np.random.randn``, so it is set
  to NaN (unused).
* A few pycma helpers call the global ``np.random`` directly (e.g. ``Mh.sround`` for the number of
  mirrored samples). With the options set here (no mirrors, no integer variables, no noise handling)
  ask/tell make no such draw (the tests check that the global stream is untouched), but as a guard
  against other pycma versions/paths every call into pycma runs inside
  :meth:`CMAES._private_global_rng`, which swaps numpy's global state for a per-instance one and
  swaps it back afterwards. Code around us that uses ``np.random`` can therefore neither change the
  trajectory nor see its own stream consumed by us.
* :meth:`CMAES.state_dict` pickles the pycma object (which holds the ``_PrivateRandn`` and hence its
  exact RandomState), the per-instance global-RNG state and the settings in one pickle, so
  :meth:`CMAES.from_state` continues bit-identically (same subsequent ``ask()`` populations and means).
  After a ``tell()`` it leaves out pycma's per-generation scratch arrays (the last population, ~3
  MB at n = 4,172), which the next ``ask()`` rebuilds without reading them.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from harness.errors import UsageError

_STATE_FORMAT = "harness.fit.cmaes/1"
COVARIANCES = ("diagonal", "full")
# pycma attributes that only hold the last generation's population / tell() arguments: after a tell()
# the next ask() resets ``ary`` and nothing reads ``pop_sorted`` or ``_tell2_args`` before the next tell()
# overwrites them, so state_dict() need not store them (see test_state_after_tell_leaves_out_scratch).
_SCRATCH = {"ary": list, "pop_sorted": lambda: None, "_tell2_args": dict}


class CMAESSettingsError(UsageError, ValueError):
    """Invalid CMA-ES settings: a ``ValueError`` that the CLI also reports as a one-line usage error."""


@dataclass(frozen=True)
class CMAESSettings:
    popsize: int = 32  # paper: 32 (the public base config uses 16)
    elite_ratio: float = 0.5  # mu = int(popsize * elite_ratio)
    sigma0: float = 0.065  # the public code's init_sigma (the paper's Table 9 prints 0.65)
    mean0: float = 0.0
    seed: int = 0
    covariance: str = "diagonal"  # "diagonal" (separable CMA-ES) or "full" (the paper); see the module docstring

    def __post_init__(self):
        if isinstance(self.popsize, bool) or not isinstance(self.popsize, (int, np.integer)) or self.popsize < 2:
            raise CMAESSettingsError(f"CMA-ES popsize must be an integer >= 2 (got {self.popsize!r}); pass e.g. 16 or 32")
        if not (isinstance(self.elite_ratio, (int, float)) and 0.0 < float(self.elite_ratio) <= 1.0):
            raise CMAESSettingsError(
                f"CMA-ES elite_ratio must be in (0, 1] (got {self.elite_ratio!r}); the paper uses 0.5")
        if int(self.popsize * self.elite_ratio) < 1:
            raise CMAESSettingsError(
                f"CMA-ES elite size int(popsize * elite_ratio) = int({self.popsize} * {self.elite_ratio}) is 0; "
                f"raise elite_ratio to at least {1.0 / self.popsize:.4g} or increase popsize")
        if not (isinstance(self.sigma0, (int, float)) and math.isfinite(self.sigma0) and self.sigma0 > 0):
            raise CMAESSettingsError(
                f"CMA-ES sigma0 must be a finite number > 0 (got {self.sigma0!r}); the public code uses 0.065")
        if not (isinstance(self.mean0, (int, float)) and math.isfinite(self.mean0)):
            raise CMAESSettingsError(f"CMA-ES mean0 must be a finite number (got {self.mean0!r}); the paper uses 0")
        if (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                or not 0 <= self.seed < 2**32):
            raise CMAESSettingsError(f"CMA-ES seed must be an integer in [0, 2**32) (got {self.seed!r})")
        if self.covariance not in COVARIANCES:
            raise CMAESSettingsError(
                f"CMA-ES covariance must be one of {', '.join(COVARIANCES)} (got {self.covariance!r})")

    @property
    def mu(self) -> int:
        """Number of elite (positively weighted) members."""
        return int(self.popsize * self.elite_ratio)


class _PrivateRandn:
    """``randn(*shape)`` drawing from a RandomState owned by this object (picklable, unlike a lambda)."""

    def __init__(self, seed: int):
        self.rs = np.random.RandomState(seed)

    def __call__(self, *shape):
        return self.rs.standard_normal(shape)


class CMAES:
    """CMA-ES over ``n_params`` real parameters; ``ask()`` a population, ``tell()`` its fitness (higher is better)."""

    def __init__(self, n_params: int, settings: CMAESSettings | None = None, x0: np.ndarray | None = None):
        import cma  # pycma

        settings = CMAESSettings() if settings is None else settings
        if not isinstance(settings, CMAESSettings):
            raise CMAESSettingsError(f"settings must be a CMAESSettings (got {type(settings).__name__})")
        if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer)) or n_params < 1:
            raise CMAESSettingsError(f"CMA-ES n_params must be an integer >= 1 (got {n_params!r})")
        n_params = int(n_params)
        if x0 is None:
            x0 = np.full(n_params, float(settings.mean0))
        else:
            x0 = np.array(x0, dtype=np.float64).reshape(-1)
            if x0.shape != (n_params,):
                raise CMAESSettingsError(
                    f"CMA-ES x0 must have {n_params} entries (got shape {np.shape(x0)}); pass the flat parameter vector")
            if not np.all(np.isfinite(x0)):
                raise CMAESSettingsError("CMA-ES x0 contains NaN/inf; pass a finite starting mean")
        self.settings = settings
        self.n_params = n_params
        # Per-instance stand-in for numpy's global generator during pycma calls (see module docstring).
        self._global_rng_state = np.random.RandomState([int(settings.seed), 0x434D41]).get_state()
        opts = {
            "popsize": int(settings.popsize),
            "CMA_mu": settings.mu,
            "CMA_diagonal": settings.covariance == "diagonal",
            "CMA_active": True,
            "CMA_mirrors": 0,
            "bounds": [None, None],
            "randn": _PrivateRandn(int(settings.seed)),
            "seed": float("nan"),  # pycma would otherwise seed numpy's *global* generator
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
            "verb_time": False,
        }
        with self._private_global_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._es = cma.CMAEvolutionStrategy(x0, float(settings.sigma0), opts)
        if self._es.sp.weights.mu != settings.mu or self._es.popsize != settings.popsize:
            raise RuntimeError(
                f"pycma ignored the requested mu/popsize ({self._es.sp.weights.mu}/{self._es.popsize} "
                f"instead of {settings.mu}/{settings.popsize}); check the installed cma version")

    # -- randomness ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _private_global_rng(self):
        outer = np.random.get_state()
        np.random.set_state(self._global_rng_state)
        try:
            yield
        finally:
            self._global_rng_state = np.random.get_state()
            np.random.set_state(outer)

    # -- ask / tell ---------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        """A new population, ``[popsize, n_params]`` float64 (a fresh copy the caller may modify)."""
        with self._private_global_rng():
            pop = self._es.ask()
        pop = np.array(pop, dtype=np.float64).reshape(self.settings.popsize, self.n_params)
        return pop

    def tell(self, solutions, fitness) -> None:
        """Update the distribution from ``solutions`` (as returned by :meth:`ask`) and their ``fitness``.

        ``fitness`` is **higher is better**; it is negated before pycma (a minimiser) sees it.
        """
        x = np.asarray(solutions, dtype=np.float64)
        f = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if x.shape != (self.settings.popsize, self.n_params):
            raise ValueError(
                f"tell() needs solutions of shape ({self.settings.popsize}, {self.n_params}) as returned by ask() "
                f"(got {x.shape})")
        if f.shape != (self.settings.popsize,):
            raise ValueError(f"tell() needs one fitness value per solution ({self.settings.popsize}), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("tell() got NaN/inf fitness; fix the evaluation (fitness must be finite, higher is better)")
        with self._private_global_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._es.tell(list(x), list(-f))

    # -- read-outs ----------------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """Current distribution mean (the model the paper evaluates), ``[n_params]`` float64 copy."""
        return np.array(self._es.mean, dtype=np.float64).reshape(self.n_params)

    @property
    def sigma(self) -> float:
        """Current overall step size."""
        return float(self._es.sigma)

    @property
    def stds(self) -> np.ndarray:
        """Current per-coordinate standard deviations of the sampling distribution, ``[n_params]``
        (``sigma`` times the square root of the covariance's diagonal)."""
        return np.array(self._es.stds, dtype=np.float64).reshape(self.n_params)

    @property
    def generation(self) -> int:
        """Number of completed ``tell()`` calls (pycma's ``countiter``)."""
        return int(self._es.countiter)

    @property
    def es(self):
        """The underlying ``cma.CMAEvolutionStrategy`` (read-only use: inspecting it is fine, calling
        its ``ask``/``tell`` directly bypasses the RNG privacy)."""
        return self._es

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> bytes:
        """Everything needed to continue exactly, as one pickle.

        Contains the pycma object (covariance, paths, step size, iteration counters and the
        :class:`_PrivateRandn` with its RandomState, i.e. the generator pycma samples with), the
        per-instance global-RNG state used during pycma calls, and the settings. Load it only with
        :meth:`from_state`, and only from the fit's own output folder: it is a pickle, so loading a file
        from an untrusted source could execute arbitrary code. Size: with ``covariance="full"`` it
        grows as ``n_params**2`` (covariance plus its eigenbasis, ~2 * 8 * n_params**2 bytes: ~280 MB
        for n = 4,172); with ``"diagonal"`` it is ~20 vectors of n_params floats (~0.7 MB for n =
        4,172). After a :meth:`tell` pycma's per-generation scratch (``_SCRATCH``) is reset first.
        """
        if self._es._flgtelldone:  # between tell() and ask(): the last population is not needed again
            for name, empty in _SCRATCH.items():
                setattr(self._es, name, empty())
        payload = {
            "format": _STATE_FORMAT,
            "settings": asdict(self.settings),
            "n_params": self.n_params,
            "es": self._es,
            "global_rng_state": self._global_rng_state,
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, data: bytes) -> "CMAES":
        """Rebuild an instance saved by :meth:`state_dict` (trusted data only: see there).

        States saved before the ``covariance`` setting existed are full-covariance ones.
        """
        payload = pickle.loads(data)
        if not isinstance(payload, dict) or payload.get("format") != _STATE_FORMAT:
            raise ValueError("not a harness CMA-ES state (expected bytes from CMAES.state_dict())")
        self = cls.__new__(cls)
        self.settings = CMAESSettings(**{"covariance": "full", **payload["settings"]})
        self.n_params = int(payload["n_params"])
        self._es = payload["es"]
        self._global_rng_state = payload["global_rng_state"]
        return self
