"""Work tasks that stop early: cancelling never interrupts running Python, so tasks poll."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ._core import WorkOutcome

__all__ = ["POLL_SECONDS", "CooperativeTask", "worker_name"]

#: Seconds between cancel-flag checks inside a work task: polling a cluster-wide flag is a
#: round trip to the scheduler, so quick tasks never pay for it.
POLL_SECONDS = 0.05


def worker_name() -> str:
    """The dask.distributed worker's address, or the thread's name outside a cluster."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return threading.current_thread().name


class CooperativeTask:
    """The bookkeeping of one work task that stops once its job's ``flag`` is set.

    Parameters
    ----------
    flag : object with ``is_set()`` and ``wait(timeout)``
        The job's cancel flag (``threading.Event``, ``distributed.Event``, ...).

    Examples
    --------
    >>> import threading
    >>> task = CooperativeTask(threading.Event())
    >>> task.inject(None, 0, 0), task.cancelled(), task.done(42).value
    (False, False, 42)
    """

    def __init__(self, flag: Any) -> None:
        self.flag = flag
        self.started = time.time()
        self.worker = worker_name()
        self._checked = -math.inf  # the first check asks: the job may be decodable already
        #: How many times its work the task must do (an injected slow node, see `inject`).
        self.slowdown = 1.0

    def inject(self, faults: Any, index: int, attempt: int) -> bool:
        """Inject task ``index``'s fault at ``attempt`` (a `dask_polar.stragglers.FaultPlan`,
        or None); True if the job was cancelled while the task waited. A failing task
        raises; a slow one sets `slowdown`."""
        if faults is None:
            return False
        cancelled, self.slowdown = faults.strike(index, attempt, self.flag)
        return cancelled

    def cancelled(self) -> bool:
        """Whether the job was cancelled, asking the flag on the first call and then at most
        every `POLL_SECONDS` (every time for a ``threading.Event``, which costs nothing to
        ask)."""
        if type(self.flag) is threading.Event:
            return self.flag.is_set()
        if time.monotonic() - self._checked <= POLL_SECONDS:
            return False
        self._checked = time.monotonic()
        return bool(self.flag.is_set())

    def acquire(self, semaphore: Any) -> bool:
        """Take a slot of ``semaphore``, asking the flag while waiting; False (and no slot)
        if the job was cancelled first."""
        while not semaphore.acquire(timeout=POLL_SECONDS):
            if self.cancelled():
                return False
        return True

    def done(self, value: Any) -> WorkOutcome:
        """The outcome of a task that finished its work."""
        return WorkOutcome(value, self.started, time.time(), self.worker)

    def stopped(self) -> WorkOutcome:
        """The outcome of a task that stopped because its job was cancelled."""
        return WorkOutcome(None, self.started, time.time(), self.worker, cancelled=True)
