"""Scheduler preload: ``dask scheduler --preload dask_polar.preload`` turns the rewrite on.

Under dask.distributed the scheduler materializes and optimizes graphs, so a remote scheduler
needs dask_polar installed and enabled, with the cluster layout (``polar.layout``). Options come from the scheduler's Dask config
(``polar.*``, e.g. ``DASK_POLAR__REDUNDANCY=3`` in its environment).
"""

from __future__ import annotations

from typing import Any

from .array import enable


def dask_setup(scheduler: Any) -> None:
    """Called by distributed when the scheduler starts with this preload."""
    # graphs optimized here run on this cluster: lay coded products out as cluster tasks
    enable(layout="cluster")
    # code="auto" plans from the straggler statistics kept here, shared by every client
    from .array._auto import _runtimes_plugin

    _runtimes_plugin(scheduler)
