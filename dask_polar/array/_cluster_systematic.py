"""The systematic cluster layout: each data block's own product where it lives, parity only
when a straggler needs it.

A systematic code holds ``A``'s row blocks as ``k`` of its ``n`` coded blocks
(`SystematicLayout`), so on a cluster the product needs no encode before its work, and the
graph is little more than plain Dask's:

* ``polar-start-<token>``: the run's start (as in `dask_polar.array._cluster`). The
  scheduler also holds ``A``'s blocks and ``B`` for the run (a parity task may need a block
  after its own product ran), and watches for silent workers (`dask_polar.array._watch`);
* ``polar-work-<token>`` ``(i,)``: ``A_i @ B`` on the worker of ``A_i``. The product runs in
  a helper thread, so the task returns once the job no longer needs it, whatever the
  product does; a product that fails after its retries reports it and waits for the job
  too (it is an erasure);
* ``polar-rescue-<token>`` (codes with redundancy): one task that follows the work tasks
  from the scheduler's metadata (which results are in memory, their mean duration, the
  failures reported) from a seceded thread. Once every data block's product is in, it
  returns nothing: no parity ran, nothing is decoded. When products are late (no result
  for `late_seconds` of the mean task) or failed, it submits the fewest parity tasks that
  decode with what arrived, cheapest first (each sums its own few blocks and multiplies,
  `parity_product`), then one task that decodes the missing blocks only
  (`decode_missing`), and returns their products;
* the output blocks ``(name, i, c)``: work task ``i``'s product, or the rescued one.

So without stragglers the job is ``k`` plain products and their outputs, and the code costs
something only when a straggler does. A parity block needs the data blocks it sums, so a
block whose only copy sits on a paused worker waits for the watch to remove that worker
(Dask then computes the block again elsewhere), as its own product would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from dask.task_spec import Task, TaskRef

from ..codes import ErasureCode, PolarCode
from ..exceptions import CodedJobError, CodedJobTimeout
from ..executors import WorkOutcome
from ..executors._core import describe_error, late_seconds, useful_background
from ..executors.cooperative import POLL_SECONDS
from ..jobs import JobRecord, TaskRecord, notify, remember
from ..stragglers.faults import FaultPlan
from . import _tasks
from ._cluster import _attempts, _run_detached, _WatchedEvent, start, unresponsive_seconds
from ._encode import data_block_layer
from ._plan import ProductSpec
from ._scaling import block_stats
from ._systematic import Arrivals, RowFactors, SystematicLayout, parity_product
from ._watch import RunState

__all__ = ["SystematicClusterJob", "decode_missing", "systematic_cluster_layer"]

logger = logging.getLogger(__name__)

#: Seconds between two looks of the rescue task at the job (one scheduler round trip each).
RESCUE_POLL = 0.02
#: Seconds a work task may run before it counts as late, at least.
CLUSTER_MIN_LATE = 0.1
#: Without any result for this many times a late task's time (`STALL_SECONDS` at least),
#: the work tasks not started yet count as late too (their worker may be stuck).
STALL_FACTOR = 10.0
STALL_SECONDS = 1.0
#: A parity task counts as late after this many times a late work task's time: it sums
#: its blocks (fetched from other workers) before it multiplies.
PARITY_LATE_FACTOR = 3.0


@dataclass(frozen=True)
class SystematicClusterJob:
    """What the tasks of one systematic product on a cluster share (pickled into each)."""

    token: str
    code: ErasureCode
    data_keys: tuple[Any, ...]
    rhs_key: Any
    block_rows: int
    inner: int
    dtype: np.dtype
    faults: FaultPlan | None
    panel_rows: int | None
    timeout: float | None = None
    retries: int = 0
    unresponsive: float | None = None

    @property
    def start_key(self) -> str:
        return f"polar-start-{self.token}"

    @property
    def work_name(self) -> str:
        return f"polar-work-{self.token}"

    @property
    def rescue_key(self) -> str:
        return f"polar-rescue-{self.token}"

    @property
    def cancellable(self) -> bool:
        """Whether the code has redundancy (else every product is needed: no rescue)."""
        return self.code.n > self.code.k

    @cached_property
    def layout(self) -> SystematicLayout:
        layout = SystematicLayout.of(self.code)
        assert layout is not None, "a systematic cluster job needs a systematic code"
        return layout

    @cached_property
    def positions(self) -> tuple[int, ...]:
        """The coded position of each data block's own product (the first, for copies)."""
        first: dict[int, int] = {}
        for j, block in sorted(self.layout.plain.items()):
            first.setdefault(block, j)
        return tuple(first[i] for i in range(self.code.k))

    @cached_property
    def _first_statuses(self) -> tuple[str, ...]:
        """Each position's status as a run begins: its data tasks pending, the parity
        skipped unless needed, zero blocks known."""
        own, zero = set(self.positions), set(self.layout.zero)
        return tuple(
            "zero" if j in zero else "pending" if j in own else "skipped"
            for j in range(self.code.n)
        )

    @cached_property
    def backups(self) -> dict[int, tuple[np.ndarray, tuple[int, ...]]]:
        """Every other position with work -> its coefficients and data blocks: parity rows,
        and (replication) further copies of a block."""
        own = set(self.positions)
        rows = dict(self.layout.parity)
        rows.update((j, (np.ones(1), (i,))) for j, i in self.layout.plain.items() if j not in own)
        return rows

    def event_name(self, started: float) -> str:
        """The run's cancel flag, set by the rescue once it has every block."""
        return f"polar-cancel-{self.token}-{started!r}"

    def topic(self, started: float) -> str:
        """The run's event topic, where work tasks report their failures."""
        return f"polar-failed-{self.token}-{started!r}"

    @property
    def run_state(self) -> RunState:
        """What the scheduler keeps for a run, and deletes when it ends (`RunState`)."""
        if not self.cancellable:
            return RunState()
        return RunState(
            hold=(*self.data_keys, self.rhs_key), flag=f"polar-cancel-{self.token}",
            topic=f"polar-failed-{self.token}",
        )

    def record(self, started: float) -> JobRecord:
        """The job's record as the run starting at ``started`` begins it."""
        return JobRecord(
            token=self.token, code=repr(self.code), n=self.code.n, k=self.code.k,
            backend="distributed",
            info_set=self.code.info_set.tolist() if isinstance(self.code, PolarCode) else None,
            started=started,
            tasks=[TaskRecord(j, status) for j, status in enumerate(self._first_statuses)],
            straggler_delays=None if self.faults is None else self.faults.first.tolist(),
        )


class _RunFlag:
    """The cancel flag of one run, as its tasks on a worker see it: set once the rescue has
    every data block, or once the job's ``timeout`` has passed. Pickles as its name.

    The rescue sets the run's ``distributed.Event`` (watched once per worker process by
    `_WatchedEvent`), and a task trusts it once the scheduler holds the rescue's result: a
    new compute of the same graph that finds the run's start still in memory has the same
    run's name, and its tasks must not stop for the earlier compute's flag.
    """

    def __init__(self, job: SystematicClusterJob, started: float) -> None:
        self.job, self.started = job, started
        self._event: _WatchedEvent | None = None
        self._confirmed = False
        self._asked = -float("inf")

    def __reduce__(self) -> tuple:
        return _RunFlag, (self.job, self.started)

    def expired(self) -> bool:
        timeout = self.job.timeout
        return timeout is not None and time.time() - self.started >= timeout

    def bind(self) -> _RunFlag:
        """Find the worker's client now, on a task's own thread (a helper thread that asks
        the flag later would not find it)."""
        if self._event is None and self.job.cancellable:
            from distributed import get_client

            self._event = _WatchedEvent.get(get_client(), self.job.event_name(self.started))
        return self

    def is_set(self) -> bool:
        if self.expired():
            return True
        if not self.job.cancellable:
            return False
        if not self.bind()._event.is_set():  # type: ignore[union-attr]
            return False
        if not self._confirmed and time.monotonic() - self._asked >= POLL_SECONDS:
            self._asked = time.monotonic()
            client = self._event.client
            try:
                holders = client.sync(client.scheduler.who_has, keys=[self.job.rescue_key])
            except (OSError, RuntimeError) as error:  # the cluster is closing: nobody to work for
                logger.debug("polar job %s: cannot confirm the flag (%r)", self.job.token, error)
                return True
            self._confirmed = bool(holders.get(self.job.rescue_key))
        return self._confirmed

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.is_set():
                return True
            time.sleep(min(left, POLL_SECONDS))
        return self.is_set()


def work(
    job: SystematicClusterJob, started: float, block: int, a: np.ndarray, b: np.ndarray
) -> WorkOutcome:
    """Data block ``block``'s own product ``a @ b``, unless the job no longer needs it.

    A product that fails after ``retries`` attempts is reported on the run's topic (the
    rescue decodes around it at once) and the task waits, seceded, for the job: a result it
    does not have must not look like one that arrived.
    """
    flag = _RunFlag(job, started).bind()
    position = job.positions[block]
    if job.cancellable:  # the rescue times the task from here
        from distributed import get_worker

        get_worker().log_event(job.topic(started), {"block": block})

    def product(attempt: int) -> WorkOutcome:
        return _tasks.coded_product(a, b, flag, job.faults, position, attempt, job.panel_rows)

    if job.cancellable or job.timeout is not None:
        outcome = _run_detached(job, flag, position, product)
    else:  # every result is needed and nothing stops it: no need for a helper thread
        outcome = _attempts(job, flag, position, product)
    if outcome.error is not None and job.cancellable:
        from distributed import secede

        get_worker().log_event(
            job.topic(started),
            {"block": block, "error": describe_error(outcome.error), "attempts": outcome.attempts},
        )
        secede()  # its thread is the cluster's again while it waits
        while not flag.wait(1.0):
            pass
    task = TaskRecord(
        position, outcome.status, started=outcome.started - started,
        finished=outcome.finished - started, attempts=outcome.attempts, worker=outcome.worker,
        error=outcome.error_text,
    )
    notify("on_result", job.record(started), task)
    return outcome


@dataclass
class _Snapshot:
    """The work tasks of a run, as the scheduler sees them (`_snapshot`)."""

    done: list[bool]  # per data block: its work task's result is in memory
    ages: dict[int, float]  # data block -> seconds since its task reported its start
    failed: dict[int, tuple[str, int]]  # data block -> the error its task reported, attempts


def _snapshot(keys: list[Any], topic: str, dask_scheduler: Any = None) -> _Snapshot:
    """On the scheduler: the run's work tasks ``keys``, with the starts and failures they
    reported on ``topic`` (timed by the scheduler's clock, so workers' clocks need not
    agree)."""
    tasks = dask_scheduler.tasks
    done = [(ts := tasks.get(key)) is not None and ts.state == "memory" for key in keys]
    now = time.time()
    ages: dict[int, float] = {}
    failed: dict[int, tuple[str, int]] = {}
    for stamp, message in dask_scheduler.get_events(topic):
        block = int(message["block"])
        if "error" in message:
            failed[block] = (str(message["error"]), int(message["attempts"]))
        else:
            ages[block] = now - stamp
    return _Snapshot(done, ages, failed)


def rescue(job: SystematicClusterJob, started: float, b: np.ndarray) -> dict[int, np.ndarray]:
    """The rescue task: the products of the data blocks whose own work did not deliver
    them, from parity submitted only when it is needed (see the module docstring)."""
    from distributed import worker_client

    with worker_client() as client:
        return _Rescue(job, started, b, client).run()


class _Rescue:
    """One run of the rescue task (`rescue`)."""

    def __init__(
        self, job: SystematicClusterJob, started: float, b: np.ndarray, client: Any
    ) -> None:
        self.job, self.started, self.client = job, started, client
        self.finite_b = bool(block_stats(b)[1])
        self.keys = [(job.work_name, i) for i in range(job.code.k)]
        self.arrived: dict[int, float] = {}  # data block -> seconds after the start
        self.failed: dict[int, str] = {}  # coded position -> its error
        self.attempts: dict[int, int] = {}  # coded position -> attempts made, if it failed
        self.launched: dict[int, tuple[Any, float]] = {}  # backup position -> (future, launched)
        self.finished: dict[int, float] = {}  # backup position -> seconds after the start
        self.copies: dict[int, Any] = {}  # data block -> a direct product's future (B not finite)
        self.durations: list[float] = []  # finished work tasks', from start to result
        self.running: dict[int, float] = {}  # data block -> seconds since its task started
        self.starts: dict[int, float] = {}  # data block -> its task's start, after the run's
        self.refs: dict[Any, Any] = {}
        self.cheapest = [
            j for j in sorted(job.backups, key=lambda j: (len(job.backups[j][1]), j))
        ]

    def ref(self, key: Any) -> Any:
        """A future of graph key ``key`` (held for the run by the scheduler)."""
        from distributed import Future

        if key not in self.refs:
            self.refs[key] = Future(key, self.client)
        return self.refs[key]

    def run(self) -> dict[int, np.ndarray]:
        job, code = self.job, self.job.code
        deadline = None if job.timeout is None else self.started + job.timeout
        try:
            while True:
                self.poll()
                if len(self.arrived) == code.k:
                    return self.finish({})
                mask = self.mask()
                if self.finite_b and code.decodable(mask):
                    return self.finish(self.decode())
                if deadline is not None and time.time() >= deadline:
                    raise self.timed_out()
                self.launch_needed(mask)
                time.sleep(RESCUE_POLL)
        except CodedJobError:  # a failed job ends too: observers must not wait on it
            self.record(decoded=False)
            raise
        finally:  # the job is over, decoded or not: its stragglers and parity may stop
            try:
                self.client.sync(self.client.scheduler.event_set, name=job.event_name(self.started))
            except (OSError, RuntimeError) as error:  # the cluster is closing
                logger.debug("polar job %s: flag not set (%r)", job.token, error)

    def now(self) -> float:
        return time.time() - self.started

    def poll(self) -> None:
        """What arrived or failed since the last look."""
        job = self.job
        snapshot = self.client.run_on_scheduler(_snapshot, self.keys, job.topic(self.started))
        now = self.now()
        for block, (error, attempts) in snapshot.failed.items():
            self.failed[job.positions[block]] = error
            self.attempts[job.positions[block]] = attempts
        self.running = {}
        for block, is_done in enumerate(snapshot.done):
            if block in snapshot.ages:
                self.starts.setdefault(block, now - snapshot.ages[block])
            if not is_done:
                if block in snapshot.ages:
                    self.running[block] = snapshot.ages[block]
            elif block not in self.arrived and job.positions[block] not in self.failed:
                self.arrived[block] = now
                if block in snapshot.ages:  # its time from start to result, give or take a poll
                    self.durations.append(snapshot.ages[block])
        for j, (future, _) in list(self.launched.items()):
            if j in self.finished or j in self.failed or not future.done():
                continue
            if future.status == "finished":
                self.finished[j] = now
            else:  # erred after its retries, or lost
                error = future.exception() if future.status == "error" else None
                self.failed[j] = describe_error(error) if error else f"parity task {future.status}"
        for block, future in list(self.copies.items()):
            if future.status == "finished" and block not in self.arrived:
                self.arrived[block] = now

    def mask(self) -> np.ndarray:
        """The coded positions whose results are in (or known: zero)."""
        mask = np.zeros(self.job.code.n, dtype=bool)
        mask[list(self.job.layout.zero)] = True
        mask[[self.job.positions[i] for i in self.arrived]] = True
        mask[list(self.finished)] = True
        return mask

    def late_seconds(self) -> float:
        """How long a work task may run before it counts as late: `late_seconds` of the
        median task so far, but `CLUSTER_MIN_LATE` at least (a task's start and result
        travel through the scheduler, which on a busy cluster takes tens of ms)."""
        typical = float(np.median(self.durations)) if self.durations else None
        return max(late_seconds(typical), CLUSTER_MIN_LATE)

    def last_arrival(self) -> float:
        return max([*self.arrived.values(), *self.finished.values(), 0.0])

    def launch_needed(self, mask: np.ndarray) -> None:
        """Launch the parity that the results in and those on their way (not yet late)
        need to decode; with ``B`` not finite (the parity is of no use), direct copies of
        the late blocks' products."""
        job, now = self.job, self.now()
        late = self.late_seconds()
        # a task not started yet is queued, not late; unless nothing has come for long
        stalled = now - self.last_arrival() > max(STALL_FACTOR * late, STALL_SECONDS)
        chosen = mask.copy()
        for i in range(job.code.k):
            if job.positions[i] not in self.failed and not stalled:
                chosen[job.positions[i]] |= self.running.get(i, 0.0) <= late
        for j, (_, launched) in self.launched.items():
            if j not in self.failed and now - launched <= PARITY_LATE_FACTOR * late:
                chosen[j] = True
        if not self.finite_b:
            for i in job.code.missing(chosen):
                if i not in self.copies:
                    self.copies[i] = self.client.submit(
                        _tasks.coded_product, self.ref(job.data_keys[i]), self.ref(job.rhs_key),
                        _RunFlag(job, self.started), None, job.positions[i], 0, job.panel_rows,
                        key=(f"polar-copy-{job.token}", i, self.started), pure=False,
                    )
            return
        deferred = [j for j in self.cheapest if j not in self.launched]
        picks = useful_background(job.code, chosen, deferred, job.code.generator)
        if picks:
            logger.debug("polar job %s: launching parity %s", job.token, picks)
        for j in picks:
            coefficients, sources = job.backups[j]
            future = self.client.submit(
                parity_product, coefficients, sources, RowFactors(job.code.n, job.inner),
                Arrivals(), None, self.ref(job.rhs_key), _RunFlag(job, self.started),
                job.faults, j, 0, job.panel_rows, *(self.ref(job.data_keys[i]) for i in sources),
                key=(f"polar-parity-{job.token}", j, self.started), pure=False,
                retries=job.retries,
            )
            self.launched[j] = (future, now)
        if not picks and not self.pending_can_help(mask):
            raise CodedJobError(
                job.token, self.failed, int(mask.sum()) - len(job.layout.zero), job.code.k
            )

    def pending_can_help(self, mask: np.ndarray) -> bool:
        """Whether the results still to come (work not failed, parity running, parity not
        launched) could make the job decodable."""
        job = self.job
        reachable = mask.copy()
        for i in range(job.code.k):
            reachable[job.positions[i]] |= job.positions[i] not in self.failed
        for j in job.backups:
            reachable[j] |= j not in self.failed
        return job.code.decodable(reachable)

    def decode(self) -> dict[int, np.ndarray]:
        """The missing blocks' products, decoded on a worker from the parity that arrived
        and the plain products of the blocks it sums."""
        job = self.job
        missing = [i for i in range(job.code.k) if i not in self.arrived]
        rows = {j: self.launched[j][0] for j in self.finished}
        summed = {i for j in rows for i in job.backups[j][1]} - set(missing)
        plain = {i: self.ref((job.work_name, i)) for i in sorted(summed)}
        rescued = self.client.submit(
            decode_missing, job.backups, missing, rows, plain, job.dtype,
            key=(f"polar-decode-{job.token}", self.started), pure=False,
        ).result()
        lost = [i for i, value in rescued.items() if value is None]
        if lost:  # blocks left out of the parity (not finite): their products directly
            copies = [
                self.client.submit(
                    _tasks.coded_product, self.ref(job.data_keys[i]), self.ref(job.rhs_key),
                    _RunFlag(job, self.started), None, job.positions[i], 0, job.panel_rows,
                    pure=False,
                )
                for i in lost
            ]
            for i, outcome in zip(lost, self.client.gather(copies)):
                rescued[i] = outcome.value
        return rescued

    def finish(self, rescued: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Record the job and return the rescued products (the copies' too)."""
        for i, future in self.copies.items():
            if i not in rescued and future.status == "finished":
                rescued[i] = future.result().value
        self.record(decoded=True)
        return rescued

    def record(self, decoded: bool) -> None:
        """The job's `JobRecord`, decoded or not (`dask_polar.last_job`, observers)."""
        job = self.job
        record = job.record(self.started)
        for i, seen in self.arrived.items():
            task = record.tasks[job.positions[i]]
            task.status, task.finished, task.started = "done", seen, self.starts.get(i)
        for j, (_, launched) in self.launched.items():
            task = record.tasks[j]
            task.submitted = task.started = launched
            task.status = "done" if j in self.finished else "cancelled"
            task.finished = self.finished.get(j)
        for j, error in self.failed.items():
            record.tasks[j].status, record.tasks[j].error = "failed", error
            record.tasks[j].attempts = self.attempts.get(j, job.retries + 1)
        for task in record.tasks:
            if task.status == "pending":
                task.status = "cancelled"
        record.cancelled = [t.index for t in record.tasks if t.status == "cancelled"]
        if decoded:
            record.used = sorted([*(job.positions[i] for i in self.arrived), *self.finished])
            record.decodable_at = self.last_arrival()
            record.decoded_at = self.now()
        remember(record)
        notify("on_finish", record)

    def timed_out(self) -> CodedJobTimeout:
        job = self.job
        pending = [job.positions[i] for i in range(job.code.k) if i not in self.arrived]
        pending += [j for j in self.launched if j not in self.finished and j not in self.failed]
        pending = [j for j in pending if j not in self.failed]
        return CodedJobTimeout(
            job.token, job.timeout, pending, self.failed, len(self.arrived) + len(self.finished),
            job.code.k,
        )


def decode_missing(
    backups: dict[int, tuple[np.ndarray, tuple[int, ...]]], missing: list[int],
    rows: dict[int, WorkOutcome], plain: dict[int, WorkOutcome], dtype: np.dtype,
) -> dict[int, np.ndarray | None]:
    """The products of the ``missing`` data blocks, from the parity results ``rows``
    (position -> outcome, with the row factors of the blocks each summed in its ``side``)
    and the plain products of the other blocks those sum (``plain``, block -> outcome).

    Parity row ``j`` is ``sum_t c_t D_t A_t @ B`` over its blocks ``t``, ``D_t`` their
    row factors (`row_normalizers`; a block that is not finite is left out). Moving the
    known blocks' terms to the right leaves a small system in the missing blocks' scaled
    products, solved in double precision at least (least squares: there may be more rows
    than unknowns). A missing block that is not finite comes back None: the parity does
    not hold it.
    """
    factors: dict[int, tuple[np.ndarray | None, bool]] = {}
    for outcome in rows.values():
        factors.update(outcome.side or {})
    first = next(iter(rows.values())).value
    wide = np.result_type(first.dtype, np.float64)
    unknown = [i for i in missing if factors.get(i, (None, True))[1]]
    column = {i: c for c, i in enumerate(unknown)}
    matrix = np.zeros((len(rows), len(unknown)), dtype=wide)
    rhs = np.empty((len(rows), first.size), dtype=wide)
    for r, (j, outcome) in enumerate(sorted(rows.items())):
        coefficients, sources = backups[j]
        rhs[r] = outcome.value.reshape(-1)
        for coefficient, source in zip(coefficients, sources):
            row_factors, finite = factors.get(source, (None, True))
            if not finite:
                continue  # left out of this parity
            if source in column:
                matrix[r, column[source]] = coefficient
                continue
            value = plain[source].value.astype(wide, copy=False)
            if row_factors is not None:
                value = value * row_factors[:, None]
            rhs[r] -= coefficient * value.reshape(-1)
    solved = np.linalg.lstsq(matrix, rhs, rcond=None)[0] if unknown else rhs[:0]
    out: dict[int, np.ndarray | None] = dict.fromkeys(missing)
    for i, value in zip(unknown, solved):
        value = value.reshape(first.shape)
        row_factors = factors[i][0] if i in factors else None
        if row_factors is not None:
            value = value / row_factors[:, None]
        out[i] = value.astype(dtype, copy=False)
    return out


def take_output(
    job: SystematicClusterJob, started: float, outcome: WorkOutcome,
    rescued: dict[int, np.ndarray], i: int, rows: int, col_start: int, col_stop: int,
    dtype: np.dtype,
) -> np.ndarray:
    """Output block ``i``: rows ``:rows``, columns ``col_start:col_stop`` of data block
    ``i``'s product (its own, or the rescued one), in ``dtype``.

    ``started`` (the run's start) is not used: as a second input it keeps Dask from fusing
    the work task into its output block, which would hide the work task's key from the
    run's watch (`dask_polar.array._watch`).

    Raises
    ------
    CodedJobTimeout, CodedJobError
        If the block has neither (a code without redundancy: its task timed out, or failed
        after its retries).
    """
    value = outcome.value if outcome.value is not None else rescued.get(i)
    if value is None:
        position = job.positions[i]
        if outcome.error is not None:
            raise CodedJobError(
                job.token, {position: outcome.error_text}, job.code.k - 1, job.code.k
            ) from outcome.error
        raise CodedJobTimeout(
            job.token, job.timeout or 0.0, [position], {}, job.code.k - 1, job.code.k
        )
    return value[:rows, col_start:col_stop].astype(dtype, copy=False)


def systematic_cluster_layer(
    spec: ProductSpec, rhs_key: Any, homes: tuple[str | None, ...] | None
) -> tuple[dict[Any, Task], dict[Any, str], Any]:
    """The tasks of a systematic code's product on a cluster (see the module docstring),
    their placement (each work task on the worker of its data block, ``homes``, when ``A``
    is persisted: the scheduler would otherwise move some to workers that look less busy,
    taking their blocks along) and the rescue task's key (None without redundancy)."""
    layer, data_keys = data_block_layer(
        spec.a_keys, spec.row_chunks, spec.token, spec.work if spec.cast else None
    )
    job = SystematicClusterJob(
        token=spec.token, code=spec.code, data_keys=tuple(data_keys), rhs_key=rhs_key,
        block_rows=max(spec.row_chunks), inner=spec.inner, dtype=spec.work, faults=spec.faults,
        panel_rows=spec.options.panel_rows, timeout=spec.options.timeout,
        retries=spec.options.retries, unresponsive=unresponsive_seconds(),
    )
    started = TaskRef(job.start_key)
    placement: dict[Any, str] = {}
    for i, key in enumerate(data_keys):
        work_key = (job.work_name, i)
        layer[work_key] = Task(work_key, work, job, started, i, TaskRef(key), TaskRef(rhs_key))
        if homes is not None and homes[i] is not None:
            placement[work_key] = homes[i]
    rescued: Any = {}
    if job.cancellable:
        layer[job.rescue_key] = Task(job.rescue_key, rescue, job, started, TaskRef(rhs_key))
        rescued = TaskRef(job.rescue_key)
    col_bounds = spec.col_bounds
    outputs = []
    for i, rows in enumerate(spec.row_chunks):
        for c in range(len(spec.col_chunks)):
            key = (spec.out_name, i, c)
            layer[key] = Task(
                key, take_output, job, started, TaskRef((job.work_name, i)), rescued, i, rows,
                col_bounds[c], col_bounds[c + 1], spec.dtype,
            )
            if (job.work_name, i) in placement:
                placement[key] = placement[(job.work_name, i)]
            outputs.append(key)
    layer[job.start_key] = Task(
        job.start_key, start, job, list(layer), outputs, job.run_state
    )
    return layer, placement, job.rescue_key if job.cancellable else None
