"""The simulator: latency of coded jobs on thousands of simulated workers, vectorised over trials."""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_int, check_probability, check_real, check_seed
from ..codes import LocalProductCode, MDSCode, PolarCode, ReplicationCode
from ..stragglers import RuntimeModel
from .costs import CostModel
from .decodability import (
    inactivation_needed,
    local_product_needed,
    peel_known,
    sc_needed,
)
from .models import Heterogeneity, draw_finish_times

__all__ = ["MAX_DRAWS", "MAX_WORKERS", "METHODS", "SimulationResult", "simulate"]

logger = logging.getLogger(__name__)

#: The most workers `simulate` takes (the polar and MDS checks grow with the code's size).
MAX_WORKERS = 1 << 16
#: The most finish times `simulate` draws (``trials x workers``): each per-method array of
#: that size takes 8 bytes an entry.
MAX_DRAWS = 1 << 25

#: Methods `simulate` knows, in the order its tables list them.
METHODS = ("uncoded", "backup", "replication", "local-product", "mds", "polar-sc", "polar")

_DESCRIPTIONS = {
    "uncoded": "k tasks, wait for all",
    "backup": "k tasks + backup copies past {factor:g}x median (cubed's rule)",
    "replication": "every block on {replicas} workers",
    "local-product": "row/column parities, peeling",
    "mds": "any k of n, dense solve",
    "polar-sc": "polar, successive cancellation",
    "polar": "polar, SC + inactivation (the default decoder)",
}


@dataclass
class SimulationResult:
    """Per-trial latencies of each method in one simulation (every method met the same draws).

    Attributes
    ----------
    workers, k, trials : int
        Pool size, data blocks, trials.
    model : str
        ``repr`` of the runtime model (or ``"given times"``).
    methods : list of str
    n : dict of str -> int
        Coded tasks of each method (``backup``: the ``k`` first attempts).
    arrival : dict of str -> ndarray (trials,)
        Time of the arrival that made the results decodable (tasks start after the encode).
        ``nan`` in trials a method did not run (``polar`` beyond ``exact_trials``).
    latency : dict of str -> ndarray (trials,)
        ``encode + arrival + decode``: the job's latency.
    needed : dict of str -> ndarray (trials,)
        Results received at the decodable moment (every copy counts).
    launched : dict of str -> ndarray (trials,)
        Tasks launched (``n``; ``backup``: ``k`` plus its copies).
    encode : dict of str -> float
        Encode seconds before the tasks start.
    decode : dict of str -> ndarray (trials,)
        Decode seconds after the decodable moment.
    floor : ndarray (trials,)
        The ``k``-th fastest worker of the pool: no code finishes earlier.
    seconds : dict of str -> float
        Wall time spent simulating each method (``"draw"``: drawing and sorting the times).
    settings : dict
        The arguments (JSON-friendly).
    """

    workers: int
    k: int
    trials: int
    model: str
    methods: list[str]
    n: dict[str, int] = field(default_factory=dict)
    arrival: dict[str, np.ndarray] = field(default_factory=dict)
    latency: dict[str, np.ndarray] = field(default_factory=dict)
    needed: dict[str, np.ndarray] = field(default_factory=dict)
    launched: dict[str, np.ndarray] = field(default_factory=dict)
    encode: dict[str, float] = field(default_factory=dict)
    decode: dict[str, np.ndarray] = field(default_factory=dict)
    floor: np.ndarray = field(default_factory=lambda: np.empty(0))
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per method: medians, p99, ratios to uncoded and to the floor.

        Ratios are taken over the trials both methods ran (``polar`` may run a subset), so
        they compare like with like.

        Returns
        -------
        list of dict
            Keys ``method, n, trials, median, p99, median_vs_uncoded, p99_vs_uncoded,
            median_vs_floor, needed_over_k, encode, decode_median, simulate_seconds``.
        """
        base = self.latency.get("uncoded")
        rows = []
        for method in self.methods:
            latency = self.latency[method]
            ran = ~np.isnan(latency)
            row: dict[str, Any] = {
                "method": method,
                "n": self.n[method],
                "trials": int(ran.sum()),
                "median": _quantile(latency[ran], 0.5),
                "p99": _quantile(latency[ran], 0.99),
                "median_vs_uncoded": None,
                "p99_vs_uncoded": None,
                "median_vs_floor": _quantile(latency[ran], 0.5) / _quantile(self.floor[ran], 0.5),
                "needed_over_k": float(np.mean(self.needed[method][ran])) / self.k,
                "encode": self.encode[method],
                "decode_median": _quantile(self.decode[method][ran], 0.5),
                "simulate_seconds": self.seconds.get(method),
            }
            if base is not None:
                row["median_vs_uncoded"] = row["median"] / _quantile(base[ran], 0.5)
                row["p99_vs_uncoded"] = row["p99"] / _quantile(base[ran], 0.99)
            rows.append(row)
        return rows

    def table(self) -> str:
        """The summary as a plain-text table (what the CLI prints)."""
        header = (
            f"{'method':<14}{'n':>7}{'trials':>7}{'median s':>10}{'p99 s':>9}"
            f"{'med/unc':>9}{'p99/unc':>9}{'med/floor':>10}{'needed/k':>9}{'enc+dec s':>10}"
        )
        lines = [header, "-" * len(header)]

        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        for row in self.summary():
            lines.append(
                f"{row['method']:<14}{row['n']:>7}{row['trials']:>7}{row['median']:>10.3f}"
                f"{row['p99']:>9.3f}{ratio(row['median_vs_uncoded']):>9}"
                f"{ratio(row['p99_vs_uncoded']):>9}{row['median_vs_floor']:>10.2f}"
                f"{row['needed_over_k']:>9.3f}{row['encode'] + row['decode_median']:>10.3f}"
            )
        lines.append(
            f"{'floor':<14}{self.workers:>7}{self.trials:>7}{_quantile(self.floor, 0.5):>10.3f}"
            f"{_quantile(self.floor, 0.99):>9.3f}   (k-th fastest of the {self.workers} workers)"
        )
        return "\n".join(lines)

    def to_dict(self, *, per_trial: bool = True) -> dict[str, Any]:
        """JSON-friendly dict: settings, summary and (optionally) the per-trial arrays."""
        out: dict[str, Any] = {
            "workers": self.workers,
            "k": self.k,
            "trials": self.trials,
            "model": self.model,
            "settings": self.settings,
            "seconds": self.seconds,
            "summary": self.summary(),
        }
        if per_trial:
            def listed(values: np.ndarray) -> list[float | None]:
                return [None if math.isnan(v) else float(v) for v in values]

            out["per_trial"] = {
                method: {
                    "latency": listed(self.latency[method]),
                    "arrival": listed(self.arrival[method]),
                    "needed": listed(self.needed[method]),
                    "launched": listed(self.launched[method]),
                }
                for method in self.methods
            }
            out["per_trial"]["floor"] = listed(self.floor)
        return out


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")


# -- validation ---------------------------------------------------------------------------------


def _check_methods(methods: Any) -> list[str]:
    if methods is None:
        return list(METHODS)
    if isinstance(methods, str) or not isinstance(methods, Sequence):
        raise TypeError(
            f"methods must be a sequence of method names, got {type(methods).__name__} {methods!r}"
        )
    out = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods must be drawn from {METHODS}, got {method!r}")
        if method in out:
            raise ValueError(f"methods must not repeat a method, got {method!r} twice")
        out.append(method)
    if not out:
        raise ValueError("methods must name at least one method, got an empty sequence")
    # the tables list methods in a fixed order
    return [method for method in METHODS if method in out]


def _check_times(name: str, times: Any, shape: tuple[int, int] | None) -> np.ndarray:
    array = np.asarray(times)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real array, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"{name} must have shape (trials, workers), got {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return array


# -- the simulator ------------------------------------------------------------------------------


def simulate(
    model: RuntimeModel | None = None,
    *,
    workers: int | None = None,
    k: int | None = None,
    trials: int | None = None,
    methods: Sequence[str] | None = None,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
    times: Any = None,
    backup_times: Any = None,
    heterogeneity: Heterogeneity | None = None,
    cost: CostModel | None = None,
    block_bytes: int = 8192,
    exact_trials: int | None = None,
    replicas: int | None = None,
    group_size: int | None = None,
    backup_factor: float = 3.0,
    design: str = "erasure",
    straggler_prob: float | None = None,
) -> SimulationResult:
    """Simulate coded jobs on a pool of workers: the latency of each method, trial by trial.

    In each trial every worker's finish time is drawn once; coded task ``j`` runs on worker
    ``j``, so all methods meet the same stragglers. The arrival order is the sort of the
    finish times; a method's job finishes at the arrival that makes its results decodable
    (the real codes' value-free checks, vectorised over trials) plus its encode and decode
    costs.

    Parameters
    ----------
    model : RuntimeModel, optional
        One worker's task time, e.g. `dask_polar.stragglers.ShiftedExponential` or
        `LambdaLike`. Exactly one of ``model`` and ``times``.
    workers : int, optional
        Pool size ``N`` (default 1024): the polar and MDS codes have ``n = N`` (a power of two
        if a polar method runs).
    k : int, optional
        Data blocks, default ``N // 2``. Every task carries one block of the same size, so
        one task's time is the model's in every method.
    trials : int, optional
        Independent trials, default 100.
    methods : sequence of str, optional
        Any of `METHODS` (default all): ``uncoded`` (``k`` tasks, the max), ``backup`` (``k``
        tasks plus cubed's speculative copies), ``replication`` (``replicas`` copies of each
        block), ``local-product`` (`LocalProductCode`, peeling), ``mds`` (any ``k`` of ``n``),
        ``polar-sc`` and ``polar`` (`PolarCode` with SC and with the inactivation decoder).
    seed : int, Generator, SeedSequence or None, default 0
        Seed of the draws; equal seeds give equal results.
    times : array_like of shape (trials, workers), optional
        Finish times to use instead of drawing them (e.g. the delays injected into a real run).
    backup_times : array_like of shape (trials, workers), optional
        With ``times``: the times of backup copies (column ``i``: the copy of task ``i``).
        Needed for ``backup`` when ``times`` is given.
    heterogeneity : Heterogeneity, optional
        Per-worker speeds and correlated slow groups (with ``model``).
    cost : CostModel, optional
        Encode/decode costs; default `CostModel()` (measured on the project's machine);
        ``CostModel.free()`` for arrival times alone.
    block_bytes : int, default 8192
        Bytes of one coded result block (the decode reads these).
    exact_trials : int, optional
        Run the ``polar`` (inactivation) method on the first ``exact_trials`` trials only
        (its exact check costs ~0.03 s per trial at ``n = 16384``); default all.
    replicas : int, optional
        Copies per block for ``replication``, default ``N // k``.
    group_size : int, optional
        Blocks per row of the local product code, default ``ceil(sqrt(k))``.
    backup_factor : float, default 3.0
        A task running longer than this many times the median of the finished ones gets a
        copy, once half of the tasks have finished.
    design : {"erasure", "runtimes"}
        Polar information sets: the codes' default erasure design, or computational
        polarization of ``model`` (``PolarCode(..., runtimes=model)``).
    straggler_prob : float, optional
        Design straggler probability of both polar codes (``design="erasure"``); default each
        decoder's own default (`PolarCode`): ``(1 - k/n) / 2`` with inactivation, ``1 - k/n``
        with SC.

    Returns
    -------
    SimulationResult

    Raises
    ------
    TypeError
        For arguments of the wrong type (naming the argument).
    ValueError
        For inconsistent or out-of-range arguments, e.g. a polar method with ``workers`` not a
        power of two, a code longer than the pool, or both ``model`` and ``times``.

    Notes
    -----
    Per method, with ``T`` the finish times of one trial and ranks their arrival positions:

    * uncoded: ``max(T[:k])``; replication: ``max_i min_c T[i + c k]``; MDS: the ``k``-th
      order statistic of ``T[:n]`` exactly, plus a decode for the ``u`` parities among the
      first ``k`` (a ``u x u`` pseudo-inverse and two products, as `MDSCode` does).
    * polar SC: position ``i`` is seen once ``polarize(ranks, max, min)[i]`` results are in,
      so one O(n log n) pass per trial gives the results needed.
    * polar inactivation: the code's own check (`PolarCode` internals), searched down from
      the SC answer; the decode adds the ``k x d`` mix for ``d`` inactive symbols. Near the
      threshold at large ``n`` the conditioning guard makes decodability non-monotone, so
      this search (unlike ``code.min_results``, a linear scan) can land a few percent of ``k`` above the
      first decodable prefix a real job stops at.
    * local product: vectorised peeling in a per-trial binary search.
    * backup: all ``k`` tasks start at 0; the copies launch at the first time ``t`` with at
      least half finished and ``t > factor * median(finished)``, for every task still
      running, and finish at ``t`` plus a fresh draw (the real loop polls every 10 ms, so
      it launches up to 10 ms later). The copy of task ``i`` runs on spare worker
      ``(k + i) mod N``.

    Encode costs delay every task's start; collecting the results is not charged (it is the
    same for every method).

    Examples
    --------
    >>> from dask_polar.stragglers import ShiftedExponential
    >>> result = simulate(ShiftedExponential(shift=1.0, scale=0.2), workers=256, trials=20)
    >>> result.methods
    ['uncoded', 'backup', 'replication', 'local-product', 'mds', 'polar-sc', 'polar']
    >>> bool((result.latency["polar"] < result.latency["uncoded"]).all())
    True
    >>> bool((result.arrival["mds"] == result.floor).all())  # MDS: the k-th arrival exactly
    True
    >>> row = result.summary()[-1]
    >>> row["method"], row["n"], row["trials"], round(row["needed_over_k"], 2)
    ('polar', 256, 20, 1.06)
    """
    start = time.perf_counter()
    methods = _check_methods(methods)
    if model is not None and not isinstance(model, RuntimeModel):
        raise TypeError(
            f"model must be a RuntimeModel (e.g. ShiftedExponential), got {type(model).__name__}"
        )
    if (model is None) == (times is None):
        raise ValueError("give exactly one of model and times")
    if times is not None:
        times = _check_times("times", times, None)
        shape = times.shape
        if workers is not None and check_int("workers", workers, minimum=1) != shape[1]:
            raise ValueError(f"workers={workers} disagrees with times of shape {shape}")
        if trials is not None and check_int("trials", trials, minimum=1) != shape[0]:
            raise ValueError(f"trials={trials} disagrees with times of shape {shape}")
        trials, workers = shape
        if heterogeneity is not None:
            raise ValueError("heterogeneity applies to drawn times: give it with model, not times")
        if backup_times is not None:
            backup_times = _check_times("backup_times", backup_times, shape)
        elif "backup" in methods:
            raise ValueError("the backup method needs backup_times when times are given")
    else:
        if backup_times is not None:
            raise ValueError("backup_times goes with times, not with model")
        workers = check_int(
            "workers", 1024 if workers is None else workers, minimum=1, maximum=MAX_WORKERS,
            limit="dask_polar.simulate.MAX_WORKERS",
        )
        trials = check_int("trials", 100 if trials is None else trials, minimum=1)
        if trials * workers > MAX_DRAWS:
            raise ValueError(
                f"trials x workers must be <= {MAX_DRAWS} (dask_polar.simulate.MAX_DRAWS: "
                f"8 bytes each, per array), got {trials} x {workers}"
            )
        if heterogeneity is not None and not isinstance(heterogeneity, Heterogeneity):
            raise TypeError(
                f"heterogeneity must be a Heterogeneity, got {type(heterogeneity).__name__}"
            )
    k = check_int("k", workers // 2 if k is None else k, minimum=1)
    if k > workers:
        raise ValueError(f"k must be <= workers ({workers}), got {k}")
    if cost is None:
        cost = CostModel()
    elif not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel, got {type(cost).__name__}")
    block_bytes = check_int("block_bytes", block_bytes, minimum=0)
    if exact_trials is not None:
        exact_trials = min(check_int("exact_trials", exact_trials, minimum=0), trials)
    else:
        exact_trials = trials
    replicas = check_int("replicas", workers // k if replicas is None else replicas, minimum=1)
    if "replication" in methods and replicas * k > workers:
        raise ValueError(
            f"replication needs replicas * k <= workers, got {replicas} * {k} > {workers}"
        )
    if group_size is not None:
        group_size = check_int("group_size", group_size, minimum=1)
    backup_factor = check_real("backup_factor", backup_factor, minimum=1.0, strict=True)
    if not isinstance(design, str):
        raise TypeError(f"design must be a string, got {type(design).__name__}")
    if design not in ("erasure", "runtimes"):
        raise ValueError(f"design must be 'erasure' or 'runtimes', got {design!r}")
    if design == "runtimes" and model is None:
        raise ValueError("design='runtimes' needs model (the runtime distribution)")
    if straggler_prob is not None:
        straggler_prob = check_probability("straggler_prob", straggler_prob)
        if design == "runtimes":
            raise ValueError("straggler_prob is an erasure design: not with design='runtimes'")
    if ("polar" in methods or "polar-sc" in methods) and workers & (workers - 1):
        lower = 1 << (workers.bit_length() - 1)
        raise ValueError(
            f"workers must be a power of two for the polar methods, got {workers} "
            f"(nearest: {lower} or {2 * lower})"
        )
    local = None
    if "local-product" in methods:
        local = LocalProductCode(k, group_size)
        if local.n > workers:
            raise ValueError(
                f"the local product code for k={k} needs {local.n} workers, got workers={workers}"
            )

    # -- draw, sort -----------------------------------------------------------------------------
    if times is None:
        rng = check_seed("seed", seed)
        drawn = draw_finish_times(
            model, workers, trials=trials, seed=rng, heterogeneity=heterogeneity,
            backups="backup" in methods,
        )
        times, backup_times = drawn if "backup" in methods else (drawn, None)
        if backup_times is not None:
            # column i: the copy of task i, on spare worker (k + i) mod N
            backup_times = np.roll(backup_times, -k, axis=1)
    order = np.argsort(times, axis=1, kind="stable")  # ties: the lower worker index first
    sorted_times = np.take_along_axis(times, order, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(workers)[np.newaxis, :], axis=1)
    rows = np.arange(trials)
    result = SimulationResult(
        workers=workers, k=k, trials=trials,
        model="given times" if model is None else repr(model), methods=methods,
        floor=sorted_times[:, k - 1].copy(),
    )
    result.settings = {
        "workers": workers, "k": k, "trials": trials, "methods": methods,
        "seed": int(seed) if isinstance(seed, numbers.Integral) else repr(seed),
        "model": result.model,
        "heterogeneity": None if heterogeneity is None else repr(heterogeneity),
        "cost": cost.to_dict(), "block_bytes": block_bytes, "exact_trials": exact_trials,
        "replicas": replicas, "group_size": None if local is None else local.group_size,
        "backup_factor": backup_factor, "design": design, "straggler_prob": straggler_prob,
    }
    result.seconds["draw"] = time.perf_counter() - start

    def record(method: str, n: int, decisive_rank: np.ndarray, needed: Any, encode: float,
               decode: Any) -> None:
        """Store one method's trials; ``decisive_rank``: pool rank of the decisive arrival."""
        arrival = sorted_times[rows, decisive_rank]
        decode = np.broadcast_to(np.asarray(decode, dtype=np.float64), (trials,)).copy()
        result.n[method] = n
        result.arrival[method] = arrival
        result.encode[method] = float(encode)
        result.decode[method] = decode
        result.latency[method] = encode + arrival + decode
        needed = np.asarray(needed, dtype=np.float64)
        result.needed[method] = np.broadcast_to(needed, (trials,)).copy()
        result.launched[method] = np.full(trials, float(n))

    def design_of(decoder: str) -> PolarCode:
        if design == "runtimes":
            return PolarCode(workers, k, runtimes=model, decoder=decoder)
        return PolarCode(workers, k, straggler_prob=straggler_prob, decoder=decoder)

    for method in methods:
        began = time.perf_counter()
        if method == "uncoded":
            record(method, k, ranks[:, :k].max(axis=1), k, 0.0, 0.0)
        elif method == "replication":
            n = replicas * k
            decisive = ranks[:, :n].reshape(trials, replicas, k).min(axis=1).max(axis=1)
            needed = (ranks[:, :n] <= decisive[:, np.newaxis]).sum(axis=1)
            record(method, n, decisive, needed, 0.0, 0.0)
        elif method == "mds":
            # n = N: the decisive arrival is the k-th of the pool, whatever the draws
            kth = np.full(trials, k - 1)
            # u: data blocks missing from the first k arrivals, solved from parities
            unknown = k - (ranks[:, :k] < k).sum(axis=1)
            record(method, workers, kth, k, cost.mds_encode(workers, k, block_bytes),
                   cost.mds_decode(k, unknown, block_bytes))
        elif method == "polar-sc":
            code = design_of("sc")
            needed = sc_needed(code, ranks)
            record(method, workers, needed - 1, needed, cost.polar_encode(workers, block_bytes),
                   cost.polar_decode(workers, k, block_bytes))
        elif method == "polar":
            code = design_of("inactivation")
            needed = np.full(trials, np.nan)
            symbols = np.zeros(trials)
            upper = sc_needed(code, ranks[:exact_trials]) if exact_trials else []
            for t in range(exact_trials):
                needed[t], symbols[t] = inactivation_needed(code, order[t], int(upper[t]))
            decisive = np.where(np.isnan(needed), 0, needed - 1).astype(np.int64)
            record(method, workers, decisive, needed, cost.polar_encode(workers, block_bytes),
                   cost.polar_decode(workers, k, block_bytes, symbols))
            for name in ("arrival", "latency", "decode"):
                getattr(result, name)[method][exact_trials:] = np.nan
            if exact_trials < trials:
                logger.info(
                    "polar (inactivation) ran on %d of %d trials (exact_trials)",
                    exact_trials, trials,
                )
        elif method == "local-product":
            assert local is not None
            n = local.n
            sub_order = np.argsort(ranks[:, :n], axis=1)  # the code's own arrival order
            sub_ranks = np.empty_like(sub_order)
            np.put_along_axis(sub_ranks, sub_order, np.arange(n)[np.newaxis, :], axis=1)
            needed = local_product_needed(local, sub_ranks)
            decisive = ranks[rows, sub_order[rows, needed - 1]]
            received = sub_ranks[:, : local.k] < needed[:, np.newaxis]
            peeled = local.k - received.sum(axis=1)
            record(method, n, decisive, needed,
                   cost.local_product_encode(k, local.rows, block_bytes),
                   cost.local_product_decode(peeled, local.group_size, block_bytes))
        elif method == "backup":
            _simulate_backup(result, times, backup_times, k, backup_factor)
        result.seconds[method] = time.perf_counter() - began
        logger.debug("simulated %s in %.3f s", method, result.seconds[method])
    return result


def _simulate_backup(
    result: SimulationResult, times: np.ndarray, backup_times: np.ndarray, k: int, factor: float
) -> None:
    """cubed's backup rule on ``k`` tasks, in closed form per trial (all tasks start at 0).

    With ``m`` tasks finished the median of their durations is constant until the next
    finish, so the first launch time is the first ``max(S[m-1], factor * median_m)`` that
    falls before ``S[m]`` (``S`` the sorted times), over ``m >= k / 2``.
    """
    trials = times.shape[0]
    first = times[:, :k]
    finished = np.sort(first, axis=1)
    start_m = max(math.ceil(0.5 * k), 1)  # the real rule: at least half of the tasks finished
    launch = np.full(trials, np.inf)
    if start_m <= k - 1:
        m = np.arange(start_m, k)  # number finished, on [S[m-1], S[m])
        median = 0.5 * (finished[:, (m - 1) // 2] + finished[:, m // 2])
        candidate = np.maximum(finished[:, m - 1], factor * median)
        valid = candidate < finished[:, m]
        first_valid = np.argmax(valid, axis=1)
        any_valid = valid.any(axis=1)
        launch = np.where(any_valid, candidate[np.arange(trials), first_valid], np.inf)
    running = first > launch[:, np.newaxis]
    copies = launch[:, np.newaxis] + backup_times[:, :k]
    done = np.where(running, np.minimum(first, copies), first)
    arrival = done.max(axis=1)
    originals = (first <= arrival[:, np.newaxis]).sum(axis=1)
    backups = (running & (copies <= arrival[:, np.newaxis])).sum(axis=1)
    result.n["backup"] = k
    result.arrival["backup"] = arrival
    result.encode["backup"] = 0.0
    result.decode["backup"] = np.zeros(trials)
    result.latency["backup"] = arrival.copy()
    result.needed["backup"] = (originals + backups).astype(np.float64)
    result.launched["backup"] = (k + running.sum(axis=1)).astype(np.float64)
