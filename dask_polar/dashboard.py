"""The ``/polar`` page on the Dask dashboard, and its data at ``/polar/jobs.json``.

Per coded job the page shows the code (``n``, ``k``, information set), a timeline of the
coded results arriving per index (which ones the decoder used, failed and cancelled tasks),
the moment the results became decodable and the decode time, and a histogram of the work
tasks' runtimes against the injected straggler delays (the runtime model's draws) when the
job carries them. It follows running jobs live: workers send progress events to the
scheduler's event log (see `dask_polar.jobs.progress_event`), which the `PolarDashboard`
scheduler plugin reads into a `dask_polar.diagnostics.JobTracker`.

Turn it on with any of:

- a scheduler preload: ``dask scheduler --preload dask_polar.dashboard`` (remote clusters;
  with dask-cloudprovider, ``scheduler_options={"preload": ["dask_polar.dashboard"]}``);
- ``LocalCluster(scheduler_kwargs={"preload": ["dask_polar.dashboard"]})``;
- on a running cluster, ``client.register_plugin(PolarDashboard())``; jobs already in the
  scheduler's event log show up too.

The scheduler needs dask_polar, and bokeh for the page (``pip install dask_polar[dashboard]``);
without bokeh only ``/polar/jobs.json`` is served.
"""

from __future__ import annotations

import html
import json
import logging
import time
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from .diagnostics import TOPICS, JobTracker, TrackedJob
from .jobs import EVENT_TOPIC, JobRecord

__all__ = ["PolarDashboard", "JobsHandler", "JobsView", "dask_setup", "polar_doc", "routes"]

logger = logging.getLogger("dask_polar")

PAGE = "/polar"
JSON_ROUTE = "polar/jobs.json"

#: Task categories on the timeline, and their colours.
CATEGORIES = {
    "used": "#2ca02c",  # in the decoder at the decodable moment
    "arrived": "#1f77b4",  # arrived, job not decodable yet
    "zero": "#a1d99b",  # identically zero coded block: known without a task
    "skipped": "#e0e0e0",  # background (parity) task never launched: not needed
    "running": "#ff7f0e",
    "failed": "#d62728",
    "cancelled": "#9e9e9e",  # outstanding at the decodable moment
}


class PolarDashboard(SchedulerPlugin):
    """Scheduler plugin: tracks coded jobs from the event log, serves ``/polar`` and its JSON.

    Parameters
    ----------
    max_jobs : int
        How many jobs to keep; the oldest are forgotten first.

    Attributes
    ----------
    tracker : JobTracker
        The coded jobs seen on this scheduler.

    Examples
    --------
    >>> client.register_plugin(PolarDashboard())  # doctest: +SKIP
    """

    name = "dask-polar-dashboard"

    def __init__(self, max_jobs: int = 100) -> None:
        self.max_jobs = max_jobs
        self.tracker = JobTracker(max_jobs)
        self.scheduler: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # shipped to the scheduler by client.register_plugin: state starts there, empty
        return (type(self), (self.max_jobs,))

    async def start(self, scheduler: Any) -> None:
        """Read the jobs already in the event log; add the JSON route and the page."""
        self.attach(scheduler)

    def attach(self, scheduler: Any) -> None:
        """What `start` does, synchronously (for a plugin added without ``start``)."""
        if self.scheduler is scheduler:
            return
        self.scheduler = scheduler
        logged = [
            (stamp, topic == EVENT_TOPIC, topic, message)
            for topic in TOPICS
            for stamp, message in scheduler.get_events(topic)
        ]
        # a job's progress events sort before its final record logged at the same instant
        for _, _, topic, message in sorted(logged, key=lambda item: item[:2]):
            self.tracker.apply(topic, message)
        _add_json_route(scheduler, self)
        _add_page(scheduler)

    def log_event(self, topic: str, msg: Any) -> None:
        """Every event logged on the scheduler passes here; keep the coded jobs' ones."""
        if topic in TOPICS:
            self.tracker.apply(topic, msg)


def _plugin(scheduler: Any) -> PolarDashboard:
    """The scheduler's `PolarDashboard`, added on first use."""
    plugin = scheduler.plugins.get(PolarDashboard.name)
    if not isinstance(plugin, PolarDashboard):
        plugin = PolarDashboard()
        plugin.attach(scheduler)
        scheduler.add_plugin(plugin, name=PolarDashboard.name)
    return plugin


async def dask_setup(scheduler: Any) -> None:
    """Called by distributed when a scheduler starts with ``--preload dask_polar.dashboard``."""
    await scheduler.register_scheduler_plugin(PolarDashboard(), idempotent=True)


class JobsHandler(web.RequestHandler):
    """``GET /polar/jobs.json``: ``{"jobs": [...], "version": int}``, oldest job first.

    Each job is `dask_polar.diagnostics.TrackedJob.to_dict`: the `dask_polar.JobRecord`
    fields (code, ``n``, ``k``, ``info_set``, per-task times, ``used``, ``decodable_at``,
    ``decoded_at``, ``cancelled``, ``straggler_delays``) plus ``id``, ``status``,
    ``received``, ``needed``, ``decode_seconds`` and ``runtimes``. ``?id=<job id>`` returns
    that job alone (404 if unknown).
    """

    def initialize(self, dask_server: Any = None, plugin: PolarDashboard | None = None) -> None:
        self.dask_server = dask_server
        self.plugin = plugin

    def get(self) -> None:
        plugin = self.plugin or _plugin(self.dask_server)
        job_id = self.get_query_argument("id", None)
        if job_id is None:
            body: Any = plugin.tracker.to_json()
        else:
            job = plugin.tracker.get(job_id)
            if job is None:
                raise web.HTTPError(404, f"no coded job with id {job_id!r}")
            body = job.to_dict()
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(body))


#: For the ``distributed.scheduler.http.routes`` config list, as distributed's own modules.
routes: list[tuple[str, type, dict[str, Any]]] = [(JSON_ROUTE, JobsHandler, {})]


def _bokeh_apps(scheduler: Any) -> list[Any]:
    return [app for app in scheduler.http_application.applications if hasattr(app, "app_paths")]


def _prefix(scheduler: Any) -> str:
    """The dashboard's URL prefix (``dask scheduler --dashboard-prefix``), as ``/`` or ``/x/``."""
    prefix = next((app.prefix for app in _bokeh_apps(scheduler)), "") or ""
    return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def _add_json_route(scheduler: Any, plugin: PolarDashboard) -> None:
    route = _prefix(scheduler) + JSON_ROUTE
    scheduler.http_application.add_handlers(
        r".*", [(route, JobsHandler, {"dask_server": scheduler, "plugin": plugin})]
    )


def _add_page(scheduler: Any) -> None:
    """Serve `polar_doc` at ``/polar`` beside the dashboard, if the dashboard is on.

    distributed builds its Bokeh server from its ``applications`` mapping before preloads
    run, so the page gets a Bokeh server of its own on the same HTTP server (as distributed's
    ``connect`` does): this works at any time, for preloads and plugins alike.
    """
    apps = _bokeh_apps(scheduler)
    if not apps:
        logger.info("the scheduler's dashboard is off: no %s page", PAGE)
        return
    if any(PAGE in app.app_paths for app in apps):
        return
    try:
        from distributed.dashboard.core import BokehApplication
        from distributed.dashboard.scheduler import template_variables
        from tornado.ioloop import IOLoop
    except ImportError:  # bokeh missing or too old: distributed says so itself
        logger.info("no %s page without bokeh (pip install dask_polar[dashboard])", PAGE)
        return
    variables = template_variables(scheduler)
    # every dashboard page's navigation bar lists this shared (memoized) list: add ours
    # before "info"
    pages = variables.get("pages")
    if isinstance(pages, list) and "polar" not in pages:
        pages.insert(max(len(pages) - 1, 0), "polar")
    app = BokehApplication(
        {PAGE: polar_doc}, scheduler, prefix=_prefix(scheduler), template_variables=variables
    )
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    logger.info("coded jobs on the dashboard at %s", _prefix(scheduler) + PAGE.lstrip("/"))


def polar_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Build the ``/polar`` Bokeh document for one browser session."""
    from distributed.dashboard.components import add_periodic_callback
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    view = JobsView(_plugin(scheduler).tracker)
    view.update()
    add_periodic_callback(doc, view, 500)
    doc.title = "Dask: coded jobs (dask_polar)"
    doc.add_root(view.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


def _seconds(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "" if value is None else f"{scale * value:.{digits}f}"


def _task_bars(job: TrackedJob, now: float) -> dict[str, list[Any]]:
    """Timeline rows: one bar per coded task, from submission to its result (or now)."""
    record = job.record
    used = set(record.used)
    end_cancelled = record.decodable_at if record.decodable_at is not None else now
    rows: dict[str, list[Any]] = {
        key: [] for key in ("index", "left", "right", "category", "color", "status", "worker",
                            "submitted", "started", "finished", "runtime", "error")
    }
    for t in record.tasks:
        left = t.submitted or 0.0
        if t.status in ("zero", "skipped"):
            category, right = t.status, left
        elif t.status == "done":
            category = "used" if t.index in used else "arrived"
            right = t.finished if t.finished is not None else now
        elif t.status == "failed":
            category, right = "failed", t.finished if t.finished is not None else now
        elif t.status == "cancelled":
            category, right = "cancelled", end_cancelled
        else:
            category, right = "running", now
        runtime = None if t.started is None or t.finished is None else t.finished - t.started
        for key, value in (
            ("index", t.index), ("left", left), ("right", max(right, left)),
            ("category", category), ("color", CATEGORIES[category]), ("status", t.status),
            ("worker", t.worker or ""), ("submitted", _seconds(t.submitted)),
            ("started", _seconds(t.started)), ("finished", _seconds(t.finished)),
            ("runtime", _seconds(runtime)), ("error", t.error or ""),
        ):
            rows[key].append(value)
    return rows


def _histograms(job: TrackedJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fractions of the observed runtimes and of the injected delays in shared log bins."""
    observed = np.asarray(job.runtimes(), dtype=float)
    design = np.asarray(job.record.straggler_delays or [], dtype=float)
    # a log axis shows no zero: clip at 0.1 ms (a delay of 0 means no injected straggler)
    observed, design = np.maximum(observed, 1e-4), np.maximum(design, 1e-4)
    both = np.concatenate([observed, design])
    empty: dict[str, Any] = {"left": [], "right": [], "top": []}
    if both.size == 0:
        return empty, dict(empty)
    bins = int(min(30, max(8, 2 * np.sqrt(both.size))))
    edges = np.geomspace(both.min() / 1.2, both.max() * 1.2, bins + 1)

    def fractions(values: np.ndarray) -> dict[str, Any]:
        if values.size == 0:
            return dict(empty)
        counts, _ = np.histogram(values, bins=edges)
        return {"left": edges[:-1], "right": edges[1:], "top": counts / values.size}

    return fractions(observed), fractions(design)


class JobsView:
    """The ``/polar`` page's components, redrawn from a `JobTracker` (no scheduler access).

    Parameters
    ----------
    tracker : JobTracker
    """

    def __init__(self, tracker: JobTracker) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import (
            BoxAnnotation,
            ColumnDataSource,
            DataTable,
            Div,
            HoverTool,
            Range1d,
            Span,
            TableColumn,
        )
        from bokeh.plotting import figure

        self.tracker = tracker
        self._version = -1
        self._selected: str | None = None  # a job picked in the table; None follows the latest
        self._updating = False
        self._ids: list[str] = []

        self.table_source = ColumnDataSource(
            {key: [] for key in ("id", "job", "code", "backend", "status", "received",
                                 "used", "decodable", "decode", "cancelled", "started")}
        )
        self.table = DataTable(
            source=self.table_source,
            columns=[
                TableColumn(field="job", title="job", width=95),
                TableColumn(field="code", title="code", width=150),
                TableColumn(field="backend", title="backend", width=75),
                TableColumn(field="status", title="status", width=65),
                TableColumn(field="received", title="received", width=60),
                TableColumn(field="used", title="used", width=40),
                TableColumn(field="decodable", title="decodable s", width=80),
                TableColumn(field="decode", title="decode ms", width=75),
                TableColumn(field="cancelled", title="cancelled", width=60),
                TableColumn(field="started", title="started", width=60),
            ],
            width=760, height=230, index_position=None, selectable=True,
            name="polar-jobs-table",
        )
        self.table_source.selected.on_change("indices", self._on_select)
        self.summary = Div(text="<i>No coded jobs yet.</i>", width=420, name="polar-summary")

        self.code_source = ColumnDataSource({"position": [], "role": [], "color": []})
        self.code_fig = figure(
            title="Code: information positions (data blocks) and frozen positions of u",
            height=110, width=1200, tools="", toolbar_location=None, y_range=(0, 1),
            name="polar-code",
        )
        self.code_fig.rect(
            x="position", y=0.5, width=0.92, height=0.8, color="color", source=self.code_source,
            legend_field="role",
        )
        self.code_fig.yaxis.visible = False
        self.code_fig.ygrid.visible = False
        self.code_fig.xaxis.axis_label = "position"
        self.code_fig.add_layout(self.code_fig.legend[0], "right")  # beside, not over, the code
        self.code_fig.add_tools(HoverTool(tooltips=[("position", "@position"), ("", "@role")]))

        nothing = TrackedJob(JobRecord(token="", code="", n=0, k=0, backend=""))
        self.task_source = ColumnDataSource(_task_bars(nothing, 0.0))
        self.y_range = Range1d(0.5, -0.5)  # index 0 on top
        self.timeline = figure(
            title="Coded results arriving, per coded index",
            height=430, width=790, y_range=self.y_range, tools="xpan,xwheel_zoom,reset",
            name="polar-timeline",
        )
        self.timeline.hbar(
            y="index", left="left", right="right", height=0.7, color="color",
            source=self.task_source, legend_field="category",
        )
        self.timeline.scatter(
            x="right", y="index", color="color", size=5, source=self.task_source,
        )
        self.timeline.add_tools(HoverTool(tooltips=[
            ("task", "@index (@status)"), ("worker", "@worker"), ("submitted", "@submitted s"),
            ("started", "@started s"), ("finished", "@finished s"), ("ran", "@runtime s"),
            ("error", "@error"),
        ]))
        self.timeline.xaxis.axis_label = "seconds since the job started"
        self.timeline.yaxis.axis_label = "coded index"
        self.timeline.add_layout(self.timeline.legend[0], "right")
        self.decodable_span = Span(
            location=0, dimension="height", line_color="#d62728", line_dash="dashed",
            line_width=2, visible=False,
        )
        self.decode_box = BoxAnnotation(
            left=0, right=0, fill_color="#2ca02c", fill_alpha=0.25, visible=False
        )
        self.timeline.add_layout(self.decode_box)
        self.timeline.add_layout(self.decodable_span)

        self.observed_source = ColumnDataSource({"left": [], "right": [], "top": []})
        self.design_source = ColumnDataSource({"left": [], "right": [], "top": []})
        # log time axis: straggler delays are heavy-tailed (a few tasks take 100x the rest)
        self.histogram = figure(
            title="Work-task runtimes", height=430, width=400, tools="", toolbar_location=None,
            x_axis_type="log", name="polar-runtimes",
        )
        self.histogram.quad(
            left="left", right="right", top="top", bottom=0, source=self.observed_source,
            fill_color="#1f77b4", fill_alpha=0.6, line_color="white",
            legend_label="observed runtimes",
        )
        self.histogram.quad(
            left="left", right="right", top="top", bottom=0, source=self.design_source,
            fill_alpha=0, line_color="#d62728", line_width=2,
            legend_label="injected delays (model draws)",
        )
        self.histogram.xaxis.axis_label = "seconds (log scale)"
        self.histogram.yaxis.axis_label = "fraction of tasks"
        self.histogram.legend.location = "top_right"

        title = Div(
            text="<h3 style='margin:4px 0'>Coded jobs (dask_polar)</h3>"
            "<span>Pick a job in the table; the newest is shown by default. "
            "Data: <a href='polar/jobs.json'>polar/jobs.json</a></span>",
            width=1200,
        )
        self.root = column(
            title,
            row(self.table, self.summary),
            self.code_fig,
            row(self.timeline, self.histogram),
        )

    def _on_select(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._updating:
            return
        self._selected = self._ids[new[0]] if new and new[0] < len(self._ids) else None
        self._version = -1  # redraw at the next tick

    def update(self) -> None:
        """Redraw if the tracker changed, or the shown job still runs (its bars grow)."""
        jobs = self.tracker.jobs()
        picked = next((j for j in jobs if j.id == self._selected), None)
        job = picked or (jobs[-1] if jobs else None)
        if self.tracker.version == self._version and (job is None or job.finished):
            return
        self._version = self.tracker.version
        self._update_table(jobs[::-1], job)
        if job is not None:
            self._update_job(job)

    def _update_table(self, jobs: list[TrackedJob], shown: TrackedJob | None) -> None:
        self._ids = [job.id for job in jobs]
        data: dict[str, list[Any]] = {key: [] for key in self.table_source.data}
        for job in jobs:
            record = job.record
            for key, value in (
                ("id", job.id), ("job", record.token[:12]), ("code", record.code),
                ("backend", record.backend), ("status", job.status),
                ("received", f"{job.received}/{record.n}"),
                ("used", len(record.used) if record.decodable_at is not None else ""),
                ("decodable", _seconds(record.decodable_at)),
                ("decode", _seconds(record.decode_seconds, 1e3, 1)),
                ("cancelled", len(record.cancelled) if record.decodable_at is not None else ""),
                ("started", time.strftime("%H:%M:%S", time.localtime(record.started))),
            ):
                data[key].append(value)
        self._updating = True
        try:
            self.table_source.data = data
            if self._selected is not None and shown is not None and shown.id in self._ids:
                self.table_source.selected.indices = [self._ids.index(shown.id)]
        finally:
            self._updating = False

    def _update_job(self, job: TrackedJob) -> None:
        record = job.record
        now = time.time() - record.started
        finished = [t.finished for t in record.tasks if t.finished is not None]
        now = max([now, *finished]) if not job.finished else max([0.0, *finished])
        info = set(record.info_set or ())
        self.code_source.data = {
            "position": list(range(record.n)),
            "role": [
                ("information" if j in info else "frozen") if record.info_set is not None
                else "coded" for j in range(record.n)
            ],
            "color": [
                ("#08519c" if j in info else "#deebf7") if record.info_set is not None
                else "#6baed6" for j in range(record.n)
            ],
        }
        self.task_source.data = _task_bars(job, now)
        self.y_range.start, self.y_range.end = record.n - 0.5, -0.5
        decodable = record.decodable_at is not None
        self.decodable_span.visible = decodable
        self.decode_box.visible = record.decoded_at is not None
        title = f"Coded results arriving, per coded index: {job.received} of {record.n} in"
        if decodable:
            self.decodable_span.location = record.decodable_at
            title += f", decodable at {record.decodable_at:.3f} s (red line)"
        if record.decoded_at is not None:
            self.decode_box.left, self.decode_box.right = record.decodable_at, record.decoded_at
            title += f", decoded {1e3 * (record.decode_seconds or 0.0):.1f} ms later (green)"
        self.timeline.title.text = title
        observed, design = _histograms(job)
        self.observed_source.data = observed
        self.design_source.data = design
        self.histogram.title.text = (
            "Work-task runtimes vs injected delays" if record.straggler_delays
            else "Work-task runtimes (empirical; no injected delays on record)"
        )
        self.summary.text = _summary_html(job)


def _summary_html(job: TrackedJob) -> str:
    """The selected job's facts as a small HTML table."""
    record = job.record
    info = record.info_set
    shown_info = "—" if info is None else (
        ", ".join(map(str, info[:48])) + (", …" if len(info) > 48 else "")
    )
    cancelled = ", ".join(map(str, record.cancelled[:32])) + (
        ", …" if len(record.cancelled) > 32 else ""
    )
    rows = [
        ("job", f"<code>{html.escape(record.token)}</code>"),
        ("code", html.escape(record.code)),
        ("n, k", f"{record.n}, {record.k}"),
        ("information set", f"<small>{shown_info}</small>"),
        ("backend", html.escape(record.backend)),
        ("status", f"<b>{job.status}</b>"),
        ("results", f"{job.received} received of {record.n}, {job.needed} needed"),
        ("decodable at", "—" if record.decodable_at is None
         else f"{_seconds(record.decodable_at)} s"),
        ("decode", "—" if record.decoded_at is None
         else f"{_seconds(record.decode_seconds, 1e3, 2)} ms"),
        ("cancelled", f"{len(record.cancelled)}: {cancelled}" if record.cancelled else "none"),
        ("retries, backups", f"{record.retries}, {record.backups}"),
    ]
    if record.plan:  # code="auto": what it chose, what it expected, the alternatives
        chosen, predicted = record.plan["chosen"], record.plan["predicted"]
        took = "—" if record.decoded_at is None else f"{_seconds(record.decoded_at)} s"
        others = ", ".join(
            f"{html.escape(name)} {_seconds(p['median'])}" for name, p in predicted.items()
            if name != chosen and p["allowed"]
        )
        rows.append(("auto", f"<b>{html.escape(chosen)}</b>: predicted "
                             f"{_seconds(predicted[chosen]['median'])} s, took {took}"))
        rows.append(("alternatives", f"<small>{others}</small>"))
    body = "".join(
        f"<tr><td style='padding:1px 8px 1px 0;color:#555'>{key}</td><td>{value}</td></tr>"
        for key, value in rows
    )
    return f"<table style='font-size:12px'>{body}</table>"
