"""Worker finish times for the simulator: a Lambda-like runtime model and heterogeneous pools.

`LambdaLike` is a `dask_polar.stragglers.RuntimeModel` (exact ``cdf``/``ppf``, seeded
``sample``), so it can also inject delays into real jobs and design polar codes.
`Heterogeneity` turns i.i.d. draws into a heterogeneous or correlated pool: fixed per-worker
speed factors, and groups of workers (a host, a rack) that slow down together.
`draw_finish_times` draws the ``(trials, workers)`` table the simulator runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import (
    as_real_array,
    check_int,
    check_positive,
    check_probability,
    check_real,
    check_seed,
)
from ..stragglers import RuntimeModel
from ..stragglers.models import Seed

__all__ = ["Heterogeneity", "LambdaLike", "draw_finish_times"]


# bisection steps for the mixture's quantile: each halves a bracket in log-time, so 64 steps
# take any float64 bracket down to rounding
_BISECTION_STEPS = 64


class LambdaLike(RuntimeModel):
    """Serverless-like task times: a tight body around the median and a rare Pareto tail.

    With probability ``1 - tail_prob`` a task is "normal" and takes a log-logistic time with
    median ``median`` and shape ``spread`` (larger is tighter); with probability
    ``tail_prob`` it straggles and takes ``median * tail_start * U ** (-1 / tail_index)``
    (Pareto type I from ``tail_start`` medians on).

    Parameters
    ----------
    median : float, default 1.0
        Median task time of a normal task, seconds, ``> 0``.
    spread : float, default 15.0
        Log-logistic shape ``> 1``; with 15 the central 90 % of normal tasks lie within
        about -18 % / +22 % of the median.
    tail_prob : float, default 0.02
        Probability in ``[0, 1]`` that a task straggles.
    tail_start : float, default 2.0
        Stragglers take at least this many medians, ``>= 1``.
    tail_index : float, default 1.5
        Pareto tail index ``> 0`` (smaller is heavier; the mean is infinite for ``<= 1``).

    Notes
    -----
    The defaults are *shape* parameters in the range that published measurements of AWS
    Lambda fleets describe qualitatively (Jonas et al., "Occupy the Cloud", 2017; Gupta et
    al., "Serverless straggler mitigation using error-correcting codes", ICDCS 2020): most
    invocations finish close to the median, and a few percent take several times longer,
    with a tail that decays like a power law. They are not fitted to any data set here; set
    them from your own logged task times (or use `dask_polar.stragglers.Empirical`).

    ``F(t) = (1 - p) / (1 + (t / m) ** -b) + p * (1 - (t / (m s)) ** -a)`` (the second term
    for ``t >= m s``). ``ppf`` inverts the mixture by bisection in log-time, bracketed by the
    two components' quantiles. ``E[T] = (1 - p) m (pi / b) / sin(pi / b) + p m s a / (a - 1)``.

    Examples
    --------
    >>> model = LambdaLike(median=2.0)
    >>> model
    LambdaLike(median=2.0, spread=15.0, tail_prob=0.02, tail_start=2.0, tail_index=1.5)
    >>> round(float(model.cdf(2.0)), 3)  # half of the normal tasks are faster
    0.49
    >>> round(float(model.ppf(0.99)) / 2.0, 2)  # p99 in medians: deep in the tail
    3.17
    >>> float(model.cdf(model.ppf(0.3)).round(9))
    0.3
    >>> round(model.mean, 3)
    2.214
    """

    def __init__(
        self,
        median: float = 1.0,
        spread: float = 15.0,
        tail_prob: float = 0.02,
        tail_start: float = 2.0,
        tail_index: float = 1.5,
    ) -> None:
        self.median = check_positive("median", median)
        self.spread = check_real("spread", spread, minimum=1.0, strict=True)
        self.tail_prob = check_probability("tail_prob", tail_prob, open_interval=False)
        self.tail_start = check_real("tail_start", tail_start, minimum=1.0)
        self.tail_index = check_positive("tail_index", tail_index)

    @property
    def mean(self) -> float:
        p, b, a = self.tail_prob, self.spread, self.tail_index
        body = self.median * (math.pi / b) / math.sin(math.pi / b)
        if p == 0.0:
            return body
        if a <= 1.0:
            return float("inf")
        return (1.0 - p) * body + p * self.median * self.tail_start * a / (a - 1.0)

    def _body_ppf(self, q: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.median * (q / (1.0 - q)) ** (1.0 / self.spread)

    def _tail_ppf(self, q: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return self.median * self.tail_start * (1.0 - q) ** (-1.0 / self.tail_index)

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        # one pair of uniforms per task, so a task's draw does not depend on how many follow
        which, u = np.moveaxis(rng.random((*shape, 2)), -1, 0)
        # u in [0, 1): the body's quantile is finite; 1 - u in (0, 1]: so is the tail's
        return np.where(which < self.tail_prob, self._tail_ppf(u), self._body_ppf(u))

    def _cdf(self, t: np.ndarray) -> np.ndarray:
        positive = np.maximum(t, 0.0)
        with np.errstate(divide="ignore"):
            body = np.where(t > 0.0, 1.0 / (1.0 + (positive / self.median) ** -self.spread), 0.0)
            start = self.median * self.tail_start
            excess = np.log(np.maximum(t, start) / start)  # 0 below the tail's start
            tail = np.where(t >= start, -np.expm1(-self.tail_index * excess), 0.0)
        return (1.0 - self.tail_prob) * body + self.tail_prob * tail

    def _ppf(self, q: np.ndarray) -> np.ndarray:
        body, tail = self._body_ppf(q), self._tail_ppf(q)
        if self.tail_prob == 0.0:
            return body
        if self.tail_prob == 1.0:
            return np.where(q == 0.0, self.median * self.tail_start, tail)
        # F is a mixture of the two: below both components' quantiles it is < q, above both
        # it is >= q, so the quantile lies between them
        lo = np.minimum(body, tail)
        hi = np.maximum(body, tail)
        inner = (q > 0.0) & (q < 1.0)
        lo_log = np.log(np.where(inner, lo, 1.0))
        hi_log = np.log(np.where(inner, hi, 1.0))
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo_log + hi_log)
            below = self._cdf(np.exp(mid)) < q
            lo_log = np.where(below, mid, lo_log)
            hi_log = np.where(below, hi_log, mid)
        return np.where(q == 0.0, 0.0, np.where(q == 1.0, np.inf, np.exp(hi_log)))

    def _params(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "spread": self.spread,
            "tail_prob": self.tail_prob,
            "tail_start": self.tail_start,
            "tail_index": self.tail_index,
        }


_LAYOUTS = ("contiguous", "strided")


@dataclass(frozen=True, eq=False)  # eq would compare arrays elementwise
class Heterogeneity:
    """How a pool of workers departs from i.i.d. task times.

    A worker's finish time is its i.i.d. draw from the runtime model times its speed factor,
    times ``group_slowdown`` in trials where its group is slow.

    Parameters
    ----------
    speed_factors : array_like of float, optional
        Fixed per-worker multipliers (``> 0``; ``2.0`` is a worker twice as slow), the same in
        every trial; length ``workers`` (checked when drawing).
    speed_spread : float, default 0.0
        Draw the per-worker multipliers instead, log-normal with this sigma (``>= 0``) and
        median 1, once per simulation. Not together with ``speed_factors``.
    group_size : int, default 1
        Workers per group (a host or rack that slows down as one).
    group_slow_prob : float, default 0.0
        Probability, per trial and group, that the whole group is slow.
    group_slowdown : float, default 1.0
        Factor ``>= 1`` by which a slow group's workers are slower.
    layout : {"contiguous", "strided"}
        Which workers share a group: ``contiguous`` groups are ``[g * size, (g + 1) * size)``
        (coded task ``j`` runs on worker ``j``, so a slow host erases a contiguous run of
        coded outputs, an aligned subtree of the polar butterfly); ``strided`` groups take
        every ``workers / size``-th worker (tasks spread over hosts round-robin).

    Examples
    --------
    >>> het = Heterogeneity(group_size=8, group_slow_prob=0.05, group_slowdown=4.0)
    >>> het.correlated
    True
    >>> Heterogeneity(speed_spread=0.2).factors(4, np.random.default_rng(0)).round(3)
    array([1.025, 0.974, 1.137, 1.021])
    """

    speed_factors: Any = None
    speed_spread: float = 0.0
    group_size: int = 1
    group_slow_prob: float = 0.0
    group_slowdown: float = 1.0
    layout: str = "contiguous"
    _factors: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.speed_factors is not None:
            factors = as_real_array("speed_factors", self.speed_factors)
            if factors.ndim != 1 or factors.size == 0:
                raise ValueError(
                    f"speed_factors must be a non-empty 1-D array, got shape {factors.shape}"
                )
            if not (np.isfinite(factors).all() and (factors > 0).all()):
                raise ValueError("speed_factors must be finite and > 0")
            factors.setflags(write=False)
            object.__setattr__(self, "_factors", factors)
        object.__setattr__(
            self, "speed_spread", check_positive("speed_spread", self.speed_spread, allow_zero=True)
        )
        if self.speed_factors is not None and self.speed_spread > 0:
            raise ValueError("give at most one of speed_factors and speed_spread")
        object.__setattr__(self, "group_size", check_int("group_size", self.group_size, minimum=1))
        object.__setattr__(
            self,
            "group_slow_prob",
            check_probability("group_slow_prob", self.group_slow_prob, open_interval=False),
        )
        object.__setattr__(
            self, "group_slowdown", check_real("group_slowdown", self.group_slowdown, minimum=1.0)
        )
        if not isinstance(self.layout, str):
            raise TypeError(f"layout must be a string, got {type(self.layout).__name__}")
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {self.layout!r}")

    @property
    def correlated(self) -> bool:
        """Whether workers slow down together (groups of more than one worker)."""
        return self.group_size > 1 and self.group_slow_prob > 0 and self.group_slowdown > 1

    def factors(self, workers: int, rng: np.random.Generator) -> np.ndarray:
        """Per-worker fixed speed factors, shape ``(workers,)`` (ones if none are set)."""
        if self._factors is not None:
            if self._factors.size != workers:
                raise ValueError(
                    f"speed_factors must have one entry per worker ({workers}), "
                    f"got {self._factors.size}"
                )
            return self._factors.copy()
        if self.speed_spread > 0:
            return rng.lognormal(0.0, self.speed_spread, workers)
        return np.ones(workers)

    def group_of(self, workers: int) -> np.ndarray:
        """Group index of every worker, shape ``(workers,)``."""
        groups = -(-workers // self.group_size)
        index = np.arange(workers)
        return index // self.group_size if self.layout == "contiguous" else index % groups

    def slow_groups(self, workers: int, trials: int, rng: np.random.Generator) -> np.ndarray:
        """Per-trial, per-worker slowdown from the groups, shape ``(trials, workers)``."""
        groups = -(-workers // self.group_size)
        slow = rng.random((trials, groups)) < self.group_slow_prob
        return np.where(slow, self.group_slowdown, 1.0)[:, self.group_of(workers)]


def draw_finish_times(
    model: RuntimeModel,
    workers: int,
    *,
    trials: int,
    seed: Seed,
    heterogeneity: Heterogeneity | None = None,
    backups: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Seeded finish times of a pool of workers, one row per trial.

    Parameters
    ----------
    model : RuntimeModel
        One worker's task time (the i.i.d. part).
    workers : int
        Pool size, ``>= 1``; coded task ``j`` runs on worker ``j``.
    trials : int
        Independent trials, ``>= 1``.
    seed : int, numpy.random.Generator, numpy.random.SeedSequence or None
        Required (``None`` explicitly for fresh entropy), as in `dask_polar.stragglers.draw_delays`.
    heterogeneity : Heterogeneity, optional
        Per-worker speed factors and correlated slow groups; default i.i.d.
    backups : bool, default False
        Also return a second, independent table: the times of copies launched later
        (backup tasks), with the same speed factors and slow groups. The copy of task ``i``
        runs on the spare worker ``(k + i) mod workers`` (``k`` is unknown here; see
        `simulate`, which rolls this table), so column ``w`` is a fresh draw on worker ``w``.

    Returns
    -------
    ndarray of shape (trials, workers), or a pair of them with ``backups=True``

    Notes
    -----
    The seed feeds independent streams (``Generator.spawn``) for the first draws, the
    backup draws, the speed factors and the groups, so adding backups or heterogeneity does
    not change the other draws.

    Examples
    --------
    >>> from dask_polar.stragglers import ShiftedExponential
    >>> model = ShiftedExponential(shift=1.0, scale=0.2)
    >>> times = draw_finish_times(model, 16, trials=3, seed=0)
    >>> times.shape, bool((times >= 1.0).all())
    ((3, 16), True)
    >>> slow = Heterogeneity(group_size=4, group_slow_prob=1.0, group_slowdown=10.0)
    >>> slowed = draw_finish_times(model, 16, trials=3, seed=0, heterogeneity=slow)
    >>> bool((slowed == 10 * times).all())
    True
    """
    if not isinstance(model, RuntimeModel):
        raise TypeError(
            f"model must be a RuntimeModel (e.g. ShiftedExponential), "
            f"got {type(model).__name__} {model!r}"
        )
    workers = check_int("workers", workers, minimum=1)
    trials = check_int("trials", trials, minimum=1)
    if heterogeneity is not None and not isinstance(heterogeneity, Heterogeneity):
        raise TypeError(
            f"heterogeneity must be a Heterogeneity, got {type(heterogeneity).__name__}"
        )
    if not isinstance(backups, (bool, np.bool_)):
        raise TypeError(f"backups must be a bool, got {type(backups).__name__}")
    first_rng, backup_rng, factor_rng, group_rng = check_seed("seed", seed).spawn(4)
    first = model.sample((trials, workers), seed=first_rng)
    second = model.sample((trials, workers), seed=backup_rng) if backups else None
    if heterogeneity is not None:
        scale = heterogeneity.factors(workers, factor_rng)[np.newaxis, :]
        if heterogeneity.correlated:
            scale = scale * heterogeneity.slow_groups(workers, trials, group_rng)
        first = first * scale
        if second is not None:
            second = second * scale
    return (first, second) if backups else first
