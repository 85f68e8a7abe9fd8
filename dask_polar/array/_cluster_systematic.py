"""The systematic cluster layout: each data block's own product where it lives, a copy or
parity only when a straggler needs it.

A systematic code holds ``A``'s row blocks as ``k`` of its ``n`` coded blocks
(`SystematicLayout`), so on a cluster the product needs no encode before its work, and the
graph is plain Dask's plus one task:

* ``polar-start-<token>``: the run's start (as in `dask_polar.array._cluster`). The
  scheduler also holds ``A``'s blocks, ``B`` and the products for the run (a parity task
  or the decode may need them after their own tasks ran), and watches for silent workers
  (`dask_polar.array._watch`). With redundancy it submits the run's rescue;
* the work tasks, ``A_i @ B`` on the worker of ``A_i``, which are the output blocks (where
  ``B`` has one column chunk and nothing is cast; otherwise the outputs are cut from them).
  The product runs in a helper thread, so the task can return the rescued product instead,
  whatever its own product does; a product that fails after its retries reports it and
  waits for the rescued one;
* the rescue ``polar-rescue-<token>`` (nothing waits for it): it follows the work tasks
  from the scheduler's metadata (which have returned, when each reported its start, which
  reported a failure) from a seceded thread. Once every data block's product is in, it
  ends: no parity ran, nothing is decoded. A late product (running for `late_seconds` of
  the median task, `CLUSTER_MIN_LATE` at least) gets a copy on another worker
  (`copy_product`): any parity row that could stand in for it sums the late block itself
  with others, so a copy is the cheaper rescue. For products that failed (or whose copy is
  late too) it submits the fewest parity tasks that decode with what arrived, cheapest
  first (each sums its own few blocks and multiplies, `parity_product`), then one task
  that decodes the missing blocks only (`decode_missing`). It publishes each rescued
  product under its block's `rescued_key` and sets the run's flag, and the late work tasks
  return them.

So without stragglers the job is ``k`` plain products, and the code costs something only
when a straggler does. A parity block needs the data blocks it sums, so a block whose only
copy sits on a paused worker waits for the watch to remove that worker (Dask then computes
the block again elsewhere), as its own product would.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from dask.task_spec import Task, TaskRef

from ..codes import ErasureCode
from ..codes.certify import Suspects, Uncertain, required
from ..exceptions import CodedJobError, CodedJobTimeout
from ..executors import WorkOutcome
from ..executors._core import (
    STAND_IN_LATE_FACTOR,
    describe_error,
    late_seconds,
    useful_background,
)
from ..executors.cooperative import POLL_SECONDS
from ..jobs import JobRecord, notify, remember
from ..stragglers.faults import FaultPlan
from . import _tasks
from ._cluster import RunNames, _WatchedEvent, run_product, seconds_left, unresponsive_seconds
from ._cluster import start as start_run
from ._encode import data_block_layer
from ._plan import ProductSpec
from ._scaling import block_stats
from ._systematic import Arrivals, RowFactors, SystematicLayout, parity_product
from ._watch import PENDING, RunState

__all__ = ["SystematicClusterJob", "decode_missing", "is_work_key", "systematic_cluster_layer"]

logger = logging.getLogger(__name__)

#: Seconds between two looks of the rescue task at the job (one scheduler round trip each).
RESCUE_POLL = 0.02
#: ... and of a job without redundancy, whose rescue only records it.
FOLLOW_POLL = 0.1
#: Seconds without a heartbeat after which the rescue counts a worker as silent: it copies
#: no block that only such workers hold (nor launches parity that sums one).
SILENT_SECONDS = 1.0
#: The priority of what the rescue submits: a late or failed block's stand-in is on the
#: job's critical path, so it goes ahead of the data tasks still queued.
RESCUE_PRIORITY = 1
#: Seconds a work task may run before it counts as late, at least.
CLUSTER_MIN_LATE = 0.1
#: Without any result for this many times a late task's time (`STALL_SECONDS` at least),
#: the work tasks not started yet count as late too (their worker may be stuck).
STALL_FACTOR = 10.0
STALL_SECONDS = 1.0


@dataclass(frozen=True)
class SystematicClusterJob(RunNames):
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
    work_keys: tuple[Any, ...] = ()  # data block -> its work task's key
    rows: tuple[int, ...] | None = None  # the rows of each output block, if work tasks are them

    def rescue_key(self, started: float) -> tuple[str, float]:
        """The run's rescue task (submitted by its start)."""
        return (f"polar-rescue-{self.token}", started)

    def rescued_key(self, block: int, started: float) -> tuple[str, int, float]:
        """The rescued product of data block ``block`` (or the job's error), for its work
        task to return."""
        return (f"polar-rescued-{self.token}", block, started)

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

    def topic(self, started: float) -> str:
        """The run's event topic, where work tasks report their failures."""
        return f"polar-failed-{self.token}-{started!r}"

    @property
    def run_state(self) -> RunState:
        """What the scheduler keeps for a run, and deletes when it ends (`RunState`)."""
        if not self.cancellable:  # its rescue only records it, from the topic
            return RunState(topic=f"polar-failed-{self.token}")
        # the blocks and B for parity tasks, the products for the decode: those that are the
        # outputs are the computing client's until the last is rescued (held beyond, they
        # would hand a compute of the same graph right after this one its results)
        products = self.work_keys if self.rows is None else ()
        return RunState(
            hold=(*self.data_keys, self.rhs_key, *products),
            flag=f"polar-cancel-{self.token}", topic=f"polar-failed-{self.token}",
        )

    def record(self, started: float) -> JobRecord:
        """The job's record as the run starting at ``started`` begins it."""
        return self.new_record(started, self._first_statuses)


class _RunFlag:
    """The cancel flag of one run, as its tasks on a worker see it: set once the job's
    ``timeout`` has passed, or once the rescue is done (the run's ``distributed.Event``,
    watched once per worker process by `_WatchedEvent`). Pickles as its name.

    For the work task of data block ``block`` the flag counts only once the scheduler holds
    that block's rescued product (or the job's error): then the task returns it instead of
    its own (`work`).
    """

    def __init__(self, job: SystematicClusterJob, started: float, block: int | None = None) -> None:
        self.job, self.started, self.block = job, started, block
        self._event: _WatchedEvent | None = None
        self._confirmed = block is None
        self._asked = -float("inf")
        # the rescue replaces no task younger than this: until then, asking costs a
        # scheduler round trip per worker process and poll for nothing
        self._quiet_until = time.monotonic() + CLUSTER_MIN_LATE

    def __reduce__(self) -> tuple:
        return _RunFlag, (self.job, self.started, self.block)

    def expired(self) -> bool:
        return self.left() == 0.0

    def left(self) -> float | None:
        """Seconds left of the job's ``timeout`` (None: no timeout)."""
        return seconds_left(self.job.timeout, self.started)

    def bind(self) -> _RunFlag:
        """Find the worker's client now, on a task's own thread (a helper thread that asks
        the flag later would not find it)."""
        if self._event is None and self.job.cancellable:
            from distributed import get_client

            self._event = _WatchedEvent.get(get_client(), self.job.event_name(self.started))
        return self

    def wake_on_set(self, waker: threading.Event) -> None:
        """Set ``waker`` once this worker hears that the run's flag is set."""
        if self.job.cancellable:
            self.bind()._event.wake(waker)  # type: ignore[union-attr]

    def rescued(self) -> bool:
        """Whether the rescue has this task's block (or failed): the run's flag is set and
        the scheduler has a task for the block's rescued product (or the job's error)."""
        if not self.job.cancellable or time.monotonic() < self._quiet_until:
            return False
        if not self.bind()._event.is_set():  # type: ignore[union-attr]
            return False
        if not self._confirmed and time.monotonic() - self._asked >= POLL_SECONDS:
            self._asked = time.monotonic()
            client = self._event.client  # type: ignore[union-attr]
            key = self.job.rescued_key(self.block, self.started)  # type: ignore[arg-type]
            try:
                states = client.sync(client.scheduler.get_task_status, keys=[key])
            except (OSError, RuntimeError) as error:  # the cluster is closing: nobody to work for
                logger.debug("polar job %s: cannot confirm the flag (%r)", self.job.token, error)
                return True
            self._confirmed = states.get(key) is not None
        return self._confirmed

    def is_set(self) -> bool:
        return self.expired() or self.rescued()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.is_set():
                return True
            time.sleep(min(left, POLL_SECONDS))
        return self.is_set()


def work(
    job: SystematicClusterJob, started: float, block: int, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Data block ``block``'s product ``a @ b``: its own, or the rescued one once the rescue
    has it (whatever the own product is doing by then: it runs in a helper thread).

    A product that fails after ``retries`` attempts is reported on the run's topic (the
    rescue decodes around it at once) and the task waits, seceded, for the rescued product.
    Where the output blocks are the work tasks (``job.rows``), the product is cut to the
    block's rows.

    Raises
    ------
    CodedJobTimeout
        Once the job's ``timeout`` has passed without the product.
    CodedJobError
        If the product failed and the job cannot do without it (no redundancy, or the
        rescue failed: its error).
    """
    from distributed import get_worker

    flag = _RunFlag(job, started, block).bind()
    position = job.positions[block]
    if job.cancellable:  # the rescue times the task from here
        get_worker().log_event(job.topic(started), {"block": block})

    def product(attempt: int) -> WorkOutcome:
        return _tasks.coded_product(a, b, flag, job.faults, position, attempt, job.panel_rows)

    outcome = run_product(job, flag, position, product, started)
    value = outcome.value
    if value is None and job.cancellable and not flag.expired():
        if outcome.error is not None:
            get_worker().log_event(
                job.topic(started), {"block": block, "error": outcome.error_text,
                                     "attempts": outcome.attempts},
            )
            from distributed import secede

            secede()  # its thread is the cluster's again while it waits
            while not flag.wait(1.0):
                pass
        if flag.rescued():  # the rescued product, or the rescue's error raised here
            try:
                value = _fetch(job.rescued_key(block, started), flag.left())
            except TimeoutError:  # the job's timeout came first
                value = None
            else:
                if value is None:  # left out of the parity (not finite): computed here
                    value = direct_product(a, b, job.dtype)
                elif isinstance(value, Uncertain):  # decoded: its uncertified entries here
                    value = value.settle(a, b)
    if value is None:
        error: CodedJobError
        if outcome.error is not None and not flag.expired():
            error = CodedJobError(
                job.token, {position: outcome.error_text}, job.code.k - 1, job.code.k
            )
        else:
            error = CodedJobTimeout(
                job.token, job.timeout or 0.0, [position], {}, job.code.k - 1, job.code.k
            )
        if not job.cancellable:  # for the job's record (a rescue would have logged it)
            get_worker().log_event(
                job.topic(started), {"block": block,
                                     "error": outcome.error_text or describe_error(error),
                                     "attempts": outcome.attempts},
            )
        raise error from outcome.error
    return value if job.rows is None else value[: job.rows[block]]


@dataclass
class _Snapshot:
    """The work tasks of a run, as the scheduler sees them (`_snapshot`)."""

    done: list[bool]  # per data block: its work task has returned
    ages: dict[int, float]  # data block -> seconds since its task reported its start
    failed: dict[int, tuple[str, int]]  # data block -> the error its task reported, attempts
    erred: frozenset[int] = frozenset()  # data blocks whose work task raised
    silent: frozenset[int] = frozenset()  # data blocks held only by silent workers
    where: dict[int, str] = field(default_factory=dict)  # data block -> the worker running it


def _snapshot(
    keys: list[Any], topic: str, data_keys: list[Any] = (), dask_scheduler: Any = None
) -> _Snapshot:
    """On the scheduler: the run's work tasks ``keys``, with the starts and failures they
    reported on ``topic`` (timed by the scheduler's clock, so workers' clocks need not
    agree), and which of the data blocks ``data_keys`` only silent workers hold (no
    heartbeat for `SILENT_SECONDS`: paused, or gone)."""
    tasks = dask_scheduler.tasks
    # released or forgotten: the compute that wanted it is over (or gave it up)
    done = [(ts := tasks.get(key)) is None or ts.state not in PENDING for key in keys]
    now = time.time()
    ages: dict[int, float] = {}
    failed: dict[int, tuple[str, int]] = {}
    for stamp, message in dask_scheduler.get_events(topic):
        block = int(message["block"])
        if "error" in message:
            failed[block] = (str(message["error"]), int(message["attempts"]))
        else:
            ages[block] = now - stamp
    where = {
        block: ts.processing_on.address for block, key in enumerate(keys)
        if (ts := tasks.get(key)) is not None and ts.processing_on is not None
    }
    erred = frozenset(
        block for block, key in enumerate(keys)
        if (ts := tasks.get(key)) is not None and ts.state == "erred"
    )
    silent = frozenset(
        block for block, key in enumerate(data_keys)
        if (ts := tasks.get(key)) is not None and ts.who_has
        and all(now - ws.last_seen > SILENT_SECONDS for ws in ts.who_has)
    )
    return _Snapshot(done, ages, failed, erred, silent, where)


def start(job: SystematicClusterJob, keys: list[Any], outputs: list[Any]) -> float:
    """The run's start (`dask_polar.array._cluster.start`), which also submits the run's
    rescue: a task of its own that nothing in the graph waits for (without redundancy it
    only records the job)."""
    started = start_run(job, keys, outputs, job.run_state)
    from distributed import Future, fire_and_forget, get_client

    client = get_client()
    fire_and_forget(client.submit(
        rescue, job, started, Future(job.rhs_key, client), key=job.rescue_key(started),
        pure=False, retries=0,
    ))
    return started


def rescue(job: SystematicClusterJob, started: float, b: np.ndarray) -> None:
    """The rescue task: the products of the data blocks whose own work did not deliver
    them, from parity submitted only when it is needed (see the module docstring). It ends
    once every work task has returned."""
    from distributed import worker_client

    with worker_client() as client:
        _Rescue(job, started, b, client).run()


class _Rescue:
    """One run of the rescue task (`rescue`)."""

    def __init__(
        self, job: SystematicClusterJob, started: float, b: np.ndarray, client: Any
    ) -> None:
        self.job, self.started, self.client = job, started, client
        self.finite_b = bool(block_stats(b)[1])
        self.keys = list(job.work_keys)
        self.arrived: dict[int, float] = {}  # data block -> seconds after the start
        self.failed: dict[int, str] = {}  # coded position -> its error
        self.attempts: dict[int, int] = {}  # coded position -> attempts made, if it failed
        self.launched: dict[int, tuple[Any, float]] = {}  # backup position -> (future, launched)
        self.finished: dict[int, float] = {}  # backup position -> seconds after the start
        # data block -> its copy's future, and when it was launched
        self.copies: dict[int, tuple[Any, float]] = {}
        self.by_copy: set[int] = set()  # data blocks whose copy came first
        self.copy_failed: dict[int, str] = {}  # data block -> its copy's error
        self.durations: list[float] = []  # finished work tasks', from start to result
        self.running: dict[int, float] = {}  # data block -> seconds since its task started
        self.silent: frozenset[int] = frozenset()  # data blocks only silent workers hold
        self.starts: dict[int, float] = {}  # data block -> its task's start, after the run's
        self.where: dict[int, str] = {}  # data block -> the worker running its work task
        self.refs: dict[Any, Any] = {}
        # parity (and copies) by the number of blocks they sum: their encode's cost
        self.cheapest = sorted(job.backups, key=lambda j: (len(job.backups[j][1]), j))

    def ref(self, key: Any) -> Any:
        """A future of graph key ``key`` (held for the run by the scheduler)."""
        from distributed import Future

        if key not in self.refs:
            self.refs[key] = Future(key, self.client)
        return self.refs[key]

    def run(self) -> None:
        if not self.job.cancellable:
            self.follow()
            return
        job, code = self.job, self.job.code
        deadline = None if job.timeout is None else self.started + job.timeout
        rescued: dict[int, Any] = {}  # data block -> the future its work task returns
        try:
            while True:
                self.poll()
                if len(self.arrived) == code.k:
                    break
                mask = self.mask()
                if self.finite_b and code.decodable(mask):
                    rescued = self.decode()
                    break
                if deadline is not None and time.time() >= deadline:
                    raise self.timed_out()
                self.launch_needed(mask)
                self.wait_for_launched(RESCUE_POLL)
            self.record(decoded=True)
        except Exception as error:  # a failed job ends too: observers must not wait on it
            if not isinstance(error, CodedJobError):  # the rescue's own: its work tasks raise it
                logger.error("polar job %s: the rescue failed", job.token, exc_info=True)
            self.record(decoded=False)
            rescued = {
                i: self.client.submit(
                    _raise, error, key=job.rescued_key(i, self.started), priority=RESCUE_PRIORITY
                )
                for i in range(code.k) if i not in self.arrived
            }
        for i in self.by_copy:  # under the key its work task fetches
            rescued[i] = self.client.submit(
                _same, self.copies[i][0], key=job.rescued_key(i, self.started), pure=False,
                priority=RESCUE_PRIORITY,
            )
        if rescued or self.launched or self.copies:  # the stragglers and the parity may stop
            try:
                self.client.sync(self.client.scheduler.event_set, name=job.event_name(self.started))
            except (OSError, RuntimeError) as error:  # the cluster is closing
                logger.debug("polar job %s: flag not set (%r)", job.token, error)
                return
        # the rescued products live as long as this task holds them: until the work tasks
        # that return them have
        while rescued and self.work_pending():
            time.sleep(POLL_SECONDS)

    def follow(self) -> None:
        """Without redundancy nothing can stand in for a block: only record the job, once
        every work task has returned or one has failed (it raises in the compute)."""
        while True:
            self.poll()
            if len(self.arrived) == self.job.code.k or self.failed:
                self.record(decoded=not self.failed)
                return
            time.sleep(FOLLOW_POLL)

    def wait_for_launched(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or until a parity task or copy launched finishes."""
        from distributed import wait

        running = [
            future for j, (future, _) in self.launched.items()
            if j not in self.finished and j not in self.failed
        ] + [
            future for i, (future, _) in self.copies.items()
            if i not in self.arrived and i not in self.copy_failed
        ]
        if not running:
            time.sleep(timeout)
            return
        try:
            wait(running, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass

    def work_pending(self) -> bool:
        """Whether a work task of the job is still to return."""
        try:
            states = self.client.sync(self.client.scheduler.get_task_status, keys=self.keys)
        except (OSError, RuntimeError):  # the cluster is closing
            return False
        return any(state in PENDING for state in states.values())

    def now(self) -> float:
        return time.time() - self.started

    def poll(self) -> None:
        """What arrived or failed since the last look."""
        job = self.job
        snapshot = self.client.run_on_scheduler(
            _snapshot, self.keys, job.topic(self.started), list(job.data_keys)
        )
        now = self.now()
        self.where, self.silent = snapshot.where, snapshot.silent
        for block, (error, attempts) in snapshot.failed.items():
            self.failed[job.positions[block]] = error
            self.attempts[job.positions[block]] = attempts
        for block in snapshot.erred:  # raised in the compute (no redundancy, or a timeout)
            self.failed.setdefault(job.positions[block], "work task raised")
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
                self.failed[j] = _failure(future, "parity task")
        for block, (future, _) in self.copies.items():
            if block in self.arrived or block in self.copy_failed or not future.done():
                continue
            if future.status == "finished":
                self.arrived[block] = now
                self.by_copy.add(block)
            else:
                self.copy_failed[block] = _failure(future, "copy")

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
        travel through the scheduler, which on a busy cluster takes tens of ms). Not less
        in the job's tail: the tasks still running there are the slowest, most of them
        past the median of a loaded cluster, and each copy moves its block."""
        typical = float(np.median(self.durations)) if self.durations else None
        return max(late_seconds(typical), CLUSTER_MIN_LATE)

    def last_arrival(self) -> float:
        return max([*self.arrived.values(), *self.finished.values(), 0.0])

    def launch_needed(self, mask: np.ndarray) -> None:
        """Launch what the results in and those on their way (not yet late) need to decode.

        A late block gets a copy of its product, away from its straggler: one product,
        where any parity row that could stand in for it would sum the late block itself
        with others (its encode reads them all). A block whose product failed (its retries
        were copies already), or whose copy is late or failed too, gets parity, the
        cheapest first. With ``B`` not finite (the parity is of no use), copies only."""
        job, now = self.job, self.now()
        late = self.late_seconds()
        # a task not started yet is queued, not late; unless nothing has come for long
        stalled = now - self.last_arrival() > max(STALL_FACTOR * late, STALL_SECONDS)
        chosen = mask.copy()
        for i in range(job.code.k):
            if job.positions[i] not in self.failed and not stalled:
                chosen[job.positions[i]] |= self.running.get(i, 0.0) <= late
        for j, (_, launched) in self.launched.items():
            if j not in self.failed and now - launched <= STAND_IN_LATE_FACTOR * late:
                chosen[j] = True
        for i, (_, launched) in self.copies.items():
            if i not in self.copy_failed and now - launched <= STAND_IN_LATE_FACTOR * late:
                chosen[job.positions[i]] = True
        for i in job.code.missing(chosen):
            if i in self.silent:  # a copy would wait for that worker too (the watch removes it)
                continue
            if i not in self.copies and (job.positions[i] not in self.failed or not self.finite_b):
                self.copies[i] = (self.copy(i), now)
                chosen[job.positions[i]] = True
        picks = self.parity_needed(chosen) if self.finite_b else []
        if picks:
            logger.debug("polar job %s: launching parity %s", job.token, picks)
        for j in picks:
            coefficients, sources = job.backups[j]
            future = self.client.submit(
                parity_product, coefficients, sources, RowFactors(job.code.n, job.inner),
                Arrivals(), None, self.ref(job.rhs_key), _RunFlag(job, self.started),
                job.faults, j, 0, job.panel_rows, *(self.ref(job.data_keys[i]) for i in sources),
                key=(f"polar-parity-{job.token}", j, self.started), pure=False,
                retries=job.retries, priority=RESCUE_PRIORITY,
            )
            self.launched[j] = (future, now)
        if not picks and not self.pending_can_help(mask):
            raise CodedJobError(
                job.token, self.failed, int(mask.sum()) - len(job.layout.zero), job.code.k
            )

    def parity_needed(self, chosen: np.ndarray) -> list[int]:
        """The fewest parity rows not launched yet that make ``chosen`` decodable, cheapest
        first, none that sums a block only silent workers hold."""
        job = self.job
        deferred = [
            j for j in self.cheapest
            if j not in self.launched and not self.silent.intersection(job.backups[j][1])
        ]
        return useful_background(job.code, chosen, deferred, job.code.generator)

    def pending_can_help(self, mask: np.ndarray) -> bool:
        """Whether the results still to come (work not failed, parity running, parity not
        launched) could make the job decodable."""
        job = self.job
        reachable = mask.copy()
        for i in range(job.code.k):
            reachable[job.positions[i]] |= job.positions[i] not in self.failed or (
                i in self.copies and i not in self.copy_failed
            )
        if self.finite_b:
            for j in job.backups:
                reachable[j] |= j not in self.failed
        return job.code.decodable(reachable)

    def decode(self) -> dict[int, Any]:
        """Futures of the missing blocks' products (under their `rescued_key`), decoded on a
        worker from the parity that arrived and the plain products of the blocks it sums
        (None for a block the parity left out)."""
        job, started = self.job, self.started
        missing = [i for i in range(job.code.k) if i not in self.arrived]
        rows = {j: self.launched[j][0] for j in self.finished}
        summed = {i for j in rows for i in job.backups[j][1]} - set(missing)
        plain = {
            i: self.copies[i][0] if i in self.by_copy else self.ref(job.work_keys[i])
            for i in sorted(summed)
        }
        decoded = self.client.submit(
            decode_missing, job.backups, missing, rows, plain, job.dtype, job.block_rows,
            job.inner, key=(f"polar-decode-{job.token}", started), pure=False,
            priority=RESCUE_PRIORITY,
        )
        # a block left out of the parity (not finite) is picked as None: its work task
        # computes it directly (numpy's NaN and infinity pattern)
        return {
            i: self.client.submit(
                _pick, decoded, i, key=job.rescued_key(i, started), priority=RESCUE_PRIORITY
            )
            for i in missing
        }

    def copy(self, block: int) -> Any:
        """A future of data block ``block``'s product computed again (as a re-run: its
        injected faults too), on a worker other than its straggler's where there is one."""
        job = self.job
        # the client's view of the workers (refreshed every few seconds: loose placement)
        workers = self.client.scheduler_info().get("workers", {})
        others = [w for w in workers if w != self.where.get(block)]
        placement = {"workers": others, "allow_other_workers": True} if others else {}
        return self.client.submit(
            copy_product, self.ref(job.data_keys[block]), self.ref(job.rhs_key),
            _RunFlag(job, self.started), job.faults, job.positions[block], job.panel_rows,
            job.dtype, key=(f"polar-copy-{job.token}", block, self.started), pure=False,
            priority=RESCUE_PRIORITY, **placement,
        )

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
        record.backups = len(self.copies)
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
    rows: dict[int, WorkOutcome], plain: dict[int, np.ndarray], dtype: np.dtype,
    block_rows: int, inner: int,
) -> dict[int, Uncertain | None]:
    """The products of the ``missing`` data blocks, from the parity results ``rows``
    (position -> outcome, with the row factors of the blocks each summed in its ``side``)
    and the plain products of the other blocks those sum (``plain``, block -> product;
    a block shorter than ``block_rows`` is the padded block's product without its zero
    rows).

    Parity row ``j`` is ``sum_t c_t D_t A_t @ B`` over its blocks ``t``, ``D_t`` their
    row factors (`row_normalizers`; a block that is not finite is left out). Moving the
    known blocks' terms to the right leaves a small system in the missing blocks' scaled
    products, solved in double precision at least (least squares: there may be more rows
    than unknowns). Each product comes with the entries it may have lost digits in
    (`dask_polar.codes.certify`, for ``inner``, the product's inner dimension), which its
    work task computes from its data block. A missing block that is not finite comes back
    None: the parity does not hold it.
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
    # what the solve combines, for the certificate: the parity results, then the known
    # blocks' scaled products with their coefficients in each parity row
    results = [outcome.value for _, outcome in sorted(rows.items())]
    known: dict[int, int] = {}
    terms: list[tuple[int, int, float]] = []
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
            value = _tasks.pad_rows(plain[source], block_rows, wide)
            if row_factors is not None:
                value = value * row_factors[:, None]
            if source not in known:
                known[source] = len(results)
                results.append(value)
            terms.append((r, known[source], float(coefficient)))
            rhs[r] -= coefficient * value.reshape(-1)
    out: dict[int, Uncertain | None] = dict.fromkeys(missing)
    if not unknown:
        return out
    solve = np.linalg.pinv(matrix)  # (unknowns, parity rows): tiny
    solved = solve @ rhs
    weights = np.zeros((len(unknown), len(results)), dtype=solve.dtype)
    weights[:, : len(rows)] = solve
    for r, t, coefficient in terms:
        weights[:, t] -= coefficient * solve[:, r]
    need = required(weights, results, inner, len(results))
    for i, value, block_need in zip(unknown, solved, need):
        value = value.reshape(first.shape)
        suspects = Suspects.of(block_need, value)
        row_factors = factors[i][0] if i in factors else None
        if row_factors is not None:
            value = value / row_factors[:, None]
        out[i] = Uncertain(value.astype(dtype, copy=False), suspects)
    return out


def _fetch(key: Any, timeout: float | None = None) -> Any:
    """The value of ``key``, a task the scheduler has (a `Future` made from a key starts
    pending until the scheduler is told that this client wants it: then it reports the
    key's state once finished or erred, whose exception ``result`` raises; as does
    ``TimeoutError`` after ``timeout`` seconds)."""
    from distributed import Future, get_client

    client = get_client()
    future = Future(key, client)
    client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
    return future.result(timeout=timeout)


def is_work_key(key: Any) -> bool:
    """Whether ``key`` is a coded product's work task on a cluster (a data block's product,
    which may be an output block, or a butterfly's coded task)."""
    name = key[0] if isinstance(key, tuple) else key
    return isinstance(name, str) and name.startswith(("polar-work-", "coded-matmul-"))


def _failure(future: Any, what: str) -> str:
    """Why ``what``'s ``future``, done but not finished, has no value."""
    error = future.exception() if future.status == "error" else None
    return describe_error(error) if error else f"{what} {future.status}"


def _pick(decoded: dict[int, Uncertain | None], block: int) -> Uncertain | None:
    return decoded[block]


def _same(value: np.ndarray) -> np.ndarray:
    return value


def copy_product(
    a: np.ndarray, b: np.ndarray, flag: _RunFlag, faults: FaultPlan | None, position: int,
    panel_rows: int | None, dtype: np.dtype,
) -> np.ndarray | None:
    """A late data block's product ``a @ b`` in ``dtype``, computed again as the re-run of
    its coded task ``position`` (its injected faults for a second attempt); None if the
    run's flag stopped it (the job did without it)."""
    outcome = _tasks.coded_product(a, b, flag.bind(), faults, position, 1, panel_rows)
    return None if outcome.value is None else outcome.value.astype(dtype, copy=False)


def _raise(error: BaseException) -> None:
    """A task that raises ``error``: the rescue's failure, for the work tasks to raise."""
    raise error


def direct_product(a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a @ b`` in ``dtype``: a data block's product computed again (numpy's NaN and
    infinity pattern, where the parity cannot hold it; without its warnings, which in a
    worker would only be logged)."""
    with np.errstate(all="ignore"):
        return (a @ b).astype(dtype, copy=False)


def take_columns(
    value: np.ndarray, rows: int, col_start: int, col_stop: int, dtype: np.dtype
) -> np.ndarray:
    """Output block: rows ``:rows``, columns ``col_start:col_stop`` of a data block's
    product, in ``dtype`` (where ``B`` has several column chunks, or the product a cast)."""
    return value[:rows, col_start:col_stop].astype(dtype, copy=False)


class _UnfusedTask(Task):
    """A work task, which Dask's linear fusion leaves alone: fused into a later task it
    would run under another key, hidden from the rescue and the run's watch, which follow
    the work tasks by their keys."""

    __slots__ = ()

    @property
    def block_fusion(self) -> bool:
        return True


def systematic_cluster_layer(
    spec: ProductSpec, rhs_key: Any, homes: tuple[str | None, ...] | None
) -> tuple[dict[Any, Task], dict[Any, str]]:
    """The tasks of a systematic code's product on a cluster (see the module docstring)
    and their placement: each work task on the worker of its data block (``homes``, when
    ``A`` is persisted: the scheduler would otherwise move some to workers that look less
    busy, taking their blocks along).

    Where ``B`` is one column chunk and the product needs no cast, the work tasks are the
    output blocks; otherwise each output block is cut from its row's work task.
    """
    layer, data_keys = data_block_layer(
        spec.a_keys, spec.row_chunks, spec.token, spec.work if spec.cast else None
    )
    direct = len(spec.col_chunks) == 1 and spec.dtype == spec.work
    work_name = f"polar-work-{spec.token}"
    work_keys = tuple(
        (spec.out_name, i, 0) if direct else (work_name, i) for i in range(len(data_keys))
    )
    job = SystematicClusterJob(
        token=spec.token, code=spec.code, data_keys=tuple(data_keys), rhs_key=rhs_key,
        block_rows=max(spec.row_chunks), inner=spec.inner, dtype=spec.work, faults=spec.faults,
        panel_rows=spec.options.panel_rows, timeout=spec.options.timeout,
        retries=spec.options.retries, unresponsive=unresponsive_seconds(),
        work_keys=work_keys, rows=tuple(spec.row_chunks) if direct else None,
    )
    started = TaskRef(job.start_key)
    placement: dict[Any, str] = {}
    for i, (key, work_key) in enumerate(zip(data_keys, work_keys)):
        layer[work_key] = _UnfusedTask(
            work_key, work, job, started, i, TaskRef(key), TaskRef(rhs_key)
        )
        if homes is not None and homes[i] is not None:
            placement[work_key] = homes[i]
    outputs = list(work_keys)
    if not direct:
        col_bounds = spec.col_bounds
        outputs = []
        for i, rows in enumerate(spec.row_chunks):
            for c in range(len(spec.col_chunks)):
                key = (spec.out_name, i, c)
                layer[key] = Task(
                    key, take_columns, TaskRef(work_keys[i]), rows, col_bounds[c],
                    col_bounds[c + 1], spec.dtype,
                )
                if work_keys[i] in placement:
                    placement[key] = placement[work_keys[i]]
                outputs.append(key)
    layer[job.start_key] = Task(job.start_key, start, job, list(layer), outputs)
    return layer, placement
