"""Straggler statistics learned from finished jobs: task times relative to their job's median.

Every finished job leaves its tasks' times (a `dask_polar.JobRecord`, or a plain product's
timed tasks). Divided by the job's median they describe the cluster's stragglers whatever
the product's size, so one window serves every product on a backend. A task that never
finished (cancelled, or rescued by a copy while it still ran) is *censored*: it took at
least the time it was seen running. Its sample stands for the median of the finished
samples beyond that point (Kaplan-Meier's redistribution of censored mass, made
deterministic), or for the point itself when none is beyond. The finished samples of the
tail (beyond `TAIL`) are also kept apart, as many as the window holds: a job that outran
its stragglers (it copied them and cancelled them) finishes none, and without that memory
its stragglers would look no slower than the moment they were cancelled.

Pure numpy; the planner (`dask_polar.array._auto`) keeps one `LearnedRuntimes` per backend.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

from .._validation import as_real_array, check_int
from .models import Empirical

__all__ = ["LearnedRuntimes", "TAIL"]

#: Relative task times beyond this are the tail, remembered apart (see the module).
TAIL = 2.0


class LearnedRuntimes:
    """A recent window of relative task times, seeded with a prior.

    Parameters
    ----------
    window : int, default 256
        Relative task times kept (the newest; a job of ``n`` tasks adds ``n``).
    prior : array_like of float, optional
        Relative task times assumed before any job (default ``[1.0] * 16``: no stragglers,
        worth a quarter of one job of 64 tasks).
        Real samples push the prior out of the window like any old sample.

    Examples
    --------
    >>> learned = LearnedRuntimes(window=8, prior=[1.0])
    >>> learned.add_job([0.1, 0.1, 0.1, 1.5])          # one straggler 15x the median
    >>> learned.model().samples.tolist()
    [1.0, 1.0, 1.0, 1.0, 15.0]
    >>> learned.add_job([0.1, 0.1, 0.1, 0.3], censored=[False, False, False, True])
    >>> float(learned.model().samples.max())           # the censored 3x stands for the 15x seen
    15.0
    """

    def __init__(self, window: int = 256, prior: Any = None) -> None:
        self.window = check_int("window", window, minimum=1)
        values = np.ones(16) if prior is None else as_real_array("prior", prior).ravel()
        if values.size == 0 or not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("prior must hold at least one finite, non-negative relative time")
        self._values: collections.deque[float] = collections.deque(values.tolist(), maxlen=self.window)
        self._censored: collections.deque[bool] = collections.deque([False] * values.size, maxlen=self.window)
        self._tail: collections.deque[float] = collections.deque(maxlen=self.window)
        self._lock = threading.Lock()
        self.jobs = 0
        #: Incremented by every job added: a planner caches its choice per generation.
        self.generation = 0

    def add_job(self, seconds: Any, censored: Any = None) -> None:
        """Add one job's task times (seconds; ``censored[i]``: task ``i`` did not finish,
        it ran at least ``seconds[i]``). Jobs whose median is not positive add nothing."""
        times = np.asarray(seconds, dtype=np.float64).ravel()
        flags = (np.zeros(times.size, bool) if censored is None
                 else np.asarray(censored, dtype=bool).ravel())
        keep = np.isfinite(times) & (times >= 0)
        times, flags = times[keep], flags[keep]
        finished = times[~flags]
        if finished.size == 0:
            return
        median = float(np.median(finished))
        if median <= 0:
            return
        relative = times / median
        with self._lock:
            self._values.extend(relative.tolist())
            self._censored.extend(flags.tolist())
            self._tail.extend(relative[~flags & (relative > TAIL)].tolist())
            self.jobs += 1
            self.generation += 1

    def samples(self) -> np.ndarray:
        """The window's relative times, censored ones redistributed (see the module)."""
        with self._lock:
            values = np.array(self._values)
            censored = np.array(self._censored, dtype=bool)
            tail = np.array(self._tail)
        if censored.any():
            finished = np.sort(np.concatenate([values[~censored], tail]))
            for i in np.flatnonzero(censored):
                beyond = finished[np.searchsorted(finished, values[i], side="right"):]
                if beyond.size:
                    values[i] = float(np.median(beyond))
        return values

    def model(self) -> Empirical:
        """The window as a runtime model of relative task times."""
        return Empirical(self.samples())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly state (`from_dict` restores it)."""
        with self._lock:
            return {"window": self.window, "values": list(self._values),
                    "censored": list(self._censored), "tail": list(self._tail), "jobs": self.jobs}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LearnedRuntimes:
        learned = cls(state["window"], prior=state["values"] or None)
        learned._censored = collections.deque(
            [bool(c) for c in state["censored"]], maxlen=learned.window
        )
        learned._tail.extend(state.get("tail", []))
        learned.jobs = int(state.get("jobs", 0))
        return learned

    def __repr__(self) -> str:
        return f"LearnedRuntimes(window={self.window}, samples={len(self._values)}, jobs={self.jobs})"
