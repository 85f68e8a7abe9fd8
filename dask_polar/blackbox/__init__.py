"""Black-box (zeroth-order) optimisation with coded gradient estimates.

A gradient of a function known only through evaluations is estimated from directional
derivatives. `CodedGradient` evaluates them along *encoded* directions (the rows of a code's
generator applied to the base directions), so the gradient is decoded from the first
decodable subset of evaluation tasks and stragglers are never waited for (Bartan & Pilanci,
*Distributed Black-Box Optimization via Error Correcting Codes*, 2019). The baselines,
`FiniteDifferenceGradient` (uncoded: waits for every task) and `RandomSearchGradient`
(Gaussian smoothing), run through the same early-completion loop, and
`projected_gradient_descent` optimises with any of them. ``python -m dask_polar demo
adversarial`` attacks a digit classifier with each (see `dask_polar.blackbox.adversarial`).
"""

from __future__ import annotations

from ._estimators import (
    CodedGradient,
    FiniteDifferenceGradient,
    RandomSearchGradient,
    directional_derivatives,
)
from ._optimize import ZerothOrderResult, projected_gradient_descent

__all__ = [
    "CodedGradient",
    "FiniteDifferenceGradient",
    "RandomSearchGradient",
    "ZerothOrderResult",
    "directional_derivatives",
    "projected_gradient_descent",
]
