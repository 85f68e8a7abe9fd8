"""The early-completion loop: submit n coded tasks, decode at the first decodable set.

By default results come back to this process and are decoded here. A backend may keep
them where they ran instead (``backend.remote_results(...)`` returns a `RemoteResults`, e.g.
the Lambda executor's results in S3): then tasks return small receipts, decodability is
followed from the receipts alone, and the backend decodes remotely. The loop is the same.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..codes import ErasureCode
from ..codes.certify import CertifiedDecoder
from ..exceptions import CodedJobError, CodedJobTimeout
from ..jobs import JobRecord, TaskRecord, notify, remember
from .policy import backup_candidates

__all__ = ["WorkOutcome", "CANCELLED", "RemoteResults", "describe_error", "run_early_completion"]

logger = logging.getLogger("dask_polar")


@dataclass
class WorkOutcome:
    """What a work task returns: its value (None if it stopped early or failed) and when
    it ran. A task that runs its own retries (the cluster layout's) reports its last
    failure in ``error`` instead of raising, so that the decode can do without it."""

    value: Any
    started: float
    finished: float
    worker: str | None = None
    cancelled: bool = False
    attempts: int = 1
    error: BaseException | None = None
    #: What else the task learnt that the decode may need (a parity task: the magnitude
    #: statistics of the data blocks it read), or None.
    side: Any = None

    @property
    def status(self) -> str:
        """``"failed"``, ``"cancelled"`` or ``"done"``, as in `TaskRecord.status`."""
        return "failed" if self.error is not None else "cancelled" if self.cancelled else "done"

    @property
    def error_text(self) -> str | None:
        """``error`` as `TaskRecord.error` holds it (None if the task did not fail)."""
        return None if self.error is None else describe_error(self.error)


def describe_error(error: BaseException) -> str:
    """A failed task's error as job records and `CodedJobError` show it."""
    return f"{type(error).__name__}: {error}"


CANCELLED = "cancelled"

class RemoteResults(Protocol):
    """One job's results kept where they ran, and decoded there (optional backend feature).

    ``backend.remote_results(code, flag, result_shape, dtype)`` returns one (or None: the
    default, values come back to the driver). The driver calls `close` when the job ends,
    decoded or failed.
    """

    #: The type of a kept result's receipt; it has ``shape`` and ``dtype`` attributes, which
    #: the driver checks like a value's (a mismatch is an erasure).
    receipt_type: type

    def task(self, fn: Callable[..., WorkOutcome], args: tuple, key: Any) -> tuple:
        """``(fn, args)`` of a work task whose `WorkOutcome` carries a receipt, not a value."""

    def decode(
        self, code: ErasureCode, results: Mapping[int, Any], inner: int | None = None
    ) -> Any:
        """The ``(k, *result_shape)`` decoded results from a decodable set of receipts (and
        arrays, for results known without work); with ``inner`` (the product's inner
        dimension), certified: a `dask_polar.codes.certify.Decoded`."""

    def close(self) -> None:
        """The job ended: its kept results may be deleted."""


#: A task factory: ``make_task(index, attempt, flag) -> (fn, args)``; ``fn(*args)`` returns a
#: `WorkOutcome`. Tasks are named ``(f"polar-work-{token}", index, attempt)``.
TaskFactory = Callable[[int, int, Any], tuple[Callable[..., WorkOutcome], tuple]]


def run_early_completion(
    code: ErasureCode,
    backend: Any,
    make_task: TaskFactory,
    *,
    record: JobRecord,
    result_shape: tuple[int, ...],
    dtype: np.dtype,
    known: Mapping[int, np.ndarray] | None = None,
    retries: int = 2,
    backup: float | None = None,
    timeout: float | None = None,
    background: Sequence[int] = (),
    decoder: Any = None,
    inner: int | None = None,
) -> Any:
    """Run the coded tasks and decode from the first decodable set of results.

    Parameters
    ----------
    code : ErasureCode
    backend : backend adapter (see `dask_polar.executors`)
    make_task : callable ``(index, attempt, flag) -> (fn, args)``
    record : JobRecord
        Filled in as the job runs (task times, used results, decodable moment, cancelled).
    result_shape : tuple of int
        The shape of every task's result.
    dtype : numpy.dtype
        The dtype of every task's result. A result of another shape or dtype (or no
        `WorkOutcome` at all) is an erasure, like a failed task: it is never decoded.
    known : mapping of int -> array, optional
        Results known without running a task (identically zero coded blocks), of
        ``result_shape`` and ``dtype``.
    retries : int
        How often a failed task is re-submitted. Failed tasks are re-submitted as soon as
        the results cannot become decodable without them: when the received and the
        still-pending indices together are not decodable (a value-free check), so a task
        that hangs does not hold up the retries.
    backup : float, optional
        Speculative backup copies: a task running longer than ``backup`` times the median
        finished task (once half have finished) gets one copy; the first to finish wins
        (see `dask_polar.executors.policy.backup_candidates`).
    timeout : float, optional
        Seconds from the job's start to collect a decodable set; then every pending task is
        cancelled and `CodedJobTimeout` raised. None: wait as long as it takes.
    background : sequence of int
        Tasks needed only when others are late or fail (a systematic code's parity), in
        the order to launch them (cheapest first): they are submitted after the others
        and at low priority (``backend.submit(..., background=True)``). A backend that
        measures its spare cores (``idle_cores()`` and ``cores``, the thread pool) gets
        them only into the gaps: once its cores sit idle (`GAP_CORES` over `GAP_WINDOWS`
        measuring windows), the fewest that decode with the results received (cheapest
        first, among those that involve a block still undetermined); as many as make the job
        decodable again when a task fails; and all once nothing else is pending. So they
        cost nothing when no task straggles, and little when a few do.
    decoder : optional
        What collects the results and decodes them, with `IncrementalDecoder`'s interface
        (``decodable``, ``received``, ``mask``, ``add``, ``update``, ``result``) and an
        optional ``side(index, info)`` for a `WorkOutcome`'s ``side``; default
        ``code.decoder()``.
    inner : int, optional
        The product's inner dimension: with it (and no ``decoder``), the decode is
        certified (`dask_polar.codes.certify`) and returns a ``Decoded``: the values and
        the entries they may have lost digits in.

    Returns
    -------
    numpy.ndarray of shape ``(k, *result_shape)``
        Or ``decoder.result()``, or a ``Decoded`` with ``inner``.

    Raises
    ------
    CodedJobError
        If the results stay undecodable after the retries; names the failed tasks.
    CodedJobTimeout
        If ``timeout`` passed first; names the pending and failed tasks.
    ValueError
        If a ``known`` result does not have ``result_shape`` and ``dtype``.
    """
    result_shape, dtype = tuple(result_shape), np.dtype(dtype)
    for j, value in (known or {}).items():
        problem = _malformed(WorkOutcome(value, 0.0, 0.0), result_shape, dtype)
        if problem is not None:
            raise ValueError(f"known result of task {j}: {problem}")
    running = getattr(backend, "running", None)  # a backend's context for one job
    with contextlib.ExitStack() as job_scope:
        if running is not None:
            job_scope.enter_context(running())
        t0 = time.time()
        deadline = None if timeout is None else time.monotonic() + timeout
        record.started = t0
        tasks = {j: TaskRecord(j) for j in range(code.n)}
        record.tasks = list(tasks.values())
        flag = backend.cancel_flag()
        wait_job = getattr(backend, "wait_job", None)  # e.g. Lambda's wait_for_cleanup
        if wait_job is not None:  # registered first, so it runs last: after the decode
            job_scope.callback(wait_job, flag)
        remote_results = getattr(backend, "remote_results", None)
        remote = None if remote_results is None else remote_results(code, flag, result_shape, dtype)
        if remote is None:
            if decoder is None:
                decoder = code.decoder() if inner is None else CertifiedDecoder(code, inner)
            kind: type = np.ndarray
        else:  # results stay where they ran until decoded there: release them at the end
            job_scope.callback(remote.close)
            decoder, kind = _KeptResults(code, remote, inner), remote.receipt_type
        for j, value in (known or {}).items():
            decoder.add(j, value)
            tasks[j].status = "zero"
        pending: dict[cf.Future, int] = {}  # a task may have two copies (backup)
        in_background = frozenset(int(j) for j in background)
        errors: dict[int, str] = {}
        causes: dict[int, BaseException] = {}  # the latest exception of each failed task
        first_submitted: dict[int, float] = {}
        durations: list[float] = []
        backed_up: set[int] = set()
        copied: dict[int, float] = {}  # late task -> when its copy was launched

        def launch(j: int) -> None:
            task = tasks[j]
            fn, args = make_task(j, task.attempts, flag)
            key = (f"polar-work-{record.token}", j, task.attempts)
            if remote is not None:
                fn, args = remote.task(fn, args, key)
            task.attempts += 1
            task.status = "pending"
            task.submitted = time.time() - t0
            first_submitted.setdefault(j, task.submitted)
            # only low-priority tasks name it: a backend without priorities need not know
            extra = {"background": True} if j in in_background else {}
            pending[backend.submit(fn, *args, key=key, **extra)] = j

        def copy(j: int, why: str) -> None:
            """Launch a second copy of task ``j`` (the first to finish wins)."""
            logger.debug("job %s: %s copy of task %d", record.token, why, j)
            backed_up.add(j)
            record.backups += 1
            launch(j)

        def release(count: int) -> None:
            """Launch the next ``count`` deferred (background) tasks, at low priority."""
            launching, deferred[:] = deferred[:count], deferred[count:]
            if launching:
                logger.debug("job %s: launching background tasks %s", record.token, launching)
            for j in launching:
                launch(j)

        def release_needed() -> None:
            """Launch, into idle cores, what the results received and the pending tasks not
            yet late need to decode. A late task gets a copy, once: one product, where a
            deferred (parity) task that could stand in for it would encode its block with
            others. Then, for a copy late too, the deferred tasks that involve a data block
            the rest leaves undetermined, the cheapest first, until they decode (or none is
            left). Late: running for `LATE_FACTOR` x the median task so far (`MIN_LATE` at
            least; `UNTIMED_LATE` before any task has finished)."""
            chosen = np.array(decoder.mask, dtype=bool)
            now = time.time() - t0
            late = late_seconds(float(np.median(durations)) if durations else None)
            for j in set(pending.values()):
                if j in copied:
                    chosen[j] = now - copied[j] <= STAND_IN_LATE_FACTOR * late
                elif now - first_submitted[j] <= late:
                    chosen[j] = True
                elif j not in in_background and j not in backed_up:
                    copied[j] = now
                    copy(j, "late")
                    chosen[j] = True
            picks = useful_background(code, chosen, deferred, generator)
            if picks:
                logger.debug("job %s: launching background tasks %s", record.token, picks)
            for j in picks:
                deferred.remove(j)
                launch(j)

        def stalled() -> bool:
            """Whether no result has arrived for `STALL` (at least; else 10x the median
            task so far): the pending tasks are stuck, whatever the cores do."""
            if not durations:  # nothing to compare with: the gaps decide
                return False
            quiet = max(10 * float(np.median(durations)), STALL)
            last = max((t.finished for t in tasks.values() if t.status == "done"), default=0.0)
            return time.time() - t0 - last >= quiet

        def cover() -> None:
            """Launch the fewest deferred tasks with which the received and pending ones can
            decode again (a task failed): cheapest first among those that involve a block
            the others leave undetermined, then the rest in order if those cannot."""
            reachable = decoder.mask
            reachable[list(set(pending.values()))] = True
            for j in useful_background(code, reachable, deferred, generator):
                deferred.remove(j)
                launch(j)
            while deferred and not reachable_decodable(with_deferred=False):
                release(1)

        def retry() -> bool:
            """Re-submit the failed tasks that have retries left; False if there are none."""
            again = [j for j in errors if tasks[j].attempts <= retries]
            if again:
                logger.info("job %s: retrying failed tasks %s", record.token, again)
                record.retries += len(again)
                for j in again:
                    del errors[j]
                    launch(j)
            return bool(again)

        def reachable_decodable(with_deferred: bool = True) -> bool:
            """Whether the received and still-pending (and deferred) results can decode."""
            reachable = decoder.mask
            reachable[list(set(pending.values()))] = True
            if with_deferred:
                reachable[deferred] = True
            return code.decodable(reachable)

        deferred = [int(j) for j in background if tasks[int(j)].status != "zero"]
        generator = code.generator if deferred else None
        for j in code.launch_order():
            if int(j) not in in_background and tasks[j].status != "zero":
                launch(int(j))
        idle_cores = getattr(backend, "idle_cores", None)
        gaps = None if idle_cores is None else _Gaps(idle_cores, backend.cores)
        if gaps is None:  # no gaps to measure: the background goes now, after the rest
            release(len(deferred))
        notify("on_start", record)
        failed = False
        try:
            while not decoder.decodable:
                if not pending and deferred:  # nothing else can help
                    release(len(deferred))
                if not pending and not retry():
                    raise CodedJobError(
                        record.token, errors, decoder.received, code.k
                    ) from _first_cause(causes)
                tick = None if backup is None and not deferred else 0.01
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:  # the finally clause cancels what is still pending
                        raise CodedJobTimeout(
                            record.token, timeout, set(pending.values()), errors,
                            decoder.received, code.k,
                        ) from _first_cause(causes)
                    tick = left if tick is None else min(tick, left)
                done, _ = cf.wait(pending, timeout=tick, return_when=cf.FIRST_COMPLETED)
                arrived: dict[int, np.ndarray] = {}
                lost = False  # a task failed in this burst
                for future in done:
                    j = pending.pop(future)
                    task = tasks[j]
                    if task.status == "done":  # the other copy of a backed-up task won
                        continue
                    task.finished = time.time() - t0
                    try:
                        outcome = future.result()
                    except Exception as exc:  # a failed task is an erasure
                        error = describe_error(exc)
                        causes[j] = exc
                    else:  # so is a malformed result: decoding it would blame the others
                        error = _malformed(outcome, result_shape, dtype, kind)
                        if error is not None:
                            logger.warning("job %s: task %d: %s", record.token, j, error)
                    if error is not None:
                        if j in pending.values():  # its other copy may still succeed
                            continue
                        task.status = "failed"
                        task.error = error
                        errors[j] = task.error
                        logger.debug("job %s: task %d failed: %s", record.token, j, task.error)
                        notify("on_result", record, task)
                        lost = True
                        continue
                    task.started = outcome.started - t0
                    task.worker = outcome.worker
                    if outcome.cancelled:  # stopped by an earlier job-wide cancel; cannot happen
                        task.status = "cancelled"  # before the decodable moment, kept for safety
                        continue
                    task.status = "done"
                    durations.append(task.finished - first_submitted[j])
                    notify("on_result", record, task)
                    arrived[j] = outcome.value
                    if outcome.side is not None and hasattr(decoder, "side"):
                        decoder.side(j, outcome.side)
                # one decodability check per burst of arrivals (the full-rank check costs ms)
                if arrived and decoder.update(arrived):
                    record.decodable_at = time.time() - t0
                # re-run failed tasks once the rest cannot decode without them, not once every
                # task has ended: a hung task would hold the retries forever. Only a failure
                # shrinks the reachable set, so only then is the check (a few ms) worth it.
                # idle cores mean that the foreground is stuck (blocked, paused, or slow on
                # a core of its own while the others are done): the background fills them
                if deferred and not decoder.decodable:
                    if lost:
                        cover()
                    # a machine busy with other work has no gaps: once no result has
                    # come for a while, the parity goes anyway (only if the rest is late)
                    if (gaps is not None and gaps() > 0) or stalled():
                        release_needed()
                if lost and not decoder.decodable and not reachable_decodable():
                    retry()
                if backup is not None and not decoder.decodable:
                    now = time.time() - t0
                    running = {j: first_submitted[j] for j in set(pending.values())}
                    for j in backup_candidates(
                        now, running, durations, total=len(first_submitted), factor=backup,
                        backed_up=backed_up,
                    ):
                        copy(j, "backup")
        except BaseException:
            failed = True
            raise
        finally:
            flag.set()
            backend.cancel(list(pending))
            # a backed-up task whose other copy won is done, not cancelled
            record.cancelled = sorted({j for j in pending.values() if tasks[j].status != "done"})
            for j in record.cancelled:
                tasks[j].status = "cancelled"
            for j in deferred:
                tasks[j].status = "skipped"
            if failed:  # a failed job ends too (decoded_at None): observers must not wait on it
                remember(record)
                notify("on_finish", record)
        record.used = np.flatnonzero(decoder.mask).tolist()
        notify("on_decodable", record)
        logger.debug(
            "job %s: decodable with %d results, cancelling %s", record.token, len(record.used),
            record.cancelled,
        )
        result = decoder.result()
        record.decoded_at = time.time() - t0
        remember(record)
        notify("on_finish", record)
        return result


#: A task running this many times the median task so far counts as stuck when idle cores
#: (or a stall) call for background tasks: on idle cores a pending task is not computing,
#: so a little over the typical time is enough; less, and tasks just starting look stuck.
LATE_FACTOR = 1.5
#: Seconds a task may run before `run_early_completion` counts it as stuck (at least).
MIN_LATE = 0.05
#: What stands in for a late or failed task (its copy; a parity task) counts as late too
#: after this many times a task's late time: it may fetch its blocks first.
STAND_IN_LATE_FACTOR = 3.0
#: Seconds a task may run before it counts as stuck while no task has finished yet.
UNTIMED_LATE = 1.0
#: Seconds without a result after which `run_early_completion` launches the parity a job
#: needs even where its cores are not idle (at least; else 10x the median task so far).
STALL = 0.25
#: Idle cores that show a gap for background tasks: foreground tasks are blocked (in I/O,
#: in a C call, in an injected delay, on a paused worker) or done while others are not.
GAP_CORES = 0.75
#: Consecutive measuring windows (20 ms each on the thread pool) that must show the gap:
#: tasks that are still starting up look idle for a moment.
GAP_WINDOWS = 2


def late_seconds(typical: float | None) -> float:
    """How long a pending task may run before it counts as late: `LATE_FACTOR` x the
    ``typical`` task (`MIN_LATE` at least), or `UNTIMED_LATE` when no task has finished."""
    return UNTIMED_LATE if typical is None else max(LATE_FACTOR * typical, MIN_LATE)


def useful_background(
    code: ErasureCode, chosen: np.ndarray, deferred: Sequence[int], generator: np.ndarray
) -> list[int]:
    """The fewest ``deferred`` tasks (taken in their order: cheapest first) that make the
    results ``chosen`` (a mask of those received or on their way) decodable, each one
    involving a data block the others leave undetermined; fewer if the rest cannot help."""
    chosen = np.array(chosen, dtype=bool)
    picks: list[int] = []
    while (missing := list(code.missing(chosen))) and len(picks) < len(deferred):
        useful = next((j for j in deferred if not chosen[j] and generator[j, missing].any()), None)
        if useful is None:
            break
        picks.append(useful)
        chosen[useful] = True
    return picks


class _Gaps:
    """Whether a backend's cores have room for background tasks (``__call__``): the idle
    fraction of its cores, once `GAP_CORES` have been idle over `GAP_WINDOWS` consecutive
    measuring windows (``backend.idle_cores()``, None while a window lasts); else 0. Cores
    idle because every task waits (on I/O, a remote worker, an injected delay) release it
    all: background work there costs nothing."""

    def __init__(self, idle_cores: Callable[[], float | None], cores: int) -> None:
        self._idle_cores = idle_cores
        self._cores = cores
        self._streak = 0
        idle_cores()  # the first window starts now

    def __call__(self) -> float:
        idle = self._idle_cores()
        if idle is None:
            return 0.0
        self._streak = self._streak + 1 if idle >= GAP_CORES else 0
        return min(1.0, idle / self._cores) if self._streak >= GAP_WINDOWS else 0.0


def _first_cause(causes: Mapping[int, BaseException]) -> BaseException | None:
    """The exception a job's error chains: the lowest failed task's (None if none raised)."""
    return causes[min(causes)] if causes else None


class _KeptResults:
    """The decoder of a job whose results stay remote: `IncrementalDecoder`'s interface,
    decodability from the receipts alone (`DecodabilityTracker`), decoding by ``remote``."""

    def __init__(self, code: ErasureCode, remote: RemoteResults, inner: int | None = None) -> None:
        self._tracker = code.tracker()
        self._remote = remote
        self._inner = inner  # certified decoding (`RemoteResults.decode`)
        self._results: dict[int, Any] = {}

    decodable = property(lambda self: self._tracker.decodable)
    received = property(lambda self: self._tracker.received)
    mask = property(lambda self: self._tracker.mask)

    def add(self, index: int, value: Any) -> bool:
        return self.update({index: value})

    def update(self, results: Mapping[int, Any]) -> bool:
        for index, value in results.items():
            self._results.setdefault(int(index), value)
        return self._tracker.update(results)

    def result(self) -> Any:
        used = self._tracker.used
        if used is None:
            raise self._tracker.not_decodable()
        code = self._tracker.code
        results = {j: self._results[j] for j in np.flatnonzero(used)}
        if self._inner is None:
            return self._remote.decode(code, results)
        return self._remote.decode(code, results, inner=self._inner)


def _malformed(
    outcome: Any, shape: tuple[int, ...], dtype: np.dtype, kind: type = np.ndarray
) -> str | None:
    """Why a task's ``outcome`` is not a result of ``shape`` and ``dtype``; None if it is.

    ``kind`` is the type of a good value: an array, or a kept result's receipt. A stopped
    task (``cancelled``) carries no value and is not malformed.
    """
    if not isinstance(outcome, WorkOutcome):
        return f"malformed result: a {type(outcome).__name__}, expected a WorkOutcome"
    if outcome.cancelled:
        return None
    value = outcome.value
    if not isinstance(value, kind):
        what = "an array" if kind is np.ndarray else f"a {kind.__name__}"
        return (
            f"malformed result: a {type(value).__name__}, expected {what} of shape "
            f"{shape} and dtype {dtype}"
        )
    problems = []
    if value.shape != shape:
        problems.append(f"shape {value.shape}, expected {shape}")
    if value.dtype != dtype:
        problems.append(f"dtype {value.dtype}, expected {dtype}")
    return f"malformed result: {'; '.join(problems)}" if problems else None
