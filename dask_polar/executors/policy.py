"""Speculation policies: pure functions of timestamps, so they are tested with fake clocks."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

__all__ = ["backup_candidates"]


def backup_candidates(
    now: float,
    running: Mapping[int, float],
    durations: Sequence[float],
    *,
    total: int,
    factor: float = 3.0,
    min_completed_fraction: float = 0.5,
    backed_up: Collection[int] = (),
) -> list[int]:
    """Tasks that deserve a backup copy: running longer than ``factor`` x the median.

    The rule of cubed's backup tasks (and MapReduce's speculative execution): once at least
    ``min_completed_fraction`` of the ``total`` tasks have finished, any task running more than
    ``factor`` times the median duration of the finished ones gets one backup copy.

    Parameters
    ----------
    now : float
        Current time.
    running : mapping of task index -> start time
        Tasks still running.
    durations : sequence of float
        Durations of the finished tasks.
    total : int
        Number of tasks in the job.
    factor, min_completed_fraction : float
    backed_up : collection of int
        Tasks that already have a backup.

    Returns
    -------
    list of int, ascending

    Examples
    --------
    >>> backup_candidates(10.0, {3: 1.0, 4: 9.5}, [1.0, 1.2, 0.9], total=5)
    [3]
    """
    if not durations or len(durations) < min_completed_fraction * total:
        return []
    threshold = factor * float(np.median(durations))
    return sorted(
        j for j, start in running.items() if j not in backed_up and now - start > threshold
    )
