"""Linear models fitted with coded, straggler-resilient data products.

scikit-learn-style estimators (`LeastSquares`, `LogisticRegression`, `PoissonRegression`)
whose every product with the data matrix runs as a coded job: ``A`` is encoded once for
``A @ x`` and once for ``A.T @ r`` (`dask_polar.CodedMatrix`), the encoded blocks stay where
the work runs, and each iteration decodes from the first decodable set of results, so
stragglers do not set the pace of the optimisation. New GLMs need a `Family` (loss, mean,
weights, link) and a subclass of `GeneralizedLinearModel`.

References
----------
B. Bartan and M. Pilanci, "Straggler Resilient Serverless Computing Based on Polar Codes",
Allerton 2019 (coded least squares and GLMs on AWS Lambda).
"""

from __future__ import annotations

from ._families import Binomial, Family, Gaussian, Poisson
from ._glm import (
    ConvergenceWarning,
    GeneralizedLinearModel,
    LeastSquares,
    LogisticRegression,
    PoissonRegression,
)

__all__ = [
    "Binomial",
    "ConvergenceWarning",
    "Family",
    "Gaussian",
    "GeneralizedLinearModel",
    "LeastSquares",
    "LogisticRegression",
    "Poisson",
    "PoissonRegression",
]
