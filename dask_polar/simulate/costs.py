"""Encode/decode cost models for the simulator: affine in the work, calibrated by measurement.

Every encode or decode step of a method is one of four kinds of work, each with its own
affine cost ``seconds = intercept + slope * work``:

===========  ======================================================  =========================
kind         used by                                                 work (units)
===========  ======================================================  =========================
``add``      polar encode (butterfly), local-product encode/peel     block additions x bytes
``sc``       polar SC decode (subtractions plus re-encoding)         ``(n/2) log2 n`` x bytes
``gemm``     MDS encode/decode, the inactivation decoder's mix       rows x inner x bytes
``solve``    MDS decode's dense ``u x u`` factorisation              ``u**3``
===========  ======================================================  =========================

The defaults were measured with `measure_costs` on the project's 2-core machine (numpy,
64 KiB float64 blocks); re-measure on yours with ``measure_costs()`` (the ``bench_simulate``
benchmark does) and pass the result as ``simulate(cost=...)``.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .._validation import check_int, check_positive, check_seed

__all__ = ["Affine", "CostModel", "measure_costs"]


class Affine(NamedTuple):
    """``seconds = intercept + slope * work`` (no cost at all for zero work).

    Examples
    --------
    >>> Affine(1e-3, 2e-9)(1e6)
    0.003
    >>> Affine(1e-3, 2e-9)(0)
    0.0
    """

    intercept: float
    slope: float

    def __call__(self, work: Any) -> Any:
        work = np.asarray(work, dtype=np.float64)
        seconds = np.where(work > 0, self.intercept + self.slope * work, 0.0)
        return float(seconds) if seconds.ndim == 0 else seconds


@dataclass(frozen=True)
class CostModel:
    """Affine costs of the four kinds of encode/decode work (see the module docstring).

    Parameters
    ----------
    add, sc, gemm, solve : Affine
        ``(intercept seconds, seconds per unit of work)``.

    Examples
    --------
    >>> cost = CostModel()
    >>> seconds = cost.polar_encode(1024, 65536)   # 1024 coded blocks of 64 KiB
    >>> 0 < seconds < 1
    True
    >>> CostModel.free().mds_decode(512, 256, 65536)
    0.0
    """

    # measured with measure_costs on the project's 2-core machine in quiet moments
    # (out-of-cache sizes; under a busy neighbour they come out 2-4x higher)
    add: Affine = Affine(1e-4, 2.0e-10)
    sc: Affine = Affine(1e-4, 6.0e-10)
    gemm: Affine = Affine(1e-4, 5.0e-12)
    solve: Affine = Affine(1e-4, 8.0e-10)

    def __post_init__(self) -> None:
        for name in ("add", "sc", "gemm", "solve"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 2:
                raise TypeError(f"{name} must be an Affine(intercept, slope), got {value!r}")
            intercept = check_positive(f"{name}.intercept", value[0], allow_zero=True)
            slope = check_positive(f"{name}.slope", value[1], allow_zero=True)
            object.__setattr__(self, name, Affine(intercept, slope))

    @classmethod
    def free(cls) -> CostModel:
        """No encode or decode cost: latency is the arrival time alone."""
        zero = Affine(0.0, 0.0)
        return cls(zero, zero, zero, zero)

    def to_dict(self) -> dict[str, list[float]]:
        """``{kind: [intercept, slope]}``, JSON-friendly."""
        return {name: list(value) for name, value in asdict(self).items()}

    # -- per-method costs: shapes follow the real encoders/decoders in dask_polar.codes ----------

    def polar_encode(self, n: int, block_bytes: int) -> float:
        """The butterfly: ``(n/2) log2 n`` block additions."""
        return float(self.add(_butterfly_ops(n) * block_bytes))

    def polar_decode(self, n: int, k: int, block_bytes: int, symbols: Any = 0) -> Any:
        """SC decode, plus for ``symbols`` inactive symbols the ``k x symbols`` mix."""
        sc = self.sc(_butterfly_ops(n) * block_bytes)
        return sc + self.gemm(k * np.asarray(symbols, dtype=np.float64) * block_bytes)

    def mds_encode(self, n: int, k: int, block_bytes: int) -> float:
        """The ``(n - k) x k`` parity product."""
        return float(self.gemm((n - k) * k * block_bytes))

    def mds_decode(self, k: int, unknown: Any, block_bytes: int) -> Any:
        """Solve for ``unknown`` data blocks: a ``u x u`` pseudo-inverse and two products."""
        u = np.asarray(unknown, dtype=np.float64)
        return self.gemm(u * k * block_bytes) + self.solve(u**3)

    def local_product_encode(self, k: int, rows: int, block_bytes: int) -> float:
        """Row sums, column sums and the corner: about ``2k + rows`` block additions."""
        return float(self.add((2 * k + rows) * block_bytes))

    def local_product_decode(self, peeled: Any, group_size: int, block_bytes: int) -> Any:
        """Each peeled block is a line sum of about ``group_size`` blocks."""
        return self.add(np.asarray(peeled, dtype=np.float64) * group_size * block_bytes)


def _butterfly_ops(n: int) -> float:
    return n / 2 * math.log2(n) if n > 1 else 0.0


def _nothing() -> None:
    return None


def _call(function: Callable[[Any], Any], argument: Any, _state: Any) -> Any:
    return function(argument)


def _decode(code: Any, mask: np.ndarray, buffer: np.ndarray) -> Any:
    return code._decode(buffer, mask)


def _fit(points: Sequence[tuple[float, float]]) -> Affine:
    """Least-squares ``seconds = a + b * work`` with ``a, b >= 0``."""
    work = np.array([p[0] for p in points], dtype=np.float64)
    seconds = np.array([p[1] for p in points], dtype=np.float64)
    if work.size >= 2 and np.ptp(work) > 0:
        slope, intercept = np.polyfit(work, seconds, 1)
        if intercept >= 0 and slope > 0:
            return Affine(float(intercept), float(slope))
    # through the origin: a negative intercept is noise on a shared machine
    return Affine(0.0, float(max(seconds @ work / (work @ work), 0.0)))


def _best_seconds(
    jobs: Sequence[tuple[Callable[[], Any], Callable[[Any], Any]]], repeats: int
) -> list[float]:
    """Fastest of ``repeats`` timed calls of each ``(setup, timed)`` job, in interleaved rounds.

    One round times every job once, so a burst of load from another tenant hits all sizes
    alike instead of one; the first round warms caches and allocators and is dropped. The
    minimum, not the median: on a shared machine the other tenants only ever add time (and
    multithreaded BLAS next to a busy neighbour can take 20x longer), while the cost model
    should describe the operation itself.
    """
    best = [math.inf] * len(jobs)
    enabled = gc.isenabled()
    gc.disable()  # a collection inside one timing would be charged to that operation
    try:
        for round_ in range(repeats + 1):
            for i, (setup, timed) in enumerate(jobs):
                state = setup()
                start = time.perf_counter()
                timed(state)
                seconds = time.perf_counter() - start
                if round_:
                    best[i] = min(best[i], seconds)
    finally:
        if enabled:
            gc.enable()
    return best


def measure_costs(
    *, quick: bool = True, block_bytes: int = 65536, seed: int = 0
) -> tuple[CostModel, dict[str, list[dict[str, float]]]]:
    """Time the real encoders and decoders on this machine and fit a `CostModel`.

    Measures `PolarCode` encode (``add``) and SC decode (``sc``) at a few ``n``, `MDSCode`
    encode (``gemm``), and ``numpy.linalg.pinv`` of ``u x u`` systems (``solve``, as in
    `MDSCode` decoding), each the fastest of a few repeats, and fits one `Affine` per kind.

    Parameters
    ----------
    quick : bool, default True
        Fewer sizes (a few seconds at 64 KiB); ``False`` adds more and larger ones.
    block_bytes : int, default 65536
        Bytes per float64 block (``>= 8``).
    seed : int, default 0
        Seed of the random blocks and arrival orders.

    Returns
    -------
    cost : CostModel
    points : dict
        ``{kind: [{"size": ..., "work": ..., "seconds": ...}, ...]}``, the measurements.

    Examples
    --------
    >>> cost, points = measure_costs(block_bytes=1024)
    >>> sorted(points)
    ['add', 'gemm', 'sc', 'solve']
    >>> cost.sc.slope > 0
    True
    """
    from ..codes import MDSCode, PolarCode
    from ..codes.construction import polarize

    if isinstance(quick, (bool, np.bool_)) is False:
        raise TypeError(f"quick must be a bool, got {type(quick).__name__}")
    block_bytes = check_int("block_bytes", block_bytes, minimum=8)
    rng = check_seed("seed", seed)
    elems = block_bytes // 8
    repeats = 5 if quick else 9
    # the largest sizes leave the caches, as the simulated jobs at thousands of workers do
    polar_sizes = (256, 1024) if quick else (64, 256, 1024, 2048)
    mds_sizes = (64, 128) if quick else (32, 64, 128, 256)
    solve_sizes = (128, 256) if quick else (64, 128, 256, 512)
    jobs: list[tuple[str, int, float, Callable[[], Any], Callable[[Any], Any]]] = []
    for n in polar_sizes:
        k = n // 2
        data = rng.standard_normal((k, elems))
        code = PolarCode(n, k, decoder="sc")
        work = _butterfly_ops(n) * block_bytes
        jobs.append(("add", n, work, _nothing, functools.partial(_call, code.encode, data)))
        coded = code.encode(data)
        # decode from the first SC-decodable prefix of a random arrival order, as a job does
        ranks = rng.permutation(n)
        needed = int(polarize(ranks, np.maximum, np.minimum)[code.info_set].max()) + 1
        mask = ranks < needed
        received = np.where(mask[:, np.newaxis], coded, 0.0)
        # the decoder works in place: each call gets a fresh copy, made untimed
        jobs.append(("sc", n, work, received.copy, functools.partial(_decode, code, mask)))
    for k in mds_sizes:
        code = MDSCode(2 * k, k)
        data = rng.standard_normal((k, elems))
        jobs.append(("gemm", k, k * k * block_bytes, _nothing,
                     functools.partial(_call, code.encode, data)))
    for u in solve_sizes:
        system = rng.standard_normal((u, u))
        jobs.append(("solve", u, float(u) ** 3, _nothing,
                     functools.partial(_call, np.linalg.pinv, system)))

    seconds = _best_seconds([(setup, timed) for _, _, _, setup, timed in jobs], repeats)
    points: dict[str, list[dict[str, float]]] = {"add": [], "sc": [], "gemm": [], "solve": []}
    for (kind, size, work, _, _), best in zip(jobs, seconds):
        points[kind].append({"size": size, "work": work, "seconds": best})
    cost = CostModel(
        **{kind: _fit([(p["work"], p["seconds"]) for p in rows]) for kind, rows in points.items()}
    )
    return cost, points
