"""Job records: what every coded job did, for users, benchmarks, the demo and the dashboard.

Each coded job leaves a `JobRecord`. In the process that ran the job it goes to
`last_job()` / `recent_jobs()` and to registered `JobCallback` objects; on a dask.distributed worker
it is also sent to the scheduler's event log (topic ``"dask_polar"``), from where
`last_job()` fetches it on the client. While a job runs on a worker, small progress events
(`progress_event`: start, each result, the decodable moment) go to the topic
``"dask_polar-progress"``, for the dashboard page and progress bars
(`dask_polar.dashboard`, `dask_polar.diagnostics`).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "TaskRecord", "JobRecord", "JobCallback", "last_job", "recent_jobs", "find_job", "callback",
    "progress_event",
]

#: Scheduler event-log topic of finished jobs' records (one per job).
EVENT_TOPIC = "dask_polar"
#: Topic of running jobs' progress events; kept apart so `last_job` and other readers of
#: ``EVENT_TOPIC`` still see exactly one full record per job.
PROGRESS_TOPIC = "dask_polar-progress"
_HISTORY: collections.deque[JobRecord] = collections.deque(maxlen=100)
_CALLBACKS: list[JobCallback] = []
#: Functions every remembered record is passed to (the learned straggler statistics).
RECORD_SINKS: list[Any] = []
#: ``code="auto"``'s plans by job token, made in this process (`note_plan`).
_PLANS: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()


def note_plan(token: str, plan: dict[str, Any]) -> None:
    """Remember the plan of job ``token``: its record carries it (`JobRecord.plan`)."""
    with _LOCK:
        _PLANS[token] = plan
        while len(_PLANS) > 256:  # plans of products never computed
            _PLANS.popitem(last=False)


def attach_plan(record: JobRecord) -> JobRecord:
    """``record`` with the plan `note_plan` kept for its job, if it has none."""
    if record.plan is None:
        with _LOCK:
            record.plan = _PLANS.get(record.token)
    return record
_LOCK = threading.Lock()


@dataclass
class TaskRecord:
    """One coded task: times are seconds since the job started.

    ``status`` is one of ``"pending"``, ``"done"``, ``"failed"``, ``"cancelled"``, ``"zero"``
    (a coded block that is identically zero: its result is known without work) or
    ``"skipped"`` (a background task, such as a systematic code's parity, that the job
    never needed to launch).
    """

    index: int
    status: str = "pending"
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    worker: str | None = None
    error: str | None = None


@dataclass
class JobRecord:
    """What one coded job did.

    Attributes
    ----------
    token : str
        The job's name, as in its task keys (``polar-work-<token>``).
    code : str
        ``repr`` of the code; ``n``, ``k`` and ``info_set`` (polar) alongside.
    backend : str
        Where the coded tasks ran (``"threads"``, ``"distributed"``, an executor's name).
    tasks : list of TaskRecord
        Per coded task: submitted/started/finished times, status, attempts, errors.
    used : list of int
        The coded results in the decoder when it became decodable.
    decodable_at : float
        Seconds from the job's start to the decodable moment.
    decoded_at : float
        Seconds from the job's start to the finished decode (``decode_seconds`` after
        ``decodable_at``); None if the job failed.
    cancelled : list of int
        Tasks still outstanding at the decodable moment (cancelled).
    retries, backups : int
        Re-submissions of failed tasks; speculative backup copies launched.
    """

    token: str
    code: str
    n: int
    k: int
    backend: str
    info_set: list[int] | None = None
    started: float = 0.0  # wall-clock (time.time()) at the job's start
    tasks: list[TaskRecord] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    decodable_at: float | None = None
    decoded_at: float | None = None
    cancelled: list[int] = field(default_factory=list)
    retries: int = 0
    backups: int = 0
    straggler_delays: list[float] | None = None
    #: ``code="auto"``'s plan: the method chosen and every candidate's predicted latency
    #: (`dask_polar.simulate.planning.Plan.to_dict`); None for a code given by name.
    plan: dict[str, Any] | None = None

    @property
    def decode_seconds(self) -> float | None:
        """Time from the decodable moment to the decoded result."""
        if self.decodable_at is None or self.decoded_at is None:
            return None
        return self.decoded_at - self.decodable_at

    @property
    def failed(self) -> list[int]:
        """Indices of tasks whose last attempt failed."""
        return [t.index for t in self.tasks if t.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON/msgpack-friendly dict (used for the event log and the dashboard)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Inverse of `to_dict`; extra keys (the event log adds some) are ignored."""
        names = {f.name for f in fields(cls)}
        kept = {key: value for key, value in data.items() if key in names}
        kept["tasks"] = [TaskRecord(**t) for t in kept.get("tasks", [])]
        return cls(**kept)

    def summary(self) -> str:
        """One line: code, results used, decodable moment, decode time, cancelled tasks (or,
        for a job that did not decode, what became of its tasks)."""
        if self.decodable_at is None or self.decoded_at is None:
            counts = collections.Counter(task.status for task in self.tasks)
            states = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            return f"{self.code} on {self.backend}: not decoded ({states}), {self.retries} retries"
        chosen = ""
        if self.plan:
            predicted = self.plan["predicted"][self.plan["chosen"]]["median"]
            chosen = (f"auto chose {self.plan['chosen']} (predicted {predicted:.3f}s, "
                      f"took {self.decoded_at:.3f}s): ")
        if self.code == "plain":
            return chosen + f"plain on {self.backend}: {self.n} tasks in {self.decoded_at:.3f}s"
        return chosen + (
            f"{self.code} on {self.backend}: decodable after {len(self.used)} of {self.n} "
            f"results at {self.decodable_at:.3f}s, decoded in {1e3 * (self.decode_seconds or 0):.1f} ms, "
            f"{len(self.cancelled)} cancelled, {self.retries} retries"
        )


class JobCallback:
    """Base class for job observers; override any of the no-op hooks.

    Register with ``with dask_polar.jobs.callback(MyCallback()): ...``. Hooks run in the
    process that drives the job (the client process for local schedulers, a worker under
    dask.distributed), from the driver's thread: keep them quick.
    """

    def on_start(self, record: JobRecord, **kwargs: Any) -> None:
        """The coded tasks were submitted."""

    def on_result(self, record: JobRecord, task: TaskRecord, **kwargs: Any) -> None:
        """A coded task finished (done or failed)."""

    def on_decodable(self, record: JobRecord, **kwargs: Any) -> None:
        """The received results became decodable; outstanding tasks are being cancelled."""

    def on_finish(self, record: JobRecord, **kwargs: Any) -> None:
        """The job decoded its result, or failed (then ``record.decoded_at`` is None)."""


@contextlib.contextmanager
def callback(observer: JobCallback) -> Iterator[JobCallback]:
    """Register ``observer`` for the jobs run inside the ``with`` block."""
    if not isinstance(observer, JobCallback):
        raise TypeError(f"observer must be a JobCallback, got {type(observer).__name__}")
    with _LOCK:
        _CALLBACKS.append(observer)
    try:
        yield observer
    finally:
        with _LOCK:
            _CALLBACKS.remove(observer)


def progress_event(
    hook: str, record: JobRecord, task: TaskRecord | None = None
) -> dict[str, Any] | None:
    """The message that tells observers in other processes what ``hook`` saw.

    Small and msgpack-friendly: the job's header once, then one task per result, then the
    decodable moment. A finished job's full record travels separately (topic
    ``"dask_polar"``), so ``on_finish`` has no progress event.

    Parameters
    ----------
    hook : {"on_start", "on_result", "on_decodable", "on_finish"}
    record : JobRecord
    task : TaskRecord, optional
        The task that finished (``on_result`` only).

    Returns
    -------
    dict or None
        With keys ``event`` (``"start"``, ``"result"`` or ``"decodable"``), ``token`` and
        ``started`` (which identify the job run), and the event's data.

    Examples
    --------
    >>> record = JobRecord("abc", "<PolarCode n=4 k=2>", n=4, k=2, backend="threads")
    >>> progress_event("on_result", record, TaskRecord(3, "done", finished=0.5))["task"]["index"]
    3
    """
    head = {"token": record.token, "started": record.started}
    if hook == "on_start":
        return {
            "event": "start", **head, "code": record.code, "n": record.n, "k": record.k,
            "backend": record.backend, "info_set": record.info_set,
            "straggler_delays": record.straggler_delays,
            "submitted": [t.submitted for t in record.tasks],
            "zero": [t.index for t in record.tasks if t.status == "zero"],
        }
    if hook == "on_result" and task is not None:
        return {"event": "result", **head, "task": dict(vars(task))}  # asdict: 10x slower
    if hook == "on_decodable":
        return {
            "event": "decodable", **head, "decodable_at": record.decodable_at,
            "used": record.used, "cancelled": record.cancelled,
        }
    return None


def _current_worker() -> Any:
    """The dask.distributed worker running this code, or None."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def notify(hook: str, *args: Any) -> None:
    """Call ``hook`` on every registered callback; on a dask.distributed worker, also send
    its `progress_event` to the scheduler, for observers in other processes.

    The progress events cost one small message per coded result on the worker's batched
    stream to the scheduler (about 30 us on the driving thread; each coded task already
    costs several scheduler messages), and next to nothing outside dask.distributed.
    """
    with _LOCK:
        observers = list(_CALLBACKS)
    for observer in observers:
        getattr(observer, hook)(*args)
    worker = _current_worker()
    if worker is not None:
        message = progress_event(hook, *args)
        if message is not None:
            worker.log_event(PROGRESS_TOPIC, message)


def remember(record: JobRecord) -> None:
    """Keep ``record`` for `last_job`; on a distributed worker, log it to the scheduler too."""
    attach_plan(record)
    for sink in RECORD_SINKS:
        sink(record)
    with _LOCK:
        _HISTORY.append(record)
    worker = _current_worker()
    if worker is not None:
        worker.log_event(EVENT_TOPIC, record.to_dict())


def recent_jobs() -> list[JobRecord]:
    """Records of the recent coded jobs run in this process, oldest first (up to 100)."""
    with _LOCK:
        return list(_HISTORY)


def find_job(token_prefix: str) -> JobRecord | None:
    """The most recent record in this process whose token starts with ``token_prefix``."""
    with _LOCK:
        return next((r for r in reversed(_HISTORY) if r.token.startswith(token_prefix)), None)


def last_job(client: Any = None) -> JobRecord | None:
    """The record of the most recent coded job.

    Parameters
    ----------
    client : distributed.Client, optional
        Also look at the jobs run on this cluster's workers (default: the current client,
        if any). The most recent record, local or remote, wins.

    Returns
    -------
    JobRecord or None
    """
    candidates = recent_jobs()[-1:]
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        record = _cluster_record(client)
        if record is not None:
            candidates.append(record)
    return attach_plan(max(candidates, key=lambda r: r.started)) if candidates else None


#: Seconds `last_job` waits for the record of a cluster job that has started but not yet
#: recorded its end: a systematic job's outputs are its work tasks, and its record comes
#: from its rescue task a poll after the last of them.
RECORD_WAIT = 2.0


def _cluster_record(client: Any) -> JobRecord | None:
    """The newest record logged on ``client``'s scheduler, waiting up to `RECORD_WAIT` for
    that of the newest job started there."""
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        events = client.get_events(EVENT_TOPIC)
        record = JobRecord.from_dict(events[-1][1]) if events else None
        starts = [m for _, m in client.get_events(PROGRESS_TOPIC) if m.get("event") == "start"]
        newest_start = max(starts, key=lambda m: m["started"], default=None)
        newest = None if newest_start is None else newest_start["started"]
        if newest is None or (record is not None and (
            record.started >= newest
            # a plain product announces its first block to start here, not its earliest
            or (record.code == "plain" and record.token == newest_start["token"])
        )):
            return record
        if time.monotonic() >= deadline:
            return record
        time.sleep(0.02)
