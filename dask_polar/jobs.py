"""Job records: what every coded job did, for users, benchmarks, the demo and the dashboard.

Each coded job leaves a `JobRecord`. In the process that ran the job it goes to
`last_job()` / `jobs()` and to registered `JobCallback` objects; on a dask.distributed worker
it is also sent to the scheduler's event log (topic ``"dask_polar"``), from where
`last_job()` fetches it on the client.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TaskRecord", "JobRecord", "JobCallback", "last_job", "jobs", "callback"]

EVENT_TOPIC = "dask_polar"
_HISTORY: collections.deque[JobRecord] = collections.deque(maxlen=100)
_CALLBACKS: list[JobCallback] = []
_LOCK = threading.Lock()


@dataclass
class TaskRecord:
    """One coded task: times are seconds since the job started.

    ``status`` is one of ``"pending"``, ``"done"``, ``"failed"``, ``"cancelled"``, ``"zero"``
    (a coded block that is identically zero: its result is known without work).
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
        ``decodable_at``).
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
        """One line: code, results used, decodable moment, decode time, cancelled tasks."""
        return (
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
        """The job decoded its result (or failed)."""


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


def notify(hook: str, *args: Any) -> None:
    """Call ``hook`` on every registered callback."""
    with _LOCK:
        observers = list(_CALLBACKS)
    for observer in observers:
        getattr(observer, hook)(*args)


def remember(record: JobRecord) -> None:
    """Keep ``record`` for `last_job`; on a distributed worker, log it to the scheduler too."""
    with _LOCK:
        _HISTORY.append(record)
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(EVENT_TOPIC, record.to_dict())


def jobs() -> list[JobRecord]:
    """Records of the recent coded jobs run in this process, oldest first (up to 100)."""
    with _LOCK:
        return list(_HISTORY)


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
    candidates = jobs()[-1:]
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        events = client.get_events(EVENT_TOPIC)
        if events:
            candidates.append(JobRecord.from_dict(events[-1][1]))
    return max(candidates, key=lambda r: r.started) if candidates else None
