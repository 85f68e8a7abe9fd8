"""A straggler simulator for coded jobs on thousands of workers (one machine cannot host them).

`simulate` draws every worker's finish time from a runtime model (`dask_polar.stragglers`,
`LambdaLike`, optionally with `Heterogeneity`: per-worker speeds, groups that slow down
together), sorts them into an arrival order, and finds for each method the arrival that makes
its results decodable, with the real codes' value-free checks vectorised over trials. Encode
and decode costs come from a `CostModel` calibrated by `measure_costs` on this machine.
`polarization` and `plot_polarization` show computational polarization: the virtual workers'
CDFs converge to step functions as ``n`` grows. `plan` predicts every method for one
product from learned stragglers and chooses one (``code="auto"``).

Command line: ``python -m dask_polar simulate --workers 1024 --trials 100 ...``.
"""

from __future__ import annotations

from .core import MAX_DRAWS, MAX_WORKERS, METHODS, SimulationResult, simulate
from .costs import Affine, CostModel, measure_costs
from .decodability import decodable_masks, results_needed
from .models import Heterogeneity, LambdaLike, draw_finish_times
from .planning import Candidate, Plan, plan
from .polarization import Polarization, plot_polarization, polarization

__all__ = [
    "MAX_DRAWS",
    "MAX_WORKERS",
    "METHODS",
    "Affine",
    "Candidate",
    "CostModel",
    "Heterogeneity",
    "LambdaLike",
    "Plan",
    "Polarization",
    "SimulationResult",
    "decodable_masks",
    "draw_finish_times",
    "measure_costs",
    "plan",
    "plot_polarization",
    "polarization",
    "results_needed",
    "simulate",
]
