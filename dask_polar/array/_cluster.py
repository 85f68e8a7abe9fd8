"""The cluster layout of a coded product: every step is a graph task where its data lives.

On a dask.distributed cluster no task may gather the coded blocks or the results, so the
product is laid out as ordinary graph tasks and the scheduler's data locality does the rest:

* ``polar-encode-*``: the butterfly, as in the driver layout (`encode_layer`);
* ``polar-work-<token>`` ``(j,)``: ``X_j @ B``, run where coded block ``j`` lives;
* ``polar-result-<token>`` ``(j, p)``: row panel ``p`` of result ``j``, cut where the result
  lives, so each decode task receives only its panel. The first panel of each result asks
  the scheduler which results are in memory (``who_has``, metadata only, without blocking
  its thread) and, once they are decodable, sets the job's cancel flag (a
  ``distributed.Event``): the stragglers see it between row panels and return at once,
  without a result;
* ``polar-decode-<token>`` ``(p,)``: decodes row panel ``p`` of every data block from the
  first decodable set of results, in the order they finished. Decoding is linear and acts on
  rows independently, so the panels decode in parallel with one value-free schedule;
* ``polar-part-<token>`` ``(p, i, c)`` and the output blocks ``(name, i, c)``: the rows of
  data block ``i`` cut from each panel, then joined into ``A``'s row chunks.

Early completion does not need the straggler's cooperation: the decode tasks depend on
every work task, but a work task runs its product in a helper thread and returns, without a
result, within a cancel-poll of the decodable moment, whatever the product is doing. A work
task whose product raises after ``retries`` attempts returns a failed outcome, an erasure;
a lost worker's tasks run again elsewhere (Dask's rules). So a result is either right or
the compute raises (`CodedJobError`, `CodedJobTimeout`). A worker that stops answering (a
paused process, a frozen VM) while the job waits on it is removed from the scheduler after
``polar.unresponsive`` seconds (`dask_polar.array._watch`), and its tasks run elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.task_spec import Task, TaskRef
from dask.utils import parse_timedelta

from .. import config
from ..codes import ErasureCode, PolarCode
from ..codes.certify import Decoded, Suspects, Uncertain, certified_decode, certify
from ..exceptions import CodedJobError, CodedJobTimeout, NotDecodableError
from ..executors import WorkOutcome
from ..executors._core import describe_error, late_seconds
from ..executors.cooperative import POLL_SECONDS, worker_name
from ..jobs import JobRecord, TaskRecord, notify, remember
from ..stragglers.faults import FaultPlan
from . import _tasks
from ._scaling import Scales
from ._watch import RunState, run_started

if TYPE_CHECKING:
    from ._plan import ProductPlan

__all__ = ["ClusterJob", "RunNames", "cluster_layer", "panel_bounds"]

logger = logging.getLogger(__name__)

#: Target bytes of one decode panel: small enough that the panels spread over the workers,
#: large enough that the per-task overhead (a few ms) stays small against the decode.
DECODE_PANEL_BYTES = 16 << 20
#: At most this many decode panels (each output block gathers one part from every panel).
MAX_PANELS = 16


class RunNames:
    """What a coded job on a cluster is called, and its record's header: the part shared by
    `ClusterJob` and the systematic layout's job (both frozen dataclasses with ``token``,
    ``code`` and ``faults``)."""

    token: str
    code: ErasureCode
    faults: FaultPlan | None

    @property
    def start_key(self) -> str:
        return f"polar-start-{self.token}"

    @property
    def work_name(self) -> str:
        return f"polar-work-{self.token}"

    @property
    def cancellable(self) -> bool:
        """Whether the code has redundancy: without, every result is needed and nothing is
        cancelled, so the tasks need not look at the flag."""
        return self.code.n > self.code.k

    def event_name(self, started: float) -> str:
        """The cancel flag of the run that started at ``started``: each run of the graph has
        its own, so a rerun of the same product (same token) starts with a clear flag."""
        return f"polar-cancel-{self.token}-{started!r}"

    def new_record(self, started: float, statuses: Any) -> JobRecord:
        """The job's record as the run starting at ``started`` begins it, its tasks in
        ``statuses`` (one per coded position)."""
        return JobRecord(
            token=self.token, code=repr(self.code), n=self.code.n, k=self.code.k,
            backend="distributed",
            info_set=self.code.info_set.tolist() if isinstance(self.code, PolarCode) else None,
            started=started,
            tasks=[TaskRecord(j, status) for j, status in enumerate(statuses)],
            straggler_delays=None if self.faults is None else self.faults.first.tolist(),
        )


@dataclass(frozen=True)
class ClusterJob(RunNames):
    """What the tasks of one coded product on a cluster share (pickled into each task)."""

    token: str
    code: ErasureCode
    coded: tuple[int, ...]  # coded indices with a work task (the others are zero blocks)
    sources: dict[int, int]  # coded index -> the data block it is as it is, or -1
    block_rows: int
    columns: int
    dtype: np.dtype
    faults: FaultPlan | None
    panel_rows: int | None
    timeout: float | None = None
    retries: int = 0
    unresponsive: float | None = None  # seconds of silence before a worker is removed

    @property
    def result_name(self) -> str:
        return f"polar-result-{self.token}"

    def record(self, started: float) -> JobRecord:
        """The job's record as the run starting at ``started`` begins it (all tasks pending)."""
        coded = set(self.coded)
        return self.new_record(
            started, ("pending" if j in coded else "zero" for j in range(self.code.n))
        )

    @property
    def result_keys(self) -> list[Any]:
        """The keys whose presence on a worker shows a result arrived: the work tasks' and
        their first panels' (a work result may be released once all its panels exist)."""
        return [(self.work_name, j) for j in self.coded] + [
            (self.result_name, j, 0) for j in self.coded
        ]

    def arrived_mask(self, holders: dict[Any, Any]) -> np.ndarray:
        """Mask of the results held, from the scheduler's ``who_has`` of `result_keys` (zero
        blocks always count)."""
        mask = np.ones(self.code.n, dtype=bool)
        for j in self.coded:
            mask[j] = bool(holders.get((self.work_name, j)) or holders.get((self.result_name, j, 0)))
        return mask

    def arrived(self, client: Any) -> np.ndarray:
        """Mask of the results the scheduler holds now (metadata only: who holds each key)."""
        return self.arrived_mask(client.sync(client.scheduler.who_has, keys=self.result_keys))


#: A worker process stops asking for a job's flag once no task of the job has looked at it
#: for this many seconds (a later look asks again).
WATCH_IDLE_SECONDS = 1.0
_WATCHED: OrderedDict[str, _WatchedEvent] = OrderedDict()  # event name -> this process's copy
_WATCHED_LOCK = threading.Lock()


def seconds_left(timeout: float | None, started: float) -> float | None:
    """Seconds left of a run's ``timeout`` from its start ``started`` (0 once it has
    passed; None: no timeout)."""
    return None if timeout is None else max(0.0, started + timeout - time.time())


class _WatchedEvent:
    """This worker process's copy of the ``distributed.Event`` ``name``.

    While tasks look at it, the worker's event loop waits on the scheduler for the event
    (``event_wait``, `POLL_SECONDS` at a time), so the tasks read a local flag instead
    of making a round trip to the scheduler each (on a busy cluster such a round trip can
    take as long as a product), and hear of it as soon as it is set (`wake`). Once set, the
    copy stays set.
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.flag = threading.Event()
        self.used = time.monotonic()
        self.watching = False
        self._lock = threading.Lock()
        self._wakers: list[threading.Event] = []

    @classmethod
    def get(cls, client: Any, name: str) -> _WatchedEvent:
        """The process's copy of event ``name``, created on first use."""
        with _WATCHED_LOCK:
            watched = _WATCHED.get(name)
            if watched is None:
                watched = _WATCHED[name] = cls(client, name)
                while len(_WATCHED) > 1024:  # old jobs' copies
                    _WATCHED.popitem(last=False)
        return watched

    def is_set(self) -> bool:
        self.used = time.monotonic()
        if not self.flag.is_set():
            with self._lock:
                start, self.watching = not self.watching, True
            if start:
                self.client.loop.add_callback(self._watch)
        return self.flag.is_set()

    def wake(self, waker: threading.Event) -> None:
        """Set ``waker`` once the event is set (at once if it is)."""
        with self._lock:
            if not self.flag.is_set():
                self._wakers.append(waker)
                return
        waker.set()

    def set(self) -> None:
        """Set this process's copy (the scheduler's event is set)."""
        with self._lock:
            self.flag.set()
            wakers, self._wakers = self._wakers, []
        for waker in wakers:
            waker.set()

    async def _watch(self) -> None:
        try:
            while time.monotonic() - self.used < WATCH_IDLE_SECONDS:
                # a waiter that times out unset deletes the scheduler's event (no leak); short
                # waits: a scheduler that closes during one logs its cancellation as an error
                if await self.client.scheduler.event_wait(name=self.name, timeout=POLL_SECONDS):
                    self.set()
                    return
        except (OSError, RuntimeError) as error:  # the worker or scheduler is closing
            logger.debug("stopped watching %s (%r)", self.name, error)
        finally:
            with self._lock:
                self.watching = False


class _ClusterFlag:
    """Work task ``j``'s view of its job's cancel flag.

    The flag is a ``distributed.Event`` named by the job's run, which each worker process
    watches once (`_WatchedEvent`). A set flag counts only while the results the scheduler
    holds, other than ``j``'s own, are decodable: that keeps a task whose result is needed
    (re-run after its worker died with a result) from cancelling itself.
    """

    def __init__(self, job: ClusterJob, index: int, started: float) -> None:
        from distributed import get_client

        self.job = job
        self.index = index
        self.started = started
        self.client = get_client()
        self.event = _WatchedEvent.get(self.client, job.event_name(started))

    def expired(self) -> bool:
        """Whether the job's ``timeout`` has passed (its tasks then stop, undecoded)."""
        return seconds_left(self.job.timeout, self.started) == 0.0

    def _left(self, timeout: float) -> float:
        """``timeout``, cut to what is left of the job's ``timeout``."""
        left = seconds_left(self.job.timeout, self.started)
        return timeout if left is None else min(timeout, left)

    def _confirmed(self) -> bool:
        mask = self.job.arrived(self.client)
        mask[self.index] = False
        return self.job.code.decodable(mask)

    def is_set(self) -> bool:
        if not self.job.cancellable:
            return self.expired()
        if self.expired():
            return True
        if not self.event.is_set():
            return False
        try:
            return self._confirmed()
        except (AttributeError, OSError, RuntimeError) as error:
            # the client is closing (a straggler woke up after the cluster went away):
            # there is nobody left to work for
            logger.debug("polar job %s: cannot confirm the flag (%r); stopping", self.job.token, error)
            return True

    def wake_on_set(self, waker: threading.Event) -> None:
        """Set ``waker`` once this worker hears that the job's flag is set."""
        self.event.wake(waker)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + self._left(timeout)
        while (left := deadline - time.monotonic()) > 0:
            if self.is_set():
                return True
            if self.event.flag.is_set():
                # set, not confirmed: a result used for the announcement was lost since
                time.sleep(min(left, POLL_SECONDS))
            else:
                self.event.flag.wait(min(left, POLL_SECONDS))
        return self.expired()

    def announce_soon(self) -> None:
        """Set the flag, without waiting, if the results held are decodable.

        The check runs on the worker's event loop, so the calling task returns at once: a
        blocking round trip to the scheduler per result would cost as much as a product.
        """
        self.client.loop.add_callback(self._announce)

    async def _announce(self) -> None:
        if self.event.flag.is_set():  # announced already: no need to ask
            return
        scheduler, name = self.client.scheduler, self.job.event_name(self.started)
        try:
            mask = self.job.arrived_mask(await scheduler.who_has(keys=self.job.result_keys))
            if not self.job.code.decodable(mask) or await scheduler.event_is_set(name=name):
                return
            await scheduler.event_set(name=name)
            self.event.set()
        except (OSError, RuntimeError) as error:  # the worker or scheduler is closing
            logger.debug("polar job %s: no announce (%r)", self.job.token, error)
            return
        record = self.job.record(self.started)
        record.decodable_at = time.time() - self.started
        record.used = np.flatnonzero(mask).tolist()
        record.cancelled = np.flatnonzero(~mask).tolist()
        notify("on_decodable", record)


def start(job: Any, keys: list[Any], outputs: list[Any], state: RunState = RunState()) -> float:
    """The start of ``job`` (a root task, so it runs first): its time names this run (its
    cancel flag, its deadline, its record). Kept on the scheduler with a watch over the
    run's tasks ``keys`` until its ``outputs`` are done, and ``state`` deleted then
    (`dask_polar.array._watch`)."""
    started = run_started(job.start_key, keys, outputs, job.unresponsive, state)
    notify("on_start", job.record(started))
    return started


def work(
    job: ClusterJob, started: float, scales: Scales, index: int, block: np.ndarray,
    rhs: np.ndarray,
) -> WorkOutcome:
    """Work task ``index``: ``block @ rhs``, unless the job becomes decodable first.

    ``block`` and ``rhs`` are scaled by their `Scales` factors; a data block computed
    directly gives a zero result at once. The product runs in a helper thread
    (`_run_detached`) while this task watches the job's cancel flag, so the task returns at
    the decodable moment even if its product is stuck in a long C call; a product that
    raises after ``retries`` attempts returns a failed outcome, an erasure for the decode.
    """
    flag = _ClusterFlag(job, index, started)
    source = job.sources[index]
    left_out = scales.left_out(source)
    if left_out:  # its non-finite values must not reach the product (nor warn there)
        block = np.zeros_like(block)
    faults = None if left_out else job.faults
    rhs, row_factors = scales.rhs(rhs), scales.row_factors(source)

    def product(attempt: int) -> WorkOutcome:
        return _tasks.coded_product(
            block, rhs, flag, faults, index, attempt, job.panel_rows, row_factors
        )

    return run_product(job, flag, index, product, started)


def run_product(
    job: Any, flag: Any, index: int, product: Callable[[int], WorkOutcome], started: float
) -> WorkOutcome:
    """Coded task ``index``'s ``product`` with its retries: in a helper thread where the
    job may stop it (`_run_detached`), else on the task's own thread; its result goes to
    the job's observers (``on_result``)."""
    if job.cancellable or job.timeout is not None:
        outcome = _run_detached(job, flag, index, product)
    else:  # every result is needed and nothing stops it: no need for a helper thread
        outcome = _attempts(job, flag, index, product)
    task = TaskRecord(
        index, outcome.status, started=outcome.started - started,
        finished=outcome.finished - started, attempts=outcome.attempts, worker=outcome.worker,
        error=outcome.error_text,
    )
    notify("on_result", job.record(started), task)
    return outcome


def _attempts(
    job: ClusterJob, flag: _ClusterFlag, index: int, product: Callable[[int], WorkOutcome]
) -> WorkOutcome:
    """Run ``product(attempt)``, retrying a failure up to ``retries`` times (each attempt
    draws its own injected fault); the last failure comes back as a failed outcome, not
    raised."""
    started, worker = time.time(), worker_name()
    for attempt in range(job.retries + 1):
        try:
            outcome = product(attempt)
        except Exception as error:  # an erasure: the decode does without it
            logger.debug("polar job %s: task %d attempt %d failed: %r", job.token, index, attempt, error)
            failure = error
            if flag.is_set():
                break
            continue
        outcome.started, outcome.worker, outcome.attempts = started, worker, attempt + 1
        return outcome
    return WorkOutcome(
        None, started, time.time(), worker, attempts=attempt + 1, error=failure
    )


class _HelperThreads:
    """Daemon threads that run the work tasks' products, reused from task to task.

    A thread started per task would cost a thread start each, and on CPython 3.11 starting
    a thread can deadlock with ``sys._current_frames`` (which distributed's profiler calls
    on the event loop every 10 ms) when a garbage collection during it runs a Python
    ``gc.callbacks`` entry (CPython gh-106883). Daemon, so that a product stuck in a long C
    call does not keep its worker process from exiting.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on an idle helper, or on a new one if none is idle."""
        with self._lock:
            start = not self._idle
            if not start:
                self._idle -= 1
        self._queue.put(fn)
        if start:
            threading.Thread(target=self._serve, name="polar-work-helper", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                fn()
            finally:
                with self._lock:
                    self._idle += 1


_HELPERS = _HelperThreads()


class _JobTimes:
    """How long the work tasks of recent jobs took in this worker process (the products
    that finished), for `_run_detached` to tell a stuck product from a running one."""

    def __init__(self, jobs: int = 64) -> None:
        self._times: OrderedDict[str, list[float]] = OrderedDict()
        self._jobs = jobs
        self._lock = threading.Lock()

    def add(self, token: str, seconds: float) -> None:
        with self._lock:
            self._times.setdefault(token, []).append(seconds)
            self._times.move_to_end(token)
            while len(self._times) > self._jobs:
                self._times.popitem(last=False)

    def late(self, token: str) -> float:
        """Seconds after which a product of job ``token`` counts as late here
        (`late_seconds` of the median of those that finished in this process)."""
        with self._lock:
            times = self._times.get(token)
            typical = float(np.median(times)) if times else None
        return late_seconds(typical)


_JOB_TIMES = _JobTimes()


def _run_detached(
    job: Any, flag: Any, index: int, product: Callable[[int], WorkOutcome]
) -> WorkOutcome:
    """`_attempts` in a helper thread, returning its outcome or, once the job is decodable
    (or timed out), a cancelled one at once.

    The helper runs on until its current C call (or injected block) ends, then sees the flag
    and stops; the worker's own thread is free from the decodable moment on. A product that
    is late (`_JobTimes`) gives its thread back to the worker (``secede``) while it waits:
    a product stuck in a C call must not hold up the tasks queued behind it.
    """
    started, worker = time.time(), worker_name()
    box: list[WorkOutcome] = []
    done = threading.Event()
    wake = threading.Event()  # set by the product's end and by the job's flag
    late = _JOB_TIMES.late(job.token)
    seceded = False

    def run() -> None:
        try:
            box.append(_attempts(job, flag, index, product))
        except BaseException as error:  # not the product's: still an erasure, never a hang
            box.append(WorkOutcome(None, started, time.time(), worker, error=error))
        finally:
            done.set()
            wake.set()

    _HELPERS.submit(run)
    flag.wake_on_set(wake)
    while not done.is_set():
        if flag.is_set():
            break
        if not seceded and time.time() - started > late:
            from distributed import secede

            secede()
            seceded = True
        wake.wait(POLL_SECONDS)
        wake.clear()  # then the loop looks at both again
    if box:
        outcome = box[0]
        outcome.worker = worker
        if outcome.value is not None:
            _JOB_TIMES.add(job.token, outcome.finished - outcome.started)
        return outcome
    return WorkOutcome(None, started, time.time(), worker, cancelled=True)


def result_panel(
    job: ClusterJob, started: float, index: int, outcome: WorkOutcome, lo: int, hi: int
) -> tuple[WorkOutcome, np.ndarray | None]:
    """Rows ``lo:hi`` of work task ``index``'s result, with its timing (no value if cancelled).

    The first panel asks whether the job is now decodable. It runs once the scheduler knows
    the result is in memory, so of two results arriving together the later one's check sees
    both. A code without redundancy has nothing to cancel and does not ask
    (`ClusterJob.cancellable`).
    """
    if lo == 0 and not outcome.cancelled and job.cancellable:
        _ClusterFlag(job, index, started).announce_soon()
    meta = dataclasses.replace(outcome, value=None)
    return meta, None if outcome.value is None else outcome.value[lo:hi]


def decode_panel(
    job: ClusterJob, started: float, panel: int, scales: Scales,
    *parts: tuple[WorkOutcome, np.ndarray | None],
) -> Decoded:
    """Decode one row panel of every data block from the first decodable set of results.

    The results are taken in the order they finished, as the driver layout would have
    received them; every panel sees the same outcomes and so decodes from the same set.
    The decode is certified (`dask_polar.codes.certify`, for the product's inner dimension
    in ``scales``): the output tasks compute the entries it may have lost digits in from
    their data blocks. Panel 0 also records the job (`dask_polar.last_job`).

    Raises
    ------
    CodedJobTimeout
        If the job's ``timeout`` stopped its tasks before the results were decodable.
    CodedJobError
        If tasks failed (after their retries) and the other results are not decodable;
        names the failed tasks and chains the first failure.
    NotDecodableError
        If the results that arrived (cancelled stragglers aside) are not decodable, which
        only happens when a used result was lost after the decodable moment.
    """
    if panel == 0 and job.cancellable:
        _retire_flag(job, started)
    outcomes = dict(zip(job.coded, (meta for meta, _ in parts)))
    values = {j: value for j, (_, value) in zip(job.coded, parts) if value is not None}
    zero = [j for j in range(job.code.n) if j not in outcomes]  # identically zero blocks
    order = zero + sorted(values, key=lambda j: outcomes[j].finished)
    try:
        needed = job.code.min_results(order)
    except NotDecodableError:
        if panel == 0:  # a failed job ends too: observers must not wait on it
            _record(job, started, outcomes, None)
        stopped = [j for j, o in outcomes.items() if o.cancelled]
        errors = {j: o.error for j, o in sorted(outcomes.items()) if o.error is not None}
        failures = {j: describe_error(error) for j, error in errors.items()}
        cause = next(iter(errors.values()), None)
        if job.timeout is not None and stopped:
            raise CodedJobTimeout(
                job.token, job.timeout, stopped, failures, len(values), job.code.k
            ) from cause
        if failures:
            raise CodedJobError(job.token, failures, len(values), job.code.k) from cause
        raise NotDecodableError(len(values), job.code.k, job.code.missing(order), repr(job.code)) from None
    used = order[:needed]
    shape = next(iter(values.values())).shape if values else (0, job.columns)
    results = {j: values[j] if j in values else np.zeros(shape, job.dtype) for j in used}
    decoded = certified_decode(job.code, results, scales.inner or 1)
    if panel == 0:
        _record(job, started, outcomes, used)
    return decoded


def _retire_flag(job: ClusterJob, started: float) -> None:
    """Delete the run's cancel flag from the scheduler: every work task has returned by now.

    The clear runs again a second later, for an announcement that was already on its way.
    """
    from distributed import get_client

    client, name = get_client(), job.event_name(started)

    async def clear() -> None:
        try:
            await client.scheduler.event_clear(name=name)
        except (OSError, RuntimeError) as error:  # the worker or scheduler is closing
            logger.debug("polar job %s: flag not cleared (%r)", job.token, error)

    client.loop.add_callback(clear)
    client.loop.call_later(1.0, client.loop.add_callback, clear)


def _record(
    job: ClusterJob, started: float, outcomes: dict[int, WorkOutcome], used: list[int] | None
) -> None:
    """The finished job's `JobRecord`, from the outcomes that reached the decode (``used``
    None: the job failed, undecoded)."""
    record = job.record(started)
    for j, outcome in outcomes.items():
        task = record.tasks[j]
        task.started, task.finished = outcome.started - started, outcome.finished - started
        task.worker, task.attempts = outcome.worker, outcome.attempts
        task.status = outcome.status
        task.error = outcome.error_text
    record.cancelled = [t.index for t in record.tasks if t.status == "cancelled"]
    if used is not None:
        record.used = sorted(used)
        finished = [record.tasks[j].finished for j in used if record.tasks[j].finished is not None]
        record.decodable_at = max(finished, default=0.0)
        record.decoded_at = time.time() - started
    remember(record)
    notify("on_finish", record)


def take_part(decoded: Decoded, index: int, col_start: int, col_stop: int) -> Uncertain:
    """Data block ``index``'s rows in a decode panel, columns ``col_start:col_stop``, with
    their suspect entries."""
    return Uncertain(
        decoded.values[index, :, col_start:col_stop],
        decoded.suspects[index].columns(col_start, col_stop),
    )


def join_parts(
    scales: Scales, direct: np.ndarray | None, i: int, rows: int, col_start: int,
    col_stop: int, dtype: np.dtype, block: np.ndarray, b: np.ndarray, *parts: Uncertain,
) -> np.ndarray:
    """Output block ``i``: its row parts from the panels, in order (see `finish_block`),
    the entries the decode may have lost digits in computed from ``block`` and ``b``."""
    if direct is not None:  # the parts are not used: don't join them
        return _tasks.finish_block(direct, scales, direct, i, rows, col_start, col_stop, dtype)
    values = [part.value for part in parts]
    joined = values[0] if len(values) == 1 else np.concatenate(values, axis=0)
    offsets = np.cumsum([0] + [len(value) for value in values[:-1]])
    suspects = Suspects.joined([part.suspects.shifted(int(lo)) for part, lo in zip(parts, offsets)])
    out = _tasks.finish_block(joined, scales, None, i, rows, col_start, col_stop, dtype)
    return certify(out, suspects, block, b[:, col_start:col_stop])


def panel_bounds(block_rows: int, columns: int, k: int, itemsize: int) -> list[int]:
    """Row bounds of the decode panels: about `DECODE_PANEL_BYTES` each, at least two."""
    total = k * block_rows * columns * itemsize
    count = min(block_rows, MAX_PANELS, max(2, -(-total // DECODE_PANEL_BYTES)))
    return np.linspace(0, block_rows, count + 1).round().astype(int).tolist()


def cluster_layer(
    layer: dict[Any, Any], plan: ProductPlan
) -> tuple[dict[Any, Any], dict[Any, str]]:
    """Add the work, result, decode and output tasks of a coded product to ``layer``.

    ``layer`` holds the encode tasks (``encoded``) and the ``polar-direct-<token>`` tasks.
    Returns ``layer`` and the planned placement (task -> worker) of all tasks: the encode's
    (``encoded.placement``) and, when it is known where the coded blocks will be, each work
    task and its result panels on the worker of its coded block, and the decode panels
    round-robin over the workers, each with its parts. Dask's scheduler would otherwise
    move tasks away from their data to workers that look less busy (it guesses 0.5 s for a
    task it has not timed), taking their inputs along. ``order[i]`` is the row block of the
    output that data block ``i`` is (`data_block_order`; the identity if None).
    """
    encoded, code, token, options = plan.encoded, plan.code, plan.token, plan.options
    block_rows, rhs_key, homes, order = plan.block_rows, plan.rhs_key, plan.homes, plan.order
    columns = int(sum(plan.col_chunks))
    coded_keys = encoded.coded_keys
    job = ClusterJob(
        token=token, code=code, coded=tuple(sorted(coded_keys)), sources=encoded.sources,
        block_rows=block_rows, columns=columns, dtype=plan.work, faults=plan.faults,
        panel_rows=options.panel_rows, timeout=options.timeout, retries=options.retries,
        unresponsive=unresponsive_seconds(),
    )
    scales = TaskRef(encoded.scales_key)
    bounds = panel_bounds(block_rows, columns, code.k, job.dtype.itemsize)
    panels = len(bounds) - 1
    started = TaskRef(job.start_key)
    placement = dict(encoded.placement)
    located: dict[Any, str | None] = dict(zip(encoded.data_keys, homes or ()))
    located.update(placement)
    workers = sorted({w for w in located.values() if w is not None}, key=str)
    for j in job.coded:
        key = (job.work_name, j)
        layer[key] = Task(
            key, work, job, started, scales, j, TaskRef(coded_keys[j]), TaskRef(rhs_key)
        )
        for p in range(panels):
            part = (job.result_name, j, p)
            layer[part] = Task(
                part, result_panel, job, started, j, TaskRef(key), bounds[p], bounds[p + 1]
            )
            if located.get(coded_keys[j]) is not None:
                placement[key] = placement[part] = located[coded_keys[j]]
    decode_name = f"polar-decode-{token}"
    for p in range(panels):
        parts = [TaskRef((job.result_name, j, p)) for j in job.coded]
        layer[(decode_name, p)] = Task(
            (decode_name, p), decode_panel, job, started, p, scales, *parts
        )
        if workers:
            placement[(decode_name, p)] = workers[p % len(workers)]
    col_bounds = plan.col_bounds
    part_name = f"polar-part-{token}"
    for i, rows in enumerate(plan.row_chunks):
        used_panels = [p for p in range(panels) if bounds[p] < rows]
        for c in range(len(plan.col_chunks)):
            parts = []
            for p in used_panels:
                key = (part_name, p, i, c)
                layer[key] = Task(
                    key, take_part, TaskRef((decode_name, p)), i, col_bounds[c], col_bounds[c + 1]
                )
                parts.append(TaskRef(key))
                if workers:
                    placement[key] = placement[(decode_name, p)]
            out = (plan.out_name, i if order is None else order[i], c)
            # with the data block and B, where the scheduler finds them: the entries the
            # decode may have lost digits in are computed from them
            layer[out] = Task(
                out, join_parts, scales, TaskRef((f"polar-direct-{token}", i)), i, rows,
                col_bounds[c], col_bounds[c + 1], plan.dtype, TaskRef(encoded.data_keys[i]),
                TaskRef(rhs_key), *parts,
            )
    outputs = [key for key in layer if isinstance(key, tuple) and key[0] == plan.out_name]
    layer[job.start_key] = Task(job.start_key, start, job, list(layer), outputs)
    return layer, placement


def unresponsive_seconds() -> float | None:
    """``polar.unresponsive`` in seconds (None: off)."""
    value = config.get("unresponsive")
    if value is None or value is False:
        return None
    seconds = parse_timedelta(value, default="s")
    if not seconds or seconds <= 0:
        raise ValueError(f"polar.unresponsive must be a positive duration or null, got {value!r}")
    return float(seconds)
