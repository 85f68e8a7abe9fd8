"""Runtime models: the distribution of one worker's task time, used to inject stragglers.

A `RuntimeModel` draws seeded task times (``sample``), and gives the exact CDF ``cdf`` and
quantile function ``ppf``. The pair ``cdf``/``ppf`` is what
`dask_polar.codes.expected_finish_times` needs, so every model can also *design* a polar code
(``PolarCode(n, k, runtimes=model)``, computational polarization, Pilanci 2021).

Benchmarks inject the same draws into every method they compare: `draw_delays` with one
seed gives one ``(trials, n)`` table of per-task delays, so coded, uncoded, replicated and MDS
products all meet identical stragglers (DESIGN.md section 4).

Everything here is pure numpy; models are plain picklable objects, so they can be shipped to
Dask workers.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from .._validation import (
    as_real_array,
    check_int,
    check_positive,
    check_probability,
    check_real,
    check_seed,
    check_shape,
)

__all__ = [
    "RuntimeModel",
    "ShiftedExponential",
    "Bimodal",
    "Pareto",
    "Empirical",
    "NoStragglers",
    "draw_delays",
]

Seed = int | np.random.Generator | np.random.SeedSequence | None


def _scalar_or_array(values: np.ndarray) -> Any:
    """0-d results come back as a numpy scalar (as in ``scipy.stats``), others as arrays."""
    return values[()] if values.ndim == 0 else values


class RuntimeModel(abc.ABC):
    """Distribution of one worker's task time in seconds (non-negative, i.i.d. over workers).

    Subclasses implement the private kernels ``_sample``, ``_cdf``, ``_ppf``, ``mean`` and
    ``_params``; the public methods validate their arguments first and then call them with
    clean float64 input.

    Examples
    --------
    >>> model = ShiftedExponential(shift=0.1, scale=0.05)
    >>> isinstance(model, RuntimeModel)
    True
    >>> bool((model.sample(4, seed=1) == model.sample(4, seed=1)).all())
    True
    """

    def sample(self, size: int | tuple[int, ...], seed: Seed = None) -> np.ndarray:
        """Draw task times.

        Parameters
        ----------
        size : int or tuple of int
            Shape of the result.
        seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
            Equal integer seeds give equal draws. A Generator is used (and advanced) as is.

        Returns
        -------
        ndarray of float64, shape ``size``
            Non-negative task times in seconds.

        Raises
        ------
        TypeError
            If ``size`` is not an int or tuple of ints, or ``seed`` is of another type.
        ValueError
            If a dimension of ``size`` or an integer ``seed`` is negative.
        """
        shape = check_shape("size", size)
        rng = check_seed("seed", seed)
        draws = np.asarray(self._sample(rng, shape), dtype=np.float64)
        return draws.reshape(shape)

    def cdf(self, t: Any) -> Any:
        """``P(T <= t)``, elementwise.

        Parameters
        ----------
        t : float or array_like of float
            Times in seconds; ``-inf`` and ``inf`` are allowed, NaN is not.

        Returns
        -------
        float or ndarray
            Same shape as ``t``; a numpy scalar for scalar ``t``.

        Raises
        ------
        TypeError
            If ``t`` is not real-valued.
        ValueError
            If ``t`` contains NaN.
        """
        times = as_real_array("t", t)
        with np.errstate(over="ignore", divide="ignore"):
            return _scalar_or_array(self._cdf(times))

    def ppf(self, q: Any) -> Any:
        """Quantile function ``inf {t : cdf(t) >= q}``, elementwise (``ppf(0)`` is the lower
        end of the support, ``ppf(1)`` the upper end, possibly ``inf``).

        Parameters
        ----------
        q : float or array_like of float
            Probabilities in ``[0, 1]``.

        Returns
        -------
        float or ndarray
            Same shape as ``q``; a numpy scalar for scalar ``q``. Non-decreasing in ``q``.

        Raises
        ------
        TypeError
            If ``q`` is not real-valued.
        ValueError
            If ``q`` contains NaN or values outside ``[0, 1]``.
        """
        probs = as_real_array("q", q)
        if ((probs < 0.0) | (probs > 1.0)).any():
            bad = probs[(probs < 0.0) | (probs > 1.0)].flat[0]
            raise ValueError(f"q must be in [0, 1], got {bad}")
        with np.errstate(over="ignore", divide="ignore"):
            return _scalar_or_array(self._ppf(probs))

    @property
    @abc.abstractmethod
    def mean(self) -> float:
        """Expected task time ``E[T]`` in seconds (``inf`` if it does not exist)."""

    @abc.abstractmethod
    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Draw ``shape`` task times from ``rng``."""

    @abc.abstractmethod
    def _cdf(self, t: np.ndarray) -> np.ndarray:
        """CDF at float64 times ``t`` (no NaN)."""

    @abc.abstractmethod
    def _ppf(self, q: np.ndarray) -> np.ndarray:
        """Quantiles at float64 probabilities ``q`` in ``[0, 1]``."""

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments, in order, for ``__repr__``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({args})"


class ShiftedExponential(RuntimeModel):
    """``T = shift + Exponential(mean=scale)``: the standard straggler model.

    Parameters
    ----------
    shift : float
        Minimum task time in seconds, ``>= 0`` (the deterministic part of the work).
    scale : float
        Mean of the exponential delay on top, ``> 0``.

    Notes
    -----
    ``F(t) = 1 - exp(-(t - shift) / scale)`` for ``t >= shift``;
    ``ppf(q) = shift - scale * log(1 - q)``; ``E[T] = shift + scale``.

    References
    ----------
    K. Lee, M. Lam, R. Pedarsani, D. Papailiopoulos and K. Ramchandran, "Speeding Up
    Distributed Machine Learning Using Codes", IEEE Trans. IT, 2018 (arXiv 2015).

    Examples
    --------
    >>> model = ShiftedExponential(shift=0.1, scale=0.05)
    >>> model
    ShiftedExponential(shift=0.1, scale=0.05)
    >>> model.mean
    0.15000000000000002
    >>> model.cdf([0.0, 0.1, 0.15]).round(4)
    array([0.    , 0.    , 0.6321])
    >>> float(model.ppf(0.0))
    0.1
    >>> model.sample((2, 3), seed=0).shape
    (2, 3)
    """

    def __init__(self, shift: float, scale: float) -> None:
        self.shift = check_positive("shift", shift, allow_zero=True)
        self.scale = check_positive("scale", scale)

    @property
    def mean(self) -> float:
        return self.shift + self.scale

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.shift + rng.exponential(self.scale, shape)

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        # clipping first keeps exp() from overflowing far left of the shift
        excess = np.maximum(t - self.shift, 0.0)
        return -np.expm1(-excess / self.scale)

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        return self.shift - self.scale * np.log1p(-q)

    def _params(self) -> dict[str, Any]:
        return {"shift": self.shift, "scale": self.scale}


class Bimodal(RuntimeModel):
    """A fraction ``slow_prob`` of workers is slower by a factor ``slowdown``.

    ``T = base * (slowdown if slow else 1) * (1 + jitter * U)``, with ``slow`` a Bernoulli
    variable of probability ``slow_prob`` and ``U ~ Uniform(0, 1)`` independent.

    Parameters
    ----------
    base : float
        Task time of a normal worker without jitter, ``> 0``.
    slow_prob : float
        Probability in ``[0, 1]`` that a worker is slow.
    slowdown : float
        Factor ``>= 1`` by which slow workers are slower.
    jitter : float, default 0.0
        Relative spread ``>= 0`` of the uniform noise. With ``jitter=0`` the CDF is a step
        function with two jumps (the erasure channel of the polar-code literature).

    Notes
    -----
    The CDF is the exact mixture ``(1 - p) F_fast(t) + p F_slow(t)`` of two uniform (or,
    for ``jitter=0``, point) distributions on ``[a, a (1 + jitter)]`` with ``a = base`` and
    ``a = base * slowdown``. It is piecewise linear between the four interval ends, so
    ``ppf`` inverts it exactly on that piece; for ``jitter=0`` ``ppf`` returns the atom
    where the CDF first reaches ``q`` (the generalised inverse). ``ppf(0)`` and ``ppf(1)``
    are the ends of the support.
    ``E[T] = base (1 + jitter / 2) (1 - p + p slowdown)``.

    With ``jitter=0`` the polar design from this model equals the erasure design at
    ``straggler_prob = slow_prob``: the expected virtual finish time is
    ``base + base (slowdown - 1) P(virtual worker slow)``, and that probability follows
    Arikan's erasure recursion.

    Examples
    --------
    >>> model = Bimodal(base=1.0, slow_prob=0.1, slowdown=5.0)
    >>> model
    Bimodal(base=1.0, slow_prob=0.1, slowdown=5.0, jitter=0.0)
    >>> model.cdf([0.5, 1.0, 4.9, 5.0])
    array([0. , 0.9, 0.9, 1. ])
    >>> model.ppf([0.0, 0.9, 0.95])
    array([1., 1., 5.])
    >>> round(model.mean, 6)
    1.4
    """

    def __init__(
        self, base: float, slow_prob: float, slowdown: float, jitter: float = 0.0
    ) -> None:
        self.base = check_positive("base", base)
        self.slow_prob = check_probability("slow_prob", slow_prob, open_interval=False)
        self.slowdown = check_real("slowdown", slowdown, minimum=1.0)
        self.jitter = check_positive("jitter", jitter, allow_zero=True)

    @property
    def mean(self) -> float:
        p = self.slow_prob
        return self.base * (1.0 + self.jitter / 2.0) * ((1.0 - p) + p * self.slowdown)

    def _starts(self) -> np.ndarray:
        return np.array([self.base, self.base * self.slowdown])

    def _weights(self) -> np.ndarray:
        return np.array([1.0 - self.slow_prob, self.slow_prob])

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        # one pair of uniforms per task, so a task's draw does not depend on how many follow
        slow_u, noise = np.moveaxis(rng.random((*shape, 2)), -1, 0)
        slow = slow_u < self.slow_prob
        return self.base * np.where(slow, self.slowdown, 1.0) * (1.0 + self.jitter * noise)

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        starts, weights = self._starts(), self._weights()
        ends = starts * (1.0 + self.jitter)
        t = t[..., np.newaxis]
        if self.jitter == 0.0:
            parts = (t >= starts).astype(np.float64)
        else:
            # exactly 1 from each interval's end on: (end - start) / width can round below 1
            ramp = np.clip((t - starts) / (starts * self.jitter), 0.0, 1.0)
            parts = np.where(t >= ends, 1.0, ramp)
        return parts @ weights

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        # q = 1 maps to the top of the support even when the slow mass is below float
        # resolution next to 1 (as in scipy.stats: ppf(1) is the upper end)
        top = self.base * (1.0 + self.jitter) * (self.slowdown if self.slow_prob > 0 else 1.0)
        return np.where(q == 1.0, top, self._ppf_below_one(q))

    def _ppf_below_one(self, q: np.ndarray) -> np.ndarray:
        starts, weights = self._starts(), self._weights()
        if self.jitter == 0.0:
            # atoms at the two starts; cumulative mass 1 - p, then exactly 1
            cumulative = np.array([weights[0], 1.0])
            index = np.where(
                q > 0.0,
                np.searchsorted(cumulative, q, side="left"),
                np.searchsorted(cumulative, 0.0, side="right"),
            )
            return starts[index]
        # continuous and piecewise linear between the interval ends
        knots = np.unique(np.concatenate([starts, starts * (1.0 + self.jitter)]))
        levels = self._cdf(knots)
        levels[0], levels[-1] = 0.0, 1.0
        # first knot at which F reaches q (for q = 0: first knot where F > 0), so that the
        # piece [knots[i-1], knots[i]] has F(knots[i-1]) < F(knots[i]) and can be inverted
        index = np.where(
            q > 0.0,
            np.searchsorted(levels, q, side="left"),
            np.searchsorted(levels, 0.0, side="right"),
        )
        lo_t, hi_t = knots[index - 1], knots[index]
        lo_f, hi_f = levels[index - 1], levels[index]
        # clipping to the piece keeps ppf monotone across pieces despite rounding
        return np.clip(lo_t + (q - lo_f) / (hi_f - lo_f) * (hi_t - lo_t), lo_t, hi_t)

    def _params(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "slow_prob": self.slow_prob,
            "slowdown": self.slowdown,
            "jitter": self.jitter,
        }


class Pareto(RuntimeModel):
    """Heavy-tailed task times: ``T = shift + X`` with ``X ~ Lomax(alpha, scale)``.

    ``P(X > x) = (1 + x / scale) ** -alpha``: a Pareto tail that starts at ``shift``.

    Parameters
    ----------
    shift : float
        Minimum task time in seconds, ``>= 0``.
    scale : float
        Scale of the delay, ``> 0``.
    alpha : float
        Tail index, ``> 0``; smaller is heavier. The mean is finite only for ``alpha > 1``
        and the variance only for ``alpha > 2``.

    Notes
    -----
    ``F(t) = 1 - (1 + (t - shift) / scale) ** -alpha`` for ``t >= shift``;
    ``ppf(q) = shift + scale ((1 - q) ** (-1 / alpha) - 1)``;
    ``E[T] = shift + scale / (alpha - 1)`` for ``alpha > 1``, else ``inf``.

    Examples
    --------
    >>> model = Pareto(shift=0.1, scale=0.05, alpha=2.5)
    >>> model
    Pareto(shift=0.1, scale=0.05, alpha=2.5)
    >>> round(model.mean, 6)
    0.133333
    >>> float(model.cdf(model.ppf(0.99)).round(12))
    0.99
    >>> Pareto(shift=0.0, scale=1.0, alpha=1.0).mean
    inf
    """

    def __init__(self, shift: float, scale: float, alpha: float) -> None:
        self.shift = check_positive("shift", shift, allow_zero=True)
        self.scale = check_positive("scale", scale)
        self.alpha = check_positive("alpha", alpha)

    @property
    def mean(self) -> float:
        if self.alpha <= 1.0:
            return float("inf")
        return self.shift + self.scale / (self.alpha - 1.0)

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        # numpy's ``pareto`` is the Lomax (Pareto II) distribution with unit scale
        return self.shift + self.scale * rng.pareto(self.alpha, shape)

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        excess = np.maximum(t - self.shift, 0.0)
        return -np.expm1(-self.alpha * np.log1p(excess / self.scale))

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        return self.shift + self.scale * np.expm1(-np.log1p(-q) / self.alpha)

    def _params(self) -> dict[str, Any]:
        return {"shift": self.shift, "scale": self.scale, "alpha": self.alpha}


class Empirical(RuntimeModel):
    """Resample measured task times (e.g. logged Dask task durations or Lambda runtimes).

    Parameters
    ----------
    samples : array_like of float, 1-D
        At least one finite, non-negative task time in seconds.

    Notes
    -----
    ``sample`` draws uniformly with replacement from ``samples``; ``cdf`` is the empirical
    CDF ``#{x_i <= t} / m``; ``ppf(q)`` is the smallest sample ``x`` with ``cdf(x) >= q``
    (``numpy.quantile(..., method="inverted_cdf")``), so ``ppf(cdf(x_i)) == x_i`` for every
    sample. ``E[T]`` is the sample mean.

    Examples
    --------
    >>> model = Empirical([0.3, 0.1, 0.2, 0.2])
    >>> model
    Empirical(samples=<4 values in [0.1, 0.3]>)
    >>> model.cdf([0.05, 0.1, 0.2, 0.3])
    array([0.  , 0.25, 0.75, 1.  ])
    >>> model.ppf([0.0, 0.25, 0.5, 1.0])
    array([0.1, 0.1, 0.2, 0.3])
    >>> sorted(set(model.sample(100, seed=0).tolist()))
    [0.1, 0.2, 0.3]
    """

    def __init__(self, samples: Any) -> None:
        values = as_real_array("samples", samples, allow_nan=True)
        if values.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {values.shape}")
        if values.size == 0:
            raise ValueError("samples must contain at least one task time, got 0")
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(f"samples must be finite, got {bad} NaN or infinite values")
        if (values < 0).any():
            raise ValueError(f"samples must be non-negative, got minimum {values.min()}")
        self.samples = np.sort(values)
        self.samples.setflags(write=False)
        # same float expression as in _cdf, so that ppf(cdf(x_i)) finds x_i exactly
        self._levels = np.arange(1, values.size + 1) / values.size

    @property
    def mean(self) -> float:
        return float(self.samples.mean())

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return self.samples[rng.integers(0, self.samples.size, size=shape)]

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.samples, t, side="right") / self.samples.size

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self._levels, q, side="left")
        return self.samples[np.minimum(index, self.samples.size - 1)]

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        lo, hi = self.samples[0], self.samples[-1]
        return f"Empirical(samples=<{self.samples.size} values in [{lo:g}, {hi:g}]>)"


class NoStragglers(RuntimeModel):
    """Zero delay for every task: straggler injection switched off.

    Examples
    --------
    >>> model = NoStragglers()
    >>> model
    NoStragglers()
    >>> model.sample(3, seed=0)
    array([0., 0., 0.])
    >>> model.cdf([-1.0, 0.0, 2.0]), model.mean
    (array([0., 1., 1.]), 0.0)
    """

    @property
    def mean(self) -> float:
        return 0.0

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        return (t >= 0.0).astype(np.float64)

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        return np.zeros_like(q)

    def _params(self) -> dict[str, Any]:
        return {}


def draw_delays(
    model: RuntimeModel, n: int, *, seed: Seed, trials: int | None = None
) -> np.ndarray:
    """Per-task injected delays for ``n`` tasks, optionally for many trials at once.

    Parameters
    ----------
    model : RuntimeModel
        Distribution of one task's delay in seconds.
    n : int
        Number of tasks (workers), ``>= 1``.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        Required (pass ``None`` explicitly for fresh entropy): methods compared side by
        side must meet the same draws.
    trials : int, optional
        Number of independent trials, ``>= 1``.

    Returns
    -------
    ndarray of float64
        Shape ``(n,)``, or ``(trials, n)`` when ``trials`` is given; row ``r`` holds the
        delays of trial ``r``. Without ``trials``, task ``j``'s delay does not depend on
        ``n``: methods with different numbers of tasks (uncoded ``k``, coded ``n``) meet the
        same stragglers on their common tasks.

    Raises
    ------
    TypeError
        If ``model`` is not a `RuntimeModel`, or ``n``, ``trials`` or ``seed`` have the
        wrong type.
    ValueError
        If ``n < 1`` or ``trials < 1``.

    Examples
    --------
    >>> model = ShiftedExponential(shift=0.0, scale=0.1)
    >>> delays = draw_delays(model, 8, seed=42, trials=100)
    >>> delays.shape
    (100, 8)
    >>> bool((delays == draw_delays(model, 8, seed=42, trials=100)).all())
    True
    >>> draw_delays(NoStragglers(), 4, seed=0)
    array([0., 0., 0., 0.])
    """
    if not isinstance(model, RuntimeModel):
        raise TypeError(
            f"model must be a RuntimeModel (e.g. ShiftedExponential), "
            f"got {type(model).__name__} {model!r}"
        )
    n = check_int("n", n, minimum=1)
    if trials is None:
        return model.sample((n,), seed=seed)
    trials = check_int("trials", trials, minimum=1)
    return model.sample((trials, n), seed=seed)
