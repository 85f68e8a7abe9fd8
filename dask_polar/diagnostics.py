"""Watching coded jobs: a job tracker and a progress bar (results received vs needed).

Two sources tell how a coded job is going, and both feed the same `JobTracker`:

- in the process that drives the job (local schedulers: threads, a ``concurrent.futures``
  executor, Lambda), the `dask_polar.jobs.JobCallback` hooks;
- under dask.distributed, where jobs are driven on workers, the scheduler's event log: the
  progress events of topic ``"dask_polar-progress"`` (start, each result, the decodable
  moment; see `dask_polar.jobs.progress_event`) and the finished record of topic
  ``"dask_polar"``.

`ProgressBar` shows the tracked jobs in the terminal, or as ipywidgets bars in a Jupyter
notebook; the ``/polar`` dashboard page (`dask_polar.dashboard`) draws them on the scheduler.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from .jobs import (
    EVENT_TOPIC,
    PROGRESS_TOPIC,
    JobCallback,
    JobRecord,
    TaskRecord,
    attach_plan,
    callback,
    progress_event,
)

__all__ = ["JobTracker", "TrackedJob", "ProgressBar"]

logger = logging.getLogger("dask_polar")

#: The scheduler topics a tracker reads.
TOPICS = (PROGRESS_TOPIC, EVENT_TOPIC)


@dataclass
class TrackedJob:
    """A job as known from its progress so far.

    Attributes
    ----------
    record : JobRecord
        Filled in as events arrive; replaced by the job's own record once it finishes.
    finished : bool
        The job's final record arrived (decoded, or failed).
    updated : float
        Wall-clock time (``time.time()``) of the last change.
    """

    record: JobRecord
    finished: bool = False
    updated: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        """Identifies one run of a job: equal inputs give equal tokens, so add the start."""
        return f"{self.record.token}@{self.record.started:.6f}"

    @property
    def status(self) -> str:
        """``"running"``, ``"decodable"`` (decoding), ``"decoded"`` or ``"failed"``."""
        record = self.record
        if record.decoded_at is not None:
            return "decoded"
        if self.finished:
            return "failed"
        return "running" if record.decodable_at is None else "decodable"

    @property
    def received(self) -> int:
        """Results in hand: finished tasks and identically zero blocks (known without work)."""
        return sum(t.status in ("done", "zero") for t in self.record.tasks)

    @property
    def needed(self) -> int:
        """Results needed: ``k`` (no code decodes from fewer) until the job is decodable,
        then the number the decoder actually had."""
        return len(self.record.used) if self.record.decodable_at is not None else self.record.k

    def runtimes(self) -> list[float]:
        """Seconds each finished task ran, from its start on a worker to its result."""
        return [
            t.finished - t.started
            for t in self.record.tasks
            if t.status == "done" and t.started is not None and t.finished is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        """The record's fields plus ``id``, ``status``, ``received``, ``needed``,
        ``decode_seconds``, ``runtimes``, ``finished`` and ``updated`` (JSON-friendly)."""
        return {
            "id": self.id,
            **self.record.to_dict(),
            "status": self.status,
            "received": self.received,
            "needed": self.needed,
            "decode_seconds": self.record.decode_seconds,
            "runtimes": self.runtimes(),
            "finished": self.finished,
            "updated": self.updated,
        }


class JobTracker:
    """Coded jobs rebuilt from hook calls or from the scheduler's event log.

    Thread-safe; applying an event twice changes nothing, so one job may be reported by
    both sources (a ``processes=False`` LocalCluster drives jobs in the client's process).

    Parameters
    ----------
    max_jobs : int
        How many jobs to keep; the oldest are forgotten first.

    Attributes
    ----------
    version : int
        Incremented by every change, so that displays redraw only when something changed.

    Examples
    --------
    >>> tracker = JobTracker()
    >>> record = JobRecord("abc", "<PolarCode n=4 k=2>", n=4, k=2, backend="threads",
    ...                    tasks=[TaskRecord(j) for j in range(4)])
    >>> job = tracker.apply(PROGRESS_TOPIC, progress_event("on_start", record))
    >>> arrived = TaskRecord(3, "done", finished=0.1)
    >>> job = tracker.apply(PROGRESS_TOPIC, progress_event("on_result", record, arrived))
    >>> job.status, job.received, job.needed
    ('running', 1, 2)
    """

    def __init__(self, max_jobs: int = 100) -> None:
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int):
            raise TypeError(f"max_jobs must be an int, got {type(max_jobs).__name__}")
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        self.max_jobs = max_jobs
        self.version = 0
        self._jobs: collections.OrderedDict[tuple[str, float], TrackedJob] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def jobs(self) -> list[TrackedJob]:
        """The tracked jobs, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def get(self, job_id: str) -> TrackedJob | None:
        """The job with `TrackedJob.id` ``job_id``, or None."""
        with self._lock:
            return next((job for job in self._jobs.values() if job.id == job_id), None)

    def to_json(self) -> dict[str, Any]:
        """``{"jobs": [...], "version": int}``: every job's `TrackedJob.to_dict`, oldest first."""
        with self._lock:
            return {"jobs": [job.to_dict() for job in self._jobs.values()], "version": self.version}

    def apply(self, topic: str, message: Mapping[str, Any]) -> TrackedJob | None:
        """Apply one event-log message of ``topic``; returns the job it changed, if any.

        Messages of other topics, and malformed ones, are ignored (logged at debug level):
        an observer must never break the scheduler's event log.
        """
        try:
            with self._lock:
                if topic == EVENT_TOPIC:
                    job = self._apply_record(message)
                elif topic == PROGRESS_TOPIC:
                    job = self._apply_progress(message)
                else:
                    return None
                if job is not None:
                    job.updated = time.time()
                    self.version += 1
                return job
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            logger.debug("ignoring a malformed %s event: %r", topic, exc)
            return None

    def apply_hook(
        self, hook: str, record: JobRecord, task: TaskRecord | None = None
    ) -> TrackedJob | None:
        """Apply what a `JobCallback` hook saw, as the scheduler would have received it."""
        if hook == "on_finish":
            return self.apply(EVENT_TOPIC, record.to_dict())
        message = progress_event(hook, record, task)
        return None if message is None else self.apply(PROGRESS_TOPIC, message)

    # The private kernels below run under self._lock.

    def _apply_record(self, data: Mapping[str, Any]) -> TrackedJob:
        # the plan of a code="auto" job planned in this process (a LocalCluster's client)
        record = attach_plan(JobRecord.from_dict(dict(data)))
        key = (record.token, record.started)
        job = self._jobs.get(key)
        if job is None:
            job = self._add(key, record)
        job.record, job.finished = record, True
        return job

    def _apply_progress(self, message: Mapping[str, Any]) -> TrackedJob | None:
        key = (message["token"], message["started"])
        job = self._jobs.get(key)
        event = message["event"]
        if event == "start":
            if job is not None:  # the same start reported twice
                return None
            zero = set(message.get("zero", ()))
            submitted = message.get("submitted") or [None] * message["n"]
            tasks = [
                TaskRecord(j, "zero" if j in zero else "pending", submitted=submitted[j])
                for j in range(message["n"])
            ]
            record = JobRecord(
                token=message["token"], code=message["code"], n=message["n"], k=message["k"],
                backend=message["backend"], info_set=message.get("info_set"),
                started=message["started"], tasks=tasks,
                straggler_delays=message.get("straggler_delays"),
            )
            return self._add(key, record)
        if job is None or job.finished:  # missed its start (n unknown), or already final
            return None
        record = job.record
        if event == "result":
            task = TaskRecord(**message["task"])
            record.tasks[task.index] = task
        elif event == "decodable":
            record.decodable_at = message["decodable_at"]
            record.used = list(message["used"])
            record.cancelled = list(message["cancelled"])
            for j in record.cancelled:
                record.tasks[j].status = "cancelled"
        else:
            return None
        return job

    def _add(self, key: tuple[str, float], record: JobRecord) -> TrackedJob:
        job = self._jobs[key] = TrackedJob(record)
        while len(self._jobs) > self.max_jobs:
            self._jobs.popitem(last=False)
        return job


class _Forwarder(JobCallback):
    """Hands the hooks of jobs driven in this process to a tracker, then to a listener."""

    def __init__(self, tracker: JobTracker, listener: Callable[[TrackedJob | None], None]):
        self.tracker = tracker
        self.listener = listener

    def _forward(self, hook: str, record: JobRecord, task: TaskRecord | None = None) -> None:
        self.listener(self.tracker.apply_hook(hook, record, task))

    def on_start(self, record: JobRecord, **kwargs: Any) -> None:
        self._forward("on_start", record)

    def on_result(self, record: JobRecord, task: TaskRecord, **kwargs: Any) -> None:
        self._forward("on_result", record, task)

    def on_decodable(self, record: JobRecord, **kwargs: Any) -> None:
        self._forward("on_decodable", record)

    def on_finish(self, record: JobRecord, **kwargs: Any) -> None:
        self._forward("on_finish", record)


def describe(job: TrackedJob) -> str:
    """One line on a job's progress, e.g. ``5/8 results needed (n=16)``.

    Examples
    --------
    >>> tasks = [TaskRecord(0, "done"), TaskRecord(1, "done"), TaskRecord(2), TaskRecord(3)]
    >>> record = JobRecord("abc", "<PolarCode n=4 k=2>", n=4, k=2, backend="threads",
    ...                    tasks=tasks, used=[0, 1], decodable_at=0.5, decoded_at=0.502,
    ...                    cancelled=[2, 3])
    >>> describe(TrackedJob(record, finished=True))
    'decoded from 2 of 4 results at 0.500 s, decode 2.0 ms, 2 cancelled'
    """
    record, status = job.record, job.status
    if status == "running":
        return f"{job.received}/{record.k} results needed (n={record.n})"
    if status == "failed":
        failed = sum(t.status == "failed" for t in record.tasks)
        return f"failed: {job.received} of {record.k} needed results, {failed} tasks failed"
    text = f"decodable from {len(record.used)} of {record.n} results at {record.decodable_at:.3f} s"
    if status == "decoded":
        text = text.replace("decodable", "decoded", 1)
        text += f", decode {1e3 * (record.decode_seconds or 0.0):.1f} ms"
    return text + f", {len(record.cancelled)} cancelled"


class _TextView:
    """Redraws one terminal line per job with carriage returns; a new job starts a line."""

    def __init__(self, out: TextIO, width: int, interval: float) -> None:
        self.out, self.width, self.interval = out, width, interval
        self._current: str | None = None  # the job on the open line
        self._drawn: dict[str, float] = {}  # job id -> when its line was last drawn
        self._finished: set[str] = set()

    def show(self, job: TrackedJob, force: bool = False) -> None:
        if job.id in self._finished:
            return
        now = time.monotonic()
        final = job.finished
        recent = now - self._drawn.get(job.id, -1e9) < self.interval
        if recent and not (force or final or job.status != "running"):
            return  # throttle: a 1024-task job must not redraw 1024 times
        if self._current is not None and self._current != job.id:
            self.out.write("\n")
        record = job.record
        filled = min(job.received, job.needed) * self.width // max(job.needed, 1)
        bar = "#" * filled + " " * (self.width - filled)
        self.out.write(f"\r{record.code} [{bar}] {describe(job)}")
        if final:
            self.out.write("\n")
            self._current = None
            self._finished.add(job.id)
            self._drawn.pop(job.id, None)
        else:
            self._current = job.id
            self._drawn[job.id] = now
        self.out.flush()

    def close(self) -> None:
        if self._current is not None:
            self.out.write("\n")
            self.out.flush()
            self._current = None


class _WidgetView:
    """One ipywidgets bar per job in a notebook cell."""

    def __init__(self, widgets: Any, display: Callable[[Any], Any]) -> None:
        self.widgets = widgets
        self.box = widgets.VBox([])
        self._bars: dict[str, tuple[Any, Any]] = {}
        display(self.box)

    def show(self, job: TrackedJob, force: bool = False) -> None:
        if job.id not in self._bars:
            bar = self.widgets.IntProgress(
                value=0, min=0, max=job.record.k, description=job.record.code[:24]
            )
            label = self.widgets.HTML(value="")
            self._bars[job.id] = (bar, label)
            self.box.children = (*self.box.children, self.widgets.HBox([bar, label]))
        bar, label = self._bars[job.id]
        bar.max = max(job.needed, 1)
        bar.value = min(job.received, job.needed)
        bar.bar_style = {"decoded": "success", "failed": "danger"}.get(job.status, "")
        label.value = describe(job)

    def close(self) -> None:
        """The bars stay in the notebook."""


def _in_notebook() -> bool:
    try:
        from distributed.utils import is_kernel
    except ImportError:
        return False
    return bool(is_kernel())


class ProgressBar:
    """Progress of coded jobs: results received against results needed.

    Use as a context manager around computations with coded products. Jobs driven in this
    process (local schedulers) report through `dask_polar.jobs.JobCallback` hooks; jobs
    driven on a dask.distributed cluster report through the scheduler's event log, to
    which the bar subscribes on ``client``.

    Parameters
    ----------
    out : text stream, optional
        Where the text bar goes (default ``sys.stdout``).
    width : int
        Characters of the text bar.
    interval : float
        Minimum seconds between redraws of a running job's text line.
    client : distributed.Client or False, optional
        Follow the jobs on this cluster (default: the current client, if any); ``False``
        follows only the jobs driven in this process.
    notebook : bool, optional
        ipywidgets bars instead of text. Default: inside a Jupyter kernel when ipywidgets
        is installed; text otherwise.

    Attributes
    ----------
    tracker : JobTracker
        The jobs seen while the bar was active.

    Notes
    -----
    Until a job is decodable the number of results it needs is only known to be at least
    ``k`` (a polar code's successive-cancellation decoder typically needs 1.1-1.2 k), so the
    bar counts towards ``k`` and the line then tells how many results were used.

    The bar subscribes to the topics ``"dask_polar-progress"`` and ``"dask_polar"`` on the
    client, replacing any other handler of those topics there until it exits.

    Examples
    --------
    >>> import io, numpy as np, dask.array as da
    >>> from dask_polar import coded_matmul
    >>> A = da.ones((64, 8), chunks=(8, 8))
    >>> out = io.StringIO()
    >>> with ProgressBar(out=out, client=False):
    ...     _ = coded_matmul(A, np.ones((8, 2)), code="polar").compute(scheduler="sync")
    >>> "decoded from" in out.getvalue()
    True
    """

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        width: int = 30,
        interval: float = 0.1,
        client: Any = None,
        notebook: bool | None = None,
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int):
            raise TypeError(f"width must be an int, got {type(width).__name__}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.out = out
        self.width = width
        self.interval = float(interval)
        self.client = client
        self.notebook = notebook
        self.tracker = JobTracker()
        self._view: _TextView | _WidgetView | None = None
        self._stack: contextlib.ExitStack | None = None
        self._subscribed: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressBar:
        self._view = self._make_view()
        stack = contextlib.ExitStack()
        stack.enter_context(callback(_Forwarder(self.tracker, self._show)))
        client = self._resolve_client()
        if client is not None:
            for topic in TOPICS:
                client.subscribe_topic(topic, self._handler(topic))
            self._subscribed = client
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._subscribed is not None:
            for topic in TOPICS:
                self._subscribed.unsubscribe_topic(topic)
            self._subscribed = None
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        with self._lock:
            if self._view is not None:
                for job in self.tracker.jobs():  # last state of every job, once
                    self._view.show(job, force=True)
                self._view.close()

    def _make_view(self) -> _TextView | _WidgetView:
        notebook = self.notebook
        widgets = None
        if notebook is None or notebook:
            try:
                import ipywidgets as widgets
                from IPython.display import display
            except ImportError:
                if notebook:
                    logger.info("ipywidgets is not installed: showing a text progress bar")
                widgets = None
            if widgets is not None and (notebook or _in_notebook()):
                return _WidgetView(widgets, display)
        return _TextView(self.out or sys.stdout, self.width, self.interval)

    def _resolve_client(self) -> Any:
        if self.client is False:  # explicitly local only
            return None
        if self.client is not None:
            return self.client
        try:
            from distributed import default_client

            return default_client()
        except (ImportError, ValueError):
            return None

    def _handler(self, topic: str) -> Callable[[tuple[float, Any]], None]:
        def handle(event: tuple[float, Any]) -> None:
            self._show(self.tracker.apply(topic, event[1]))

        return handle

    def _show(self, job: TrackedJob | None) -> None:
        if job is None:
            return
        # hooks arrive from driver threads and the client's event loop at once
        with self._lock:
            if self._view is not None:
                self._view.show(job)
