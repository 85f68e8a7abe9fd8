"""Plan a product: predict each method's latency and CPU from learned stragglers, pick one.

`plan` is what ``code="auto"`` runs for every product. It draws the tasks' times from the
backend's learned relative runtimes (`dask_polar.stragglers.LearnedRuntimes`) times the
typical task's seconds, and feeds them to `simulate` (the same model as the simulator's
tables, on the same draws for every candidate):

* ``plain``: Dask's own product, ``k`` tasks on the scheduler's ``slots`` threads (a
  blocked task holds its thread: the tasks queued behind it wait);
* ``backup``: uncoded with backup copies past 3x the median (cubed's rule);
* ``replication``: two copies of every block;
* ``polar`` (systematic, at ``n = 2k`` and at the highest rate a power of two allows):
  the data blocks first, one copy for a block late by 1.5x the median, parity for a copy
  late too (the parity runs only then: for stragglers, in the gaps they leave);
* ``polar-butterfly``: the non-systematic code, all ``n`` tasks after an encode,
  decodable at the SC decoder's moment (an upper bound of the inactivation decoder's);
* ``mds`` (``k <= MDS_MAX_K``): any ``k`` of ``n = 2k``.

Coded tasks run ``coded_slots`` at a time: beyond that, the ``w``-th wave starts after ``w``
typical tasks. The CPU of a candidate is the products computed by its decodable moment
(cancelled tasks are blocked or polite: they compute nothing) plus its encode, over
plain's ``k`` products; the cost cap applies to it without stragglers (what every product
pays), so a systematic code's copies and parity, run only for stragglers, never rule it out. Each candidate's median also carries an ``overhead`` (the job
machinery: scheduling, flags, decoding), which the caller calibrates from realised jobs.

Pure numpy: no Dask import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..stragglers.models import RuntimeModel
from .core import simulate
from .costs import CostModel

__all__ = ["Candidate", "MDS_MAX_K", "METHOD_NAMES", "Plan", "candidates_for", "plan"]

#: The largest ``k`` for which MDS is a candidate: its dense decode grows as ``k**3``.
MDS_MAX_K = 64
#: The candidates' names (``polar n=...``: the higher rate's systematic polar code).
METHOD_NAMES = ("plain", "backup", "replication", "polar", "polar-rate", "polar-butterfly", "mds")
#: Trials per prediction: enough for a median and a rough p99, at a few ms per plan.
TRIALS = 48
#: A candidate within this fraction of the fastest one's median wins if it costs less CPU.
TIE = 0.05


@dataclass(frozen=True)
class Candidate:
    """One way to run the product and what `plan` predicts of it.

    Attributes
    ----------
    name : str
        One of `METHOD_NAMES`: ``"polar-rate"`` is systematic polar at the highest rate
        (up to 7/8) that a power of two allows, ``"polar"`` at ``n = 2k`` or more.
    options : dict
        The `coded_matmul` options that run it (``{}`` for plain).
    n : int
        Tasks it launches first.
    median, p99 : float
        Predicted latency in seconds (with its overhead).
    cpu : float
        Predicted CPU over plain's, with the learned stragglers (copies and parity
        included).
    base_cpu : float
        Its CPU over plain's when no task straggles: the price paid on every product.
    allowed : bool
        Whether ``base_cpu`` is within the plan's cost cap.
    """

    name: str
    options: dict[str, Any]
    n: int
    median: float = math.nan
    p99: float = math.nan
    cpu: float = math.nan
    base_cpu: float = math.nan
    allowed: bool = True


@dataclass(frozen=True)
class Plan:
    """The candidates of one product, predicted, and the one chosen."""

    chosen: Candidate
    candidates: tuple[Candidate, ...]
    task_seconds: float
    slots: int
    coded_slots: int
    cost_cap: float
    stragglers: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: what `JobRecord.plan` holds."""
        return {
            "chosen": self.chosen.name, "options": self.chosen.options,
            "predicted": {c.name: {"median": c.median, "p99": c.p99, "cpu": c.cpu,
                                   "base_cpu": c.base_cpu, "allowed": c.allowed}
                          for c in self.candidates},
            "task_seconds": self.task_seconds, "slots": self.slots,
            "coded_slots": self.coded_slots, "cost_cap": self.cost_cap,
            "stragglers": self.stragglers, **self.extra,
        }

    def table(self) -> str:
        """The candidates, one per line, the chosen one marked."""
        lines = [f"{'method':18}{'n':>6}{'median s':>11}{'p99 s':>10}{'CPU/plain':>11}{'no stragglers':>15}"]
        for c in self.candidates:
            mark = "  <- chosen" if c is self.chosen else ("" if c.allowed else "  (over the cost cap)")
            lines.append(f"{c.name:18}{c.n:>6}{c.median:>11.4f}{c.p99:>10.4f}{c.cpu:>11.2f}"
                         f"{c.base_cpu:>15.2f}{mark}")
        return "\n".join(lines)


def _pow2_at_least(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0)) - 1e-12))


def candidates_for(k: int, *, max_tasks: int = 4096) -> list[Candidate]:
    """The candidates for ``k`` data blocks (before prediction)."""
    found = [Candidate("plain", {}, k)]
    if k <= max_tasks:
        found.append(Candidate("backup", {"code": "uncoded", "backup": 3.0}, k))
    if 2 * k <= max_tasks:
        found.append(Candidate("replication", {"code": "replication", "redundancy": 2}, 2 * k))
    wide = _pow2_at_least(2 * k)
    narrow = _pow2_at_least(k * 8 / 7)  # rate up to 7/8
    if narrow <= k:
        narrow *= 2
    for n in sorted({narrow, wide}):
        if n <= max_tasks:
            name = "polar" if n == wide else "polar-rate"
            found.append(Candidate(name, {"code": "polar", "n": n, "systematic": True}, n))
    if wide <= max_tasks:
        found.append(Candidate(
            "polar-butterfly", {"code": "polar", "n": wide, "systematic": False}, wide
        ))
    if k <= MDS_MAX_K and 2 * k <= max_tasks:
        found.append(Candidate("mds", {"code": "mds", "n": 2 * k}, 2 * k))
    return found


def _waves(times: np.ndarray, slots: int, typical: float) -> np.ndarray:
    """Coded tasks beyond ``slots`` start a wave of ``typical`` seconds later per ``slots``."""
    if times.shape[1] <= slots:
        return times
    return times + (np.arange(times.shape[1]) // slots) * typical


def _plain_latency(times: np.ndarray, slots: int) -> np.ndarray:
    """``k`` tasks dealt to ``slots`` threads in turn: each thread runs its share in a row."""
    trials, k = times.shape
    if k <= slots:
        return times.max(axis=1)
    waves = -(-k // slots)
    padded = np.zeros((trials, waves * slots))
    padded[:, :k] = times
    return padded.reshape(trials, waves, slots).sum(axis=1).max(axis=1)


#: The systematic rescue's rules (`dask_polar.executors._core`): a data block running
#: longer than ``LATE_FACTOR`` x the median (``MIN_LATE`` s at least) gets a copy; a copy
#: running ``STAND_IN_FACTOR`` x that long gets parity to stand in for it.
LATE_FACTOR, MIN_LATE, STAND_IN_FACTOR = 1.5, 0.05, 3.0


def _systematic(
    data: np.ndarray, copies: np.ndarray, parity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Latency and products computed of a systematic job: data blocks first, then a copy
    for each late block and parity for each late copy (one parity task stands in)."""
    late = np.maximum(LATE_FACTOR * np.median(data, axis=1, keepdims=True), MIN_LATE)
    copied = data > late
    done = np.where(copied, np.minimum(data, late + copies), data)
    rescued = copied & (copies > STAND_IN_FACTOR * late)
    done = np.where(rescued, np.minimum(done, late * (1 + STAND_IN_FACTOR) + parity), done)
    latency = done.max(axis=1)
    # a parity task sums a few blocks before its product: about two products' work
    needed = data.shape[1] + (copied & (late + copies <= latency[:, None])).sum(axis=1)
    needed = needed + 2 * (rescued & (late * (1 + STAND_IN_FACTOR) + parity <= latency[:, None])).sum(axis=1)
    return latency, needed


def plan(
    k: int,
    *,
    relative: RuntimeModel,
    task_seconds: float,
    compute_seconds: float,
    block_bytes: int,
    slots: int,
    coded_slots: int,
    cores: int | None = None,
    overheads: dict[str, float] | None = None,
    cost_cap: float = 2.0,
    max_tasks: int = 4096,
    seed: int = 0,
) -> Plan:
    """Predict every candidate for a product of ``k`` row blocks and choose one.

    Parameters
    ----------
    k : int
        Data blocks.
    relative : RuntimeModel
        Task times relative to the median task (`LearnedRuntimes.model`).
    task_seconds : float
        The median task's seconds (its compute and whatever else a task waits for).
    compute_seconds : float
        CPU seconds of one block's product (the CPU model's unit).
    block_bytes : int
        Bytes of one row block of ``A`` (the butterfly's encode reads these).
    slots, coded_slots : int
        Tasks that run at once for plain Dask and for a coded job.
    cores : int, optional
        Cores the products share (default ``slots``).
    overheads : dict of str -> float, optional
        Seconds added to a candidate's latency (by name; default 0).
    cost_cap : float, default 2.0
        The most CPU a candidate may cost over plain's when no task straggles (the price
        paid on every product; copies and parity for stragglers come on top, when needed).
    max_tasks : int
        The most coded tasks (``polar.max-tasks``).
    seed : int
        Seed of the draws (plans are deterministic).

    Returns
    -------
    Plan
    """
    overheads = overheads or {}
    cores = slots if cores is None else cores
    found = candidates_for(k, max_tasks=max_tasks)
    width = max(c.n for c in found)
    rng = np.random.default_rng(seed)
    times = relative.sample((TRIALS, width), seed=rng) * task_seconds
    again = relative.sample((TRIALS, width), seed=rng) * task_seconds
    third = relative.sample((TRIALS, k), seed=rng) * task_seconds
    cost = CostModel()
    predicted = []
    for c in found:
        needed: Any = c.n
        encode = decode = 0.0
        pool = _waves(times[:, : c.n], max(coded_slots, 1), task_seconds)
        systematic = c.options.get("systematic") or c.name == "mds"
        if c.name == "plain":
            latency = _plain_latency(times[:, :k], max(slots, 1))
            needed = k
        elif systematic:
            latency, needed = _systematic(pool[:, :k], again[:, :k], third)
            if c.name == "mds":
                decode = cost.mds_decode(k, 1, block_bytes)
        else:
            method, kwargs = {
                "backup": ("backup", {"backup_factor": 3.0}),
                "replication": ("replication", {"replicas": 2}),
                "polar-butterfly": ("polar-sc", {}),
            }[c.name]
            result = simulate(
                times=pool, backup_times=again[:, : c.n] if method == "backup" else None,
                k=k, methods=[method], cost=CostModel.free(), **kwargs,
            )
            latency, needed = result.latency[method], result.needed[method]
            if method != "backup":  # every task launched at once computes unless it was
                # still blocked (its product comes last) when the job became decodable
                needed = (pool <= (latency + compute_seconds)[:, None]).sum(axis=1)
            if c.name == "polar-butterfly":
                encode = cost.polar_encode(c.n, block_bytes)
                decode = cost.polar_decode(c.n, k, block_bytes)
        # the products computed share the cores: wall time is at least their CPU time over
        # the cores (on 2 cores, 64 threads are no faster than 2 at computing)
        latency = np.maximum(latency, np.asarray(needed) * compute_seconds / max(cores, 1))
        # a calibrated overhead may be negative (the draws foresaw slower tasks): never below 0
        latency = np.maximum(latency + encode + decode + overheads.get(c.name, 0.0), 0.0)
        extra = (encode + decode) / max(k * compute_seconds, 1e-12)
        cpu = float(np.median(needed)) / k + extra
        # without stragglers a systematic job computes its data blocks alone; every task
        # launched at once computes (replication, the butterfly)
        base = 1.0 if systematic or c.name in ("plain", "backup") else c.n / k + extra
        predicted.append(Candidate(
            c.name, c.options, c.n, float(np.median(latency)), float(np.quantile(latency, 0.99)),
            cpu, base, base <= cost_cap,
        ))
    allowed = [c for c in predicted if c.allowed]
    fastest = min(c.median for c in allowed)
    chosen = min(
        (c for c in allowed if c.median <= fastest + TIE * abs(fastest)),
        key=lambda c: (c.cpu, c.median),
    )
    return Plan(chosen, tuple(predicted), task_seconds, slots, coded_slots, cost_cap, repr(relative))
