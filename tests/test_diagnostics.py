"""dask_polar.diagnostics: the job tracker, progress events and the progress bar."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import sys
import types

import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import CodedJobError, coded_matmul
from dask_polar.codes import PolarCode
from dask_polar.diagnostics import JobTracker, ProgressBar, TrackedJob, describe
from dask_polar.jobs import (
    EVENT_TOPIC,
    PROGRESS_TOPIC,
    JobCallback,
    JobRecord,
    TaskRecord,
    callback,
    progress_event,
)


def rand(shape, chunks, seed=0):
    return da.from_array(np.random.default_rng(seed).standard_normal(shape), chunks=chunks)


def make_record(token="abc", started=100.0, n=8, k=4, zero=(7,)):
    tasks = [TaskRecord(j, "zero" if j in zero else "pending", submitted=0.001) for j in range(n)]
    return JobRecord(
        token, f"<PolarCode n={n} k={k}>", n=n, k=k, backend="threads",
        info_set=[3, 5, 6, 7], started=started, tasks=tasks,
        straggler_delays=[0.1] * n,
    )


def start(tracker, record):
    return tracker.apply(PROGRESS_TOPIC, progress_event("on_start", record))


def result(tracker, record, index, status="done", finished=0.2, started=0.1):
    task = TaskRecord(index, status, submitted=0.001, started=started, finished=finished)
    return tracker.apply(PROGRESS_TOPIC, progress_event("on_result", record, task))


# ---------------------------------------------------------------- progress events


def test_progress_events_are_small_and_identify_the_run():
    record = make_record()
    begin = progress_event("on_start", record)
    assert begin["event"] == "start" and (begin["token"], begin["started"]) == ("abc", 100.0)
    assert begin["zero"] == [7] and len(begin["submitted"]) == 8 and "tasks" not in begin
    one = progress_event("on_result", record, TaskRecord(2, "done", finished=0.5))
    assert one["task"] == {
        "index": 2, "status": "done", "submitted": None, "started": None, "finished": 0.5,
        "attempts": 0, "worker": None, "error": None,
    }
    record.decodable_at, record.used, record.cancelled = 0.6, [0, 1, 2, 7], [3, 4]
    ready = progress_event("on_decodable", record)
    assert ready["used"] == [0, 1, 2, 7] and ready["cancelled"] == [3, 4]
    # the finished record travels whole on its own topic
    assert progress_event("on_finish", record) is None
    json.dumps([begin, one, ready])  # msgpack/JSON friendly: plain types only


# ---------------------------------------------------------------- tracker


def test_tracker_rebuilds_a_job_from_its_events():
    tracker, record = JobTracker(), make_record()
    job = start(tracker, record)
    assert (job.status, job.received, job.needed) == ("running", 1, 4)  # the zero block
    assert job.id == "abc@100.000000"
    for j in (0, 1):
        result(tracker, record, j)
    result(tracker, record, 2, status="failed", started=None)
    assert job.received == 3 and job.record.tasks[2].status == "failed"
    assert job.runtimes() == pytest.approx([0.1, 0.1])

    record.decodable_at, record.used, record.cancelled = 0.3, [0, 1, 4, 7], [3, 5, 6]
    result(tracker, record, 4)
    tracker.apply(PROGRESS_TOPIC, progress_event("on_decodable", record))
    assert (job.status, job.needed) == ("decodable", 4)
    assert [job.record.tasks[j].status for j in (3, 5, 6)] == ["cancelled"] * 3

    record.decoded_at = 0.31
    final = tracker.apply(EVENT_TOPIC, {**record.to_dict(), "extra": "ignored"})
    assert final is job and job.finished and job.status == "decoded"
    assert job.to_dict()["decode_seconds"] == pytest.approx(0.01)
    assert len(tracker) == 1


def test_tracker_ignores_duplicates_strangers_and_late_events():
    tracker, record = JobTracker(), make_record()
    start(tracker, record)
    assert start(tracker, record) is None  # reported by two sources
    result(tracker, record, 0)
    version = tracker.version
    result(tracker, record, 0)
    assert tracker.jobs()[0].received == 2 and tracker.version == version + 1
    assert result(tracker, make_record(token="other"), 0) is None  # its start was missed
    assert tracker.apply("some-other-topic", {"event": "start"}) is None
    assert tracker.apply(PROGRESS_TOPIC, {"event": "start"}) is None  # malformed
    assert tracker.apply(PROGRESS_TOPIC, {"token": "abc", "started": 100.0, "event": "?"}) is None
    record.decoded_at = 0.4
    tracker.apply(EVENT_TOPIC, record.to_dict())
    assert result(tracker, record, 5) is None  # after the final record: the record wins
    assert tracker.jobs()[0].record.tasks[5].status == "pending"


def test_tracker_keeps_runs_of_one_token_apart_and_forgets_the_oldest():
    tracker = JobTracker(max_jobs=2)
    for started in (1.0, 2.0, 3.0):  # equal inputs give equal tokens: three runs
        start(tracker, make_record(started=started))
    assert [job.record.started for job in tracker.jobs()] == [2.0, 3.0]
    assert tracker.get("abc@3.000000").record.started == 3.0
    assert tracker.get("abc@1.000000") is None


def test_tracker_json_has_the_page_data():
    tracker, record = JobTracker(), make_record()
    start(tracker, record)
    result(tracker, record, 1)
    data = json.loads(json.dumps(tracker.to_json()))
    (job,) = data["jobs"]
    assert data["version"] == tracker.version
    for key in ("id", "code", "n", "k", "info_set", "tasks", "used", "decodable_at",
                "decoded_at", "cancelled", "straggler_delays", "status", "received",
                "needed", "decode_seconds", "runtimes"):
        assert key in job
    assert job["status"] == "running" and job["received"] == 2


@pytest.mark.parametrize(
    "max_jobs, error, match",
    [
        (0, ValueError, "max_jobs must be >= 1, got 0"),
        (2.5, TypeError, "max_jobs must be an int, got float"),
        (True, TypeError, "max_jobs must be an int, got bool"),
    ],
)
def test_tracker_validates(max_jobs, error, match):
    with pytest.raises(error, match=match):
        JobTracker(max_jobs)


def test_describe_a_failed_job():
    record = make_record()
    record.tasks[0].status = "failed"
    assert describe(TrackedJob(record, finished=True)) == (
        "failed: 1 of 4 needed results, 1 tasks failed"
    )


# ---------------------------------------------------------------- progress bar, local


def test_progress_bar_follows_a_local_job():
    A, B = rand((64, 8), (8, 8)), rand((8, 3), (8, 3), seed=1)
    delays = np.full(16, 0.01)
    straggler = int(PolarCode(16, 8).info_set[0])  # a data block's own task
    delays[straggler] = 20.0  # a copy of its product stands in for it
    out = io.StringIO()
    with ProgressBar(out=out, client=False, width=10) as bar:
        coded_matmul(A, B, n=16, stragglers=delays).compute(scheduler="threads")
    (job,) = bar.tracker.jobs()
    record = dask_polar.last_job()
    assert job.status == "decoded" and job.record.token == record.token
    assert job.record.backups == 1 and job.record.used == record.used
    assert straggler in record.used and record.tasks[straggler].attempts == 2
    text = out.getvalue()
    assert text.startswith(f"\r{record.code} [")
    assert f"decoded from {len(record.used)} of 16 results" in text
    assert text.endswith(f"{len(record.cancelled)} cancelled\n")
    assert f"[{'#' * 10}]" in text


def _raise(message):
    raise RuntimeError(message)


class FailingExecutor(cf.ThreadPoolExecutor):
    """Every submission fails."""

    def submit(self, fn, *args, **kwargs):
        return super().submit(_raise, "injected")


def test_a_failed_job_finishes_for_observers():
    finished = []

    class Observer(JobCallback):
        def on_finish(self, record, **kwargs):
            finished.append(record)

    A, B = rand((32, 4), (8, 4)), rand((4, 4), (4, 4))
    out = io.StringIO()
    with FailingExecutor(max_workers=4) as executor, callback(Observer()), ProgressBar(
        out=out, client=False
    ) as bar, pytest.raises(CodedJobError):
        coded_matmul(A, B, code="mds", n=6, executor=executor, retries=0).compute()
    (record,) = finished
    assert record.decoded_at is None and sorted(record.failed) == list(range(6))
    assert dask_polar.jobs.recent_jobs()[-1] is record
    (job,) = bar.tracker.jobs()
    assert job.status == "failed"
    assert "failed: 0 of 4 needed results, 6 tasks failed" in out.getvalue()


def test_text_bar_throttles_redraws():
    record = make_record(n=64, k=32, zero=())
    out = io.StringIO()
    with ProgressBar(out=out, client=False, interval=60.0) as bar:
        # what the bar's own hooks do for a job driven here, one result at a time
        bar._show(start(bar.tracker, record))
        for j in range(20):
            bar._show(result(bar.tracker, record, j))
    # the first draw, then nothing until the last state drawn on exit
    assert out.getvalue().count("\r") == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, "width must be >= 1, got 0"),
        ({"width": "10"}, TypeError, "width must be an int, got str"),
    ],
)
def test_progress_bar_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        ProgressBar(**kwargs)


# ---------------------------------------------------------------- notebook bars


class _Widget:
    def __init__(self, *args, **kwargs):
        self.children = tuple(args[0]) if args else ()
        self.bar_style = ""
        for key, value in kwargs.items():
            setattr(self, key, value)


@pytest.fixture
def fake_ipywidgets(monkeypatch):
    """ipywidgets and IPython.display stand-ins: the bars' state, no Jupyter needed."""
    shown = []
    widgets = types.ModuleType("ipywidgets")
    widgets.IntProgress = widgets.HTML = widgets.HBox = widgets.VBox = _Widget
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    display.display = shown.append
    ipython.display = display
    monkeypatch.setitem(sys.modules, "ipywidgets", widgets)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shown


def test_notebook_bars(fake_ipywidgets):
    A, B = rand((64, 8), (8, 8)), rand((8, 3), (8, 3), seed=1)
    with ProgressBar(client=False, notebook=True):
        coded_matmul(A, B, n=16).compute(scheduler="sync")
    (box,) = fake_ipywidgets
    ((bar, label),) = [row.children for row in box.children]
    record = dask_polar.last_job()
    assert bar.max == len(record.used) and bar.value == bar.max
    assert bar.bar_style == "success"
    assert label.value.startswith(f"decoded from {len(record.used)} of 16 results")


def test_notebook_false_gives_text_even_with_ipywidgets(fake_ipywidgets):
    out = io.StringIO()
    with ProgressBar(out=out, client=False, notebook=False):
        coded_matmul(rand((32, 4), (8, 4)), np.ones((4, 2)), code="polar").compute(scheduler="sync")
    assert fake_ipywidgets == [] and "decoded from" in out.getvalue()


# ---------------------------------------------------------------- progress bar, distributed


def test_progress_bar_follows_a_job_on_worker_processes():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=20, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, distributed.Client(cluster) as client:
        A, B = rand((64, 8), (8, 8)), rand((8, 3), (8, 3), seed=1)
        delays = np.full(16, 0.2)
        delays[9] = 20.0  # a data block's product (a systematic code's parity waits for it)
        out = io.StringIO()
        # the job is driven in the worker process: only the scheduler's events reach the bar
        with ProgressBar(out=out) as bar:
            C = coded_matmul(A, B, n=16, stragglers=delays).compute()
            # no waiting: the scheduler forwards the driver's final record to the client
            # before the results that depend on the driving task, and the client handles
            # its messages in order
            assert bar.tracker.jobs()[-1].finished
        np.testing.assert_allclose(C, A.compute() @ B.compute(), atol=1e-10)
        assert client.get_events(PROGRESS_TOPIC)  # progress went through the scheduler
        (job,) = bar.tracker.jobs()
        assert job.status == "decoded" and job.record.backend == "distributed"
        assert job.record.backups == 1 and 9 in job.record.used  # a copy stood in for it
        assert "decoded from" in out.getvalue()
