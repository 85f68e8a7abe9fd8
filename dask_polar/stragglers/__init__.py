"""Straggler models: seeded task-time distributions to inject delays and design codes.

Pure numpy (no Dask import). Each `RuntimeModel` draws seeded task times and has an exact
``cdf``/``ppf``, so it can both inject stragglers (`draw_delays`) and design a polar code
(``PolarCode(n, k, runtimes=model)``). `Faults` says how injected stragglers behave (polite,
blocking, slow) and which tasks fail. `LearnedRuntimes` keeps the task times of finished jobs,
relative to their median: the stragglers ``code="auto"`` plans for. Plots live in `dask_polar.stragglers.plot` and need
matplotlib (``pip install dask_polar[plot]``), imported only when a plot is drawn.
"""

from __future__ import annotations

from .faults import FaultPlan, Faults, InjectedFailure
from .learned import LearnedRuntimes
from .models import (
    Bimodal,
    Empirical,
    NoStragglers,
    Pareto,
    RuntimeModel,
    ShiftedExponential,
    draw_delays,
)
from .plot import plot_cdf, plot_polarized_cdfs

__all__ = [
    "Bimodal",
    "Empirical",
    "FaultPlan",
    "Faults",
    "InjectedFailure",
    "LearnedRuntimes",
    "NoStragglers",
    "Pareto",
    "RuntimeModel",
    "ShiftedExponential",
    "draw_delays",
    "plot_cdf",
    "plot_polarized_cdfs",
]
