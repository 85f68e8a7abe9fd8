"""The scheduler's straggler statistics for ``code="auto"`` (imported with a cluster only:
importing distributed sets up its logging, which the command line must do first)."""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..jobs import EVENT_TOPIC, JobRecord, TaskRecord, attach_plan
from ._auto import TIMES_TOPIC, BackendStats

__all__ = ["RuntimesPlugin"]


class RuntimesPlugin(SchedulerPlugin):
    """Scheduler plugin: the cluster's `BackendStats`, fed by the workers' event log
    (coded jobs' records and plain products' task times), shared by every client."""

    name = "dask_polar-runtimes"

    def __init__(self) -> None:
        # kept across sessions under "distributed" where polar.auto.path asks for it (a
        # scheduler's address changes from one cluster to the next)
        self.stats = BackendStats("distributed")
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def log_event(self, topic: str, msg: Any) -> None:
        try:
            if topic == EVENT_TOPIC and msg.get("code") != "plain":
                self.stats.record(attach_plan(JobRecord.from_dict(msg)))
            elif topic == TIMES_TOPIC:
                task = TaskRecord(**msg["task"])
                record = self.stats.plain_task(msg["token"], task, msg["expected"], "distributed")
                if record is not None:
                    self.stats.record(attach_plan(record))
                    if self.scheduler is not None:  # for last_job and the dashboard
                        self.scheduler.log_event(EVENT_TOPIC, record.to_dict())
        except Exception:  # statistics must never break the scheduler
            logging.getLogger("dask_polar").debug("runtimes plugin: bad event %r", msg, exc_info=True)
