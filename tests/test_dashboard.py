"""The /polar dashboard page and /polar/jobs.json on a real LocalCluster, and in Chromium."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import itertools
import json
import os
import pickle
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import dask
import dask.array as da
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import dask_polar  # noqa: E402
from dask_polar import coded_matmul  # noqa: E402
from dask_polar.codes import PolarCode  # noqa: E402
from dask_polar.dashboard import PolarDashboard  # noqa: E402
from dask_polar.diagnostics import JobTracker  # noqa: E402
from dask_polar.jobs import PROGRESS_TOPIC, JobRecord, TaskRecord, progress_event  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
#: The page needs bokeh (the ``dashboard`` extra); the JSON route does not.
needs_bokeh = pytest.mark.skipif(
    importlib.util.find_spec("bokeh") is None, reason="needs bokeh (dask_polar[dashboard])"
)


def rand(shape, chunks, seed=0):
    return da.from_array(np.random.default_rng(seed).standard_normal(shape), chunks=chunks)


def local_cluster(**kwargs):
    return distributed.LocalCluster(
        n_workers=1, threads_per_worker=24, processes=False, dashboard_address="127.0.0.1:0",
        **kwargs,
    )


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(scheduler_kwargs={"preload": ["dask_polar.dashboard"]}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def url(cluster, path):
    return f"http://127.0.0.1:{cluster.scheduler.http_server.port}/{path.lstrip('/')}"


def get_json(cluster, path="polar/jobs.json"):
    with urllib.request.urlopen(url(cluster, path), timeout=30) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def assert_not_found(cluster, path="polar/jobs.json"):
    with pytest.raises(urllib.error.HTTPError, match="404") as info:
        get_json(cluster, path)
    info.value.close()  # the error holds the response's socket


def job_ids(cluster):
    return {job["id"] for job in get_json(cluster)["jobs"]}


def straggler_job(n=16, straggler=9, delay=0.02, seed=0):
    A, B = rand((64, 8), (8, 8), seed=seed), rand((8, 3), (8, 3), seed=seed + 1)
    delays = np.full(n, delay)
    delays[straggler] = 30.0
    return coded_matmul(A, B, n=n, stragglers=delays), A.compute() @ B.compute(), delays


# ---------------------------------------------------------------- the page's components
# First in this module, before any dashboard runs here: a dashboard's periodic updates turn
# Bokeh's property validation (and with it str -> Title conversion) off process-wide while
# they run, which would race with figures built in the test's thread.


def tracked_job():
    """A running job: three results in, one failed, a zero block, three still running."""
    tracker = JobTracker()
    tasks = [TaskRecord(j, "pending", submitted=0.001) for j in range(8)]
    tasks[7].status = "zero"
    record = JobRecord("feedbeef", "<PolarCode n=8 k=4>", n=8, k=4, backend="threads",
                       info_set=[3, 5, 6, 7], started=time.time(), tasks=tasks,
                       straggler_delays=[0.1, 0.1, 0.2, 0.1, 0.1, 3.0, 0.1, 0.1])
    tracker.apply(PROGRESS_TOPIC, progress_event("on_start", record))
    for j, status in [(0, "done"), (1, "done"), (2, "failed"), (4, "done")]:
        task = TaskRecord(j, status, submitted=0.001, started=0.01, finished=0.1 + j / 100)
        tracker.apply(PROGRESS_TOPIC, progress_event("on_result", record, task))
    return tracker, record


@needs_bokeh
def test_jobs_view_draws_a_job():
    from dask_polar.dashboard import CATEGORIES, JobsView

    tracker, record = tracked_job()
    view = JobsView(tracker)
    view.update()
    assert view.task_source.data["category"] == [
        "arrived", "arrived", "failed", "running", "arrived", "running", "running", "zero"
    ]
    assert not view.decodable_span.visible
    running_end = view.task_source.data["right"][3]
    assert running_end >= 0.14  # running bars reach "now"

    record.decodable_at, record.used, record.cancelled = 0.15, [0, 1, 4, 7], [3, 5, 6]
    record.decoded_at = 0.152
    statuses = ["done", "done", "failed", "cancelled", "done", "cancelled", "cancelled", "zero"]
    record.tasks = [
        TaskRecord(j, status, submitted=0.001, started=0.01, finished=0.1 + j / 100)
        if status in ("done", "failed") else TaskRecord(j, status, submitted=0.001)
        for j, status in enumerate(statuses)
    ]
    tracker.apply("dask_polar", record.to_dict())
    view.update()
    data = view.task_source.data
    assert data["category"] == [
        "used", "used", "failed", "cancelled", "used", "cancelled", "cancelled", "zero"
    ]
    assert data["color"][3] == CATEGORIES["cancelled"]
    assert data["right"][3] == pytest.approx(0.15)  # cancelled at the decodable moment
    assert view.decodable_span.visible and view.decodable_span.location == 0.15
    assert (view.decode_box.left, view.decode_box.right) == (0.15, 0.152)
    assert view.code_source.data["role"] == ["frozen"] * 3 + ["information", "frozen"] + [
        "information"] * 3
    assert (view.y_range.start, view.y_range.end) == (7.5, -0.5)
    assert len(view.observed_source.data["top"]) == len(view.design_source.data["top"]) > 0
    assert "injected delays" in view.histogram.title.text
    assert "feedbeef" in view.summary.text and "<b>decoded</b>" in view.summary.text
    assert list(view.table_source.data["status"]) == ["decoded"]


@needs_bokeh
def test_jobs_view_shows_what_auto_chose():
    from dask_polar import jobs
    from dask_polar.dashboard import JobsView

    tracker, record = tracked_job()
    record.decodable_at, record.decoded_at, record.used = 0.15, 0.152, [0, 1, 4, 7]
    record.tasks = [TaskRecord(j, "done", submitted=0.0, started=0.01, finished=0.1)
                    for j in range(8)]
    jobs.note_plan(record.token, {"chosen": "polar", "predicted": {
        "polar": {"median": 0.14, "allowed": True}, "replication": {"median": 0.2, "allowed": True},
        "polar-butterfly": {"median": 0.1, "allowed": False}}})
    tracker.apply("dask_polar", record.to_dict())  # from the event log: the plan is this process's
    view = JobsView(tracker)
    view.update()
    assert "<b>polar</b>: predicted 0.140 s, took 0.152 s" in view.summary.text
    assert "replication 0.200" in view.summary.text and "butterfly" not in view.summary.text


@needs_bokeh
def test_jobs_view_follows_the_picked_job():
    from dask_polar.dashboard import JobsView

    tracker, first = tracked_job()
    view = JobsView(tracker)
    second = JobRecord("0ddba11", "<MDSCode n=6 k=3>", n=6, k=3, backend="threads",
                       started=first.started + 1, tasks=[TaskRecord(j) for j in range(6)])
    tracker.apply(PROGRESS_TOPIC, progress_event("on_start", second))
    view.update()
    assert "0ddba11" in view.summary.text  # the newest by default, listed first
    assert view.histogram.title.text.startswith("Work-task runtimes (empirical")
    assert view.code_source.data["role"] == ["coded"] * 6
    view.table_source.selected.indices = [1]  # as a click in the browser would
    view.update()
    assert "feedbeef" in view.summary.text
    assert view.table_source.selected.indices == [1]


def test_json_route_shows_a_finished_job(cluster, client):
    product, expected, delays = straggler_job()
    np.testing.assert_allclose(product.compute(), expected, atol=1e-10)
    record = dask_polar.last_job()
    (job,) = [j for j in get_json(cluster)["jobs"] if j["token"] == record.token]
    assert job["status"] == "decoded" and job["backend"] == "distributed"
    assert (job["n"], job["k"]) == (16, 8)
    assert job["info_set"] == PolarCode(16, 8).info_set.tolist() == record.info_set
    assert job["used"] == record.used and job["cancelled"] == record.cancelled
    # a data block: a copy of its product stood in for the straggler
    assert job["backups"] == 1 and job["tasks"][9]["status"] == "done" and 9 in job["used"]
    assert job["decodable_at"] <= job["decoded_at"]
    assert job["decode_seconds"] == pytest.approx(record.decode_seconds)
    assert job["straggler_delays"] == delays.tolist()
    assert job["received"] >= job["needed"] == len(job["used"])
    assert len(job["runtimes"]) == sum(t["status"] == "done" for t in job["tasks"])


def test_json_route_follows_a_running_job(cluster, client):
    before = job_ids(cluster)
    A, B = rand((64, 8), (8, 8), seed=3), rand((8, 3), (8, 3), seed=4)
    # fewer than k = 8 results arrive at once, the rest much later (the butterfly: every
    # task runs from the start, nothing stands in for a late one)
    delays = np.full(16, 1.5)
    delays[PolarCode(16, 8).info_set[:6]] = 0.05
    future = client.compute(coded_matmul(A, B, n=16, systematic=False, stragglers=delays))
    seen = []
    deadline = time.monotonic() + 20
    while not future.done():
        assert time.monotonic() < deadline
        new = [j for j in get_json(cluster)["jobs"] if j["id"] not in before]
        if new:
            seen.append((new[-1]["status"], new[-1]["received"]))
        time.sleep(0.05)
    np.testing.assert_allclose(future.result(), A.compute() @ B.compute(), atol=1e-10)
    # while it ran, the page knew of it and of the results already in
    assert ("running", 6) in seen
    (job,) = [j for j in get_json(cluster)["jobs"] if j["id"] not in before]
    assert job["status"] == "decoded"


def test_json_route_one_job_by_id(cluster, client):
    product, _, _ = straggler_job(seed=7)
    product.compute()
    job_id = get_json(cluster)["jobs"][-1]["id"]
    job = get_json(cluster, f"polar/jobs.json?id={job_id}")
    assert job["id"] == job_id and job["status"] == "decoded"
    assert_not_found(cluster, "polar/jobs.json?id=nope")


@needs_bokeh
def test_page_is_served_and_in_the_navigation(cluster):
    with urllib.request.urlopen(url(cluster, "polar"), timeout=30) as response:
        page = response.read().decode()
    assert response.status == 200 and "Bokeh" in page
    with urllib.request.urlopen(url(cluster, "status"), timeout=30) as response:
        assert 'href="polar"' in response.read().decode()


def test_plugin_added_to_a_running_cluster_reads_earlier_jobs():
    # worker processes and a client that is not the default: an in-process worker's own
    # client can outlive its cluster and keep dask's "scheduler" setting after the module
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=24, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        product, _, _ = straggler_job(seed=11)
        client.compute(product).result()  # before the plugin: only in the event log
        assert_not_found(cluster)
        client.register_plugin(PolarDashboard())
        (job,) = get_json(cluster)["jobs"]
        assert job["status"] == "decoded"
        assert job["token"] == dask_polar.last_job(client).token
        if importlib.util.find_spec("bokeh") is not None:
            with urllib.request.urlopen(url(cluster, "polar"), timeout=30) as response:
                assert response.status == 200


def test_json_route_from_the_routes_config():
    routes = [*dask.config.get("distributed.scheduler.http.routes"), "dask_polar.dashboard"]
    with dask.config.set({"distributed.scheduler.http.routes": routes}), distributed.LocalCluster(
        n_workers=0, dashboard_address="127.0.0.1:0"
    ) as cluster:
        assert get_json(cluster) == {"jobs": [], "version": 0}
        # the first request added the plugin, which now follows the event log
        assert isinstance(cluster.scheduler.plugins[PolarDashboard.name], PolarDashboard)


def test_plugin_pickles_without_its_jobs():
    plugin = PolarDashboard(max_jobs=7)
    record = JobRecord("abc", "<PolarCode n=2 k=1>", n=2, k=1, backend="threads",
                       tasks=[TaskRecord(0), TaskRecord(1)])
    plugin.log_event(PROGRESS_TOPIC, progress_event("on_start", record))
    plugin.log_event("other-topic", {"event": "start"})
    assert len(plugin.tracker) == 1
    copy = pickle.loads(pickle.dumps(plugin))
    assert copy.max_jobs == 7 and len(copy.tracker) == 0


# ---------------------------------------------------------------- in a real browser


class Chromium:
    """Headless Chromium driven over the DevTools protocol (no extra Python package)."""

    FLAGS = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", "--window-size=1280,1250", "--remote-debugging-port=0",
    ]

    def __init__(self, profile):
        self.profile = profile
        self.process = subprocess.Popen(
            [CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _page_socket(self, timeout=30.0):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(port_file) as f:
                    port = int(f.readline())
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, "Chromium did not start"
            time.sleep(0.1)

    def visit(self, address, until, screenshot, timeout=30.0):
        """Load ``address``, wait until the JavaScript ``until`` is true, save a PNG.

        Returns the value of ``until`` (JSON-decoded) once truthy.
        """
        return asyncio.run(self._visit(address, until, screenshot, timeout))

    async def _visit(self, address, until, screenshot, timeout):
        from tornado.websocket import websocket_connect

        socket = await websocket_connect(self._page_socket(), max_message_size=1 << 26)

        async def call(method, **params):
            ident = next(self._ids)
            request = {"id": ident, "method": method, "params": params}
            await socket.write_message(json.dumps(request))
            while True:
                message = json.loads(await socket.read_message())
                if message.get("id") == ident:
                    assert "error" not in message, message
                    return message["result"]

        try:
            await call("Page.enable")
            await call("Page.navigate", url=address)
            deadline = time.monotonic() + timeout
            while True:
                value = await call("Runtime.evaluate", expression=until, returnByValue=True)
                found = value["result"].get("value")
                if found:
                    break
                assert time.monotonic() < deadline, f"page never satisfied: {until}"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # let the canvas plots paint before the screenshot
            shot = await call("Page.captureScreenshot", format="png")
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            return json.loads(found)
        finally:
            socket.close()
            while await socket.read_message() is not None:  # until the socket is closed
                pass


#: Collects the page's text through Bokeh's shadow roots, and its tables' and plots' data.
PAGE_STATE = """
(() => {
  if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
  const doc = Bokeh.documents[0];
  const timeline = doc.get_model_by_name("polar-timeline");
  const summary = doc.get_model_by_name("polar-summary");
  if (!timeline || !summary || !summary.text.includes("decoded")) return null;
  const texts = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) texts.push(child.textContent);
      else walk(child);
    }
  };
  walk(document.body);
  const source = timeline.renderers[0].data_source.data;
  return JSON.stringify({
    text: texts.join(" "),
    categories: Array.from(source.category),
    title: document.title,
  });
})()
"""


@pytest.mark.browser
@needs_bokeh
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Chromium at {CHROMIUM}")
def test_page_renders_a_job_in_chromium(cluster, client, tmp_path):
    product, expected, _ = straggler_job(n=32, straggler=23, delay=0.05, seed=21)
    np.testing.assert_allclose(product.compute(), expected, atol=1e-10)
    record = dask_polar.last_job()  # the newest job: the one the page shows first
    browser = Chromium(str(tmp_path / "profile"))
    try:
        state = browser.visit(url(cluster, "polar"), PAGE_STATE, screenshot=tmp_path / "polar.png")
    finally:
        browser.close()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    # the browser received the job over Bokeh's websocket and rendered it
    assert state["title"] == "Dask: coded jobs (dask_polar)"
    assert record.token in state["text"] and "<PolarCode n=32 k=8 systematic>" in state["text"]
    assert f"{len(record.used)} needed" in state["text"]
    categories = state["categories"]
    assert len(categories) == 32 and categories[23] == "used"  # from its copy
    assert categories.count("used") + categories.count("zero") == len(record.used)
    png = (tmp_path / "polar.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
