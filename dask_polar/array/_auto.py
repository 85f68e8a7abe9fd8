"""``code="auto"``: plan each product from the backend's learned stragglers, and run plain
products timed, so that they feed the statistics too.

Per backend (``"threads"``, or a dask.distributed scheduler's address) one `BackendStats`
holds the learned relative task times (`LearnedRuntimes`), the typical task's seconds per
block shape, and each method's overhead (the median of its recent jobs' realised latency
minus the predicted one). Coded jobs feed it through their `JobRecord` (`observe_record`, called by
`dask_polar.jobs.remember` in the process that ran the job); plain products run as
`timed_block_product` tasks, which report their times (`observe_plain_task`) until the
product's last one assembles its record. On dask.distributed the statistics live on the
scheduler (`RuntimesPlugin`, fed by the workers' event log, so every client of the cluster
shares them; `dask_polar.array._runtimes_plugin`, imported only with a cluster); a client
reads them once per plan.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import Any

import numpy as np
from dask.task_spec import List, Task, TaskRef

from .. import config
from .._validation import check_int, check_real
from ..jobs import RECORD_SINKS, JobRecord, TaskRecord, attach_plan
from ..simulate.planning import METHOD_NAMES, Plan, plan
from ..stragglers.faults import FaultPlan
from ..stragglers.learned import LearnedRuntimes
from ..stragglers.models import RuntimeModel
from ._options import CodedOptions

__all__ = [
    "BackendStats", "TIMES_TOPIC", "backend_stats", "observe_record",
    "plain_layer", "plan_matmul", "plan_product", "timed_block_product",
]

#: Scheduler event-log topic of plain products' task times (one event per task).
TIMES_TOPIC = "dask_polar-times"
#: Weight of the newest job in the typical task time.
SMOOTHING = 0.5
#: A method's overhead is the median of its last this many residuals (robust to the one
#: job whose stragglers the draws did not foresee).
RESIDUALS = 5
#: Zero residuals a method's penalty starts from: one unlucky job (a busy moment, a first
#: run's imports) moves nothing, two that agree do; a method faster than predicted is
#: credited at once.
PRIOR_RESIDUALS = 3
#: A residual is forgotten after this many planned jobs of the backend: a method ruled out
#: by a few unlucky jobs (or a busy moment) is tried again, and measured again.
RESIDUAL_JOBS = 12


class BackendStats:
    """What one backend's jobs taught: relative task times, typical seconds, overheads."""

    def __init__(self, key: str | None = None) -> None:
        #: What ``polar.auto.path`` keeps the statistics under (None: never kept).
        self.key = key
        self.learned = LearnedRuntimes(
            window=int(config.get("auto.window")), prior=config.get("auto.prior")
        )
        self.typical: dict[str, float] = {}    # block signature -> median task seconds
        # method -> [planned job number, realised - predicted], newest last
        self.residuals: dict[str, list[list[float]]] = {}
        self.planned_jobs = 0
        self._plain: dict[str, dict[int, TaskRecord]] = {}  # token -> index -> its last run
        self._lock = threading.Lock()
        path = config.get("auto.path")
        if key is not None and path and os.path.exists(path):
            with open(path) as f:
                saved = json.load(f).get(key)
            if saved:
                self.load(saved)

    def record(self, record: JobRecord) -> None:
        """Learn from a finished job's record (its plan, if any, calibrates the overheads);
        nothing with ``polar.auto.learn`` off (plans then keep to the prior)."""
        if not config.get("auto.learn"):
            return
        times, censored = [], []
        for task in record.tasks:
            if task.started is None or task.status in ("zero", "skipped", "pending"):
                continue
            end = task.finished if task.finished is not None else record.decoded_at
            if end is None:
                continue
            times.append(end - task.started)
            censored.append(task.status != "done" or task.attempts > 1)
        if not times:
            return
        self.learned.add_job(times, censored)
        done = [t for t, c in zip(times, censored) if not c]
        if record.plan and done:
            signature = record.plan.get("signature")
            median = float(np.median(done))
            with self._lock:
                if signature:
                    old = self.typical.get(signature)
                    self.typical[signature] = median if old is None else (
                        SMOOTHING * median + (1 - SMOOTHING) * old)
                chosen = record.plan["chosen"]
                raw = record.plan.get("raw", {}).get(chosen)
                if raw is not None and record.decoded_at is not None:
                    self.planned_jobs += 1
                    kept = self.residuals.setdefault(chosen, [])
                    kept.append([self.planned_jobs, record.decoded_at - raw])
                    del kept[:-RESIDUALS]
        _persist(self)

    def overheads(self, job_seconds: float) -> dict[str, float]:
        """Each method's seconds beyond its prediction: the median of its residuals of the
        last `RESIDUAL_JOBS` planned jobs, plus ``job_seconds`` for a coded job's start and
        end outside its record's clock."""
        with self._lock:
            recent = {
                name: [value for job, value in kept if job > self.planned_jobs - RESIDUAL_JOBS]
                for name, kept in self.residuals.items()
            }
        # a penalty is shrunk towards 0 until a method has PRIOR_RESIDUALS of its own (one
        # slow run, a busy moment or a first run's imports, must not rule a method out); a
        # method faster than predicted is credited at once
        known = {
            name: min(float(np.median(r)),
                      float(np.median(r + [0.0] * max(0, PRIOR_RESIDUALS - len(r)))))
            for name, r in recent.items() if r
        }
        return {name: known.get(name, 0.0) + (0.0 if name == "plain" else job_seconds)
                for name in METHOD_NAMES}

    def plain_task(self, token: str, task: TaskRecord, expected: int, backend: str) -> JobRecord | None:
        """One plain task's times; the product's record once all ``expected`` are in."""
        with self._lock:
            runs = self._plain.setdefault(token, {})
            runs[task.index] = task  # a task Dask re-ran (a lost worker) reports again
            if len(runs) < expected:
                return None
            del self._plain[token]
            while len(self._plain) > 256:  # products whose other tasks never reported
                self._plain.pop(next(iter(self._plain)))
        tasks = [runs[i] for i in sorted(runs)]
        start = min(t.started for t in tasks)
        for t in tasks:
            t.started, t.finished = t.started - start, t.finished - start
        end = max(t.finished for t in tasks)
        return JobRecord(
            token=token, code="plain", n=expected, k=expected, backend=backend, started=start,
            tasks=tasks, used=[t.index for t in tasks], decodable_at=end, decoded_at=end,
        )

    def state(self) -> dict[str, Any]:
        """JSON-friendly (what `RuntimesPlugin` sends clients, what ``polar.auto.path`` keeps)."""
        with self._lock:
            return {"learned": self.learned.to_dict(), "typical": dict(self.typical),
                    "residuals": {name: list(r) for name, r in self.residuals.items()},
                    "planned_jobs": self.planned_jobs}

    def load(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.learned = LearnedRuntimes.from_dict(state["learned"])
            self.typical = dict(state.get("typical", {}))
            self.residuals = {name: [list(pair) for pair in r]
                              for name, r in state.get("residuals", {}).items()}
            self.planned_jobs = int(state.get("planned_jobs", 0))


_STATS: dict[str, BackendStats] = {}
_STATS_LOCK = threading.Lock()


def backend_stats(key: str) -> BackendStats:
    """The statistics of backend ``key`` in this process (loaded from ``polar.auto.path``
    if set and present)."""
    with _STATS_LOCK:
        stats = _STATS.get(key)
        if stats is None:
            stats = _STATS[key] = BackendStats(key)
        return stats


def _persist(stats: BackendStats) -> None:
    """Write every backend's statistics to ``polar.auto.path``, if the user asked for it."""
    path, key = config.get("auto.path"), stats.key
    if not path or key is None:
        return
    saved: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
    saved[key] = stats.state()
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(saved, f)
    os.replace(tmp, path)


def observe_record(record: JobRecord) -> None:
    """Feed a finished job's record to its backend's statistics (threads: this process)."""
    if record.backend == "threads" and record.code != "plain":
        backend_stats("threads").record(record)


RECORD_SINKS.append(observe_record)


# -- where a product runs ----------------------------------------------------------------------

def _client() -> Any:
    """The distributed client the graph will run on, or None (threads)."""
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if type(owner).__module__.split(".")[0] == "distributed" else None


def _local_scheduler(address: str) -> Any:
    """The scheduler at ``address`` if it runs in this process (a LocalCluster's, or this is
    the scheduler optimizing a graph): its statistics are read without a round trip."""
    try:
        from distributed import Scheduler
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    return next((s for s in list(Scheduler._instances) if s.address == address), None)


def _only_scheduler() -> Any:
    """The scheduler running in this process, if exactly one does."""
    try:
        from distributed import Scheduler
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    running = [s for s in list(Scheduler._instances) if s.status.name == "running"]
    return running[0] if len(running) == 1 else None


def _runtimes_plugin(scheduler: Any) -> Any:
    """``scheduler``'s `RuntimesPlugin`, added if it has none."""
    from ._runtimes_plugin import RuntimesPlugin

    plugin = scheduler.plugins.get(RuntimesPlugin.name)
    if plugin is None:
        plugin = RuntimesPlugin()
        plugin.scheduler = scheduler
        scheduler.add_plugin(plugin)
    return plugin


def _scheduler_view(dask_scheduler: Any = None) -> dict[str, Any]:
    """The statistics and thread count of this scheduler (run there by a remote client)."""
    plugin = _runtimes_plugin(dask_scheduler)
    return {"state": plugin.stats.state(), "threads": _threads(dask_scheduler)}


def _threads(scheduler: Any) -> int:
    return sum(ws.nthreads for ws in scheduler.workers.values()) or 1


def _backend(options: CodedOptions, n_hint: int) -> tuple[str, BackendStats, int, int, int]:
    """``(backend key, its statistics, plain slots, coded slots, cores)`` where the graph
    runs (on a cluster, its threads stand for its cores)."""
    client = _client()
    if client is None and options.layout == "cluster":
        # a remote scheduler optimizing a graph (the preload sets layout="cluster"): no
        # client here, but the scheduler itself, with its statistics
        scheduler = _only_scheduler()
        if scheduler is not None:
            threads = _threads(scheduler)
            key = f"distributed:{scheduler.address}"
            return key, _runtimes_plugin(scheduler).stats, threads, threads, threads
    if client is None:
        import dask
        from dask.system import CPU_COUNT

        plain = dask.config.get("num_workers", None) or CPU_COUNT
        return "threads", backend_stats("threads"), int(plain), int(options.local_workers or n_hint), CPU_COUNT
    address = client.scheduler.address
    key = f"distributed:{address}"
    scheduler = _local_scheduler(address)
    if scheduler is not None:
        threads = _threads(scheduler)
        return key, _runtimes_plugin(scheduler).stats, threads, threads, threads
    view = client.run_on_scheduler(_scheduler_view)
    stats = backend_stats(key)  # a copy of the scheduler's, for this plan
    stats.load(view["state"])
    return key, stats, view["threads"], view["threads"], view["threads"]


_FLOPS: list[float] = []


def _flop_rate() -> float:
    """This machine's float64 matrix product speed (flop/s), measured once."""
    if not _FLOPS:
        a = np.ones((256, 256))
        a @ a
        start = time.perf_counter()
        for _ in range(4):
            a @ a
        _FLOPS.append(4 * 2 * 256**3 / max(time.perf_counter() - start, 1e-6))
    return _FLOPS[0]


def plan_matmul(
    shape_a: tuple[int, int], shape_b: tuple[int, int] | tuple[int], *, k: int | None = None,
    dtype: Any = np.float64, workers: int | None = None,
) -> Plan:
    """What ``code="auto"`` would choose for ``A @ B`` here, and why.

    Parameters
    ----------
    shape_a, shape_b : tuple of int
        ``(m, p)`` and ``(p, q)`` (or ``(p,)``).
    k : int, optional
        Row blocks of ``A`` (default: blocks of about 128 MiB, at most 64 of them, as
        Dask's ``auto`` chunks would give).
    dtype : numpy dtype, default float64
        The product's.
    workers : int, optional
        Plan for a pool of this many single-threaded workers (default: where the graph would
        run now: the current distributed client, or the threads scheduler).

    Returns
    -------
    Plan
        ``plan.table()`` lists the candidates, ``plan.chosen`` the choice.

    Examples
    --------
    >>> plan = plan_matmul((16384, 1024), (1024, 64), k=32)
    >>> plan.chosen.name                     # no stragglers seen yet: plain Dask is fastest
    'plain'
    """
    m, p = (check_int("shape_a", int(d), minimum=1) for d in shape_a)
    if len(shape_b) not in (1, 2) or int(shape_b[0]) != p:
        raise ValueError(f"shape_b must be ({p}, q) or ({p},) for shape_a {tuple(shape_a)}, got {tuple(shape_b)}")
    q = int(shape_b[1]) if len(shape_b) == 2 else 1
    if k is None:
        k = max(1, min(64, -(-m * p * np.dtype(dtype).itemsize // (128 << 20))))
    k = check_int("k", k, minimum=1, maximum=m)
    options = CodedOptions.resolve(code="auto")
    if workers is not None:
        workers = check_int("workers", workers, minimum=1)
    _, made = plan_product(options, k=k, rows=-(-m // k), inner=p, cols=q,
                           itemsize=np.dtype(dtype).itemsize, workers=workers)
    assert made is not None  # no injected faults here
    return made


def plan_product(
    options: CodedOptions, *, k: int, rows: int, inner: int, cols: int, itemsize: int,
    workers: int | None = None,
) -> tuple[CodedOptions | None, Plan | None]:
    """The plan of a ``code="auto"`` product, and the options that run its choice (None:
    run it plain, `plain_layer`). The caller names the job and notes the plan
    (`dask_polar.jobs.note_plan`).

    Injected faults given per task (an array of delays, failing task indices) name the
    tasks of the polar code, and ``n``, ``straggler_prob``, ``runtimes`` and ``systematic``
    are the polar code's options: with any of them, or with an ``executor`` (where the user
    wants the work done), the product runs that code, unplanned."""
    faults = options.stragglers
    per_task = faults is not None and (
        not isinstance(getattr(faults, "delays", faults), RuntimeModel) or getattr(faults, "fail", ())
    )
    polar_only = (options.n, options.straggler_prob, options.runtimes, options.systematic)
    if per_task or any(value is not None for value in polar_only) or options.executor is not None:
        # delays or failures of given task indices name the polar code's tasks, and n and
        # the design options are the polar code's: the user chose it. An executor (Lambda,
        # say) is where the user wants the work: plain Dask would run it here instead
        return dataclasses.replace(options, code="polar"), None
    key, stats, slots, coded_slots, cores = _backend(options, 2 * k)
    if workers is not None:  # a pool of single-threaded workers, as the simulator has
        slots = coded_slots = cores = workers
    signature = f"{rows}x{inner}x{cols}:{itemsize}"
    overheads = stats.overheads(float(config.get(f"auto.job-seconds.{key.split(':')[0]}")))
    compute = 2.0 * rows * inner * cols / _flop_rate()
    typical = stats.typical.get(signature, compute)
    made = plan(
        k, relative=stats.learned.model(), task_seconds=typical, compute_seconds=compute,
        block_bytes=rows * inner * itemsize, slots=slots, coded_slots=coded_slots, cores=cores,
        overheads=overheads, cost_cap=check_real(
            "polar.auto.cost-cap", config.get("auto.cost-cap"), minimum=1.0
        ),
        max_tasks=int(config.get("max-tasks")),
    )
    raw = {c.name: c.median - overheads.get(c.name, 0.0) for c in made.candidates}
    made.extra.update(signature=signature, raw=raw, backend=key)
    if made.chosen.name == "plain":
        return None, made
    chosen = {**made.chosen.options}
    return dataclasses.replace(options, **chosen), made


# -- plain products, timed ----------------------------------------------------------------------

def timed_block_product(
    a_blocks: list[np.ndarray], b_blocks: list[np.ndarray], faults: FaultPlan | None,
    token: str, index: int, expected: int, dtype: np.dtype,
) -> np.ndarray:
    """One output block of a plain product (``A``'s row block times one column of ``B``'s
    blocks), its time reported to the backend's statistics; ``faults`` are injected as in a
    coded task (the same draws: the comparisons stay fair)."""
    started = time.time()
    if index == 0:
        _announce(token, started, expected)
    if faults is not None:
        faults.strike(index, 0, _NEVER)
    a = a_blocks[0] if len(a_blocks) == 1 else np.concatenate(a_blocks, axis=1)
    b = b_blocks[0] if len(b_blocks) == 1 else np.concatenate(b_blocks, axis=0)
    out = (a @ b).astype(dtype, copy=False)
    observe_plain_task(token, TaskRecord(index, "done", started=started, finished=time.time(),
                                         attempts=1), expected)
    return out


_NEVER = threading.Event()  # a plain task's "cancel flag": plain products are never cancelled


def _announce(token: str, started: float, expected: int) -> None:
    """On a distributed worker, tell the scheduler's observers a plain product began (its
    block 0, which need not be the first to start): `dask_polar.last_job` then waits for
    its record, and the dashboard shows it."""
    from ..jobs import PROGRESS_TOPIC, _current_worker, progress_event

    worker = _current_worker()
    if worker is not None:
        record = JobRecord(token=token, code="plain", n=expected, k=expected,
                           backend="distributed", started=started,
                           tasks=[TaskRecord(i) for i in range(expected)])
        worker.log_event(PROGRESS_TOPIC, progress_event("on_start", record))


def observe_plain_task(token: str, task: TaskRecord, expected: int) -> None:
    """Report a plain task: to the scheduler from a distributed worker, else here."""
    from ..jobs import _current_worker, remember

    worker = _current_worker()
    if worker is not None:
        task.worker = worker.address
        worker.log_event(TIMES_TOPIC, {"token": token, "task": dict(vars(task)), "expected": expected})
        return
    stats = backend_stats("threads")
    record = stats.plain_task(token, task, expected, "threads")
    if record is not None:
        attach_plan(record)
        stats.record(record)
        remember(record)


def plain_layer(
    a_keys: tuple[tuple[Any, ...], ...], b_keys: tuple[tuple[Any, ...], ...], out_name: str,
    token: str, faults: FaultPlan | None, dtype: np.dtype,
) -> dict[Any, Task]:
    """Tasks ``(out_name, i, c)``: ``A``'s row block ``i`` times ``B``'s column ``c``."""
    cols = len(b_keys[0])
    expected = len(a_keys) * cols
    tasks = {}
    for i, row in enumerate(a_keys):
        for c in range(cols):
            key = (out_name, i, c)
            tasks[key] = Task(
                key, timed_block_product, List(*map(TaskRef, row)),
                List(*(TaskRef(column[c]) for column in b_keys)), faults, token,
                i * cols + c, expected, np.dtype(dtype),
            )
    return tasks
