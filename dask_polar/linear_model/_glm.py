"""scikit-learn-style GLM estimators whose data products are coded, straggler-resilient jobs."""

from __future__ import annotations

import inspect
import logging
import reprlib
import time
import warnings
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np

from .._validation import check_int, check_real
from ..array.coded_matrix import CodedMatrix
from ._families import Binomial, Family, Gaussian, Poisson
from ._solvers import Design, Objective, SolverResult, gradient_descent, newton

__all__ = [
    "ConvergenceWarning",
    "GeneralizedLinearModel",
    "LeastSquares",
    "LogisticRegression",
    "PoissonRegression",
]

logger = logging.getLogger("dask_polar")

SOLVERS = ("newton", "gd")
#: Row blocks when ``A`` comes as one chunk (numpy) and ``k`` is not given.
DEFAULT_K = 8


class ConvergenceWarning(UserWarning):
    """A solver stopped before the gradient fell below ``tol``."""


def _check_matrix(A: Any) -> tuple[Any, tuple[int, int]]:
    """``A`` as a float64 numpy or dask array (or the CodedMatrix itself), and its shape."""
    if isinstance(A, CodedMatrix):
        if A.dtype.kind != "f":
            raise TypeError(f"A must hold real floating numbers, got dtype {A.dtype}")
        return A, A.shape
    if not isinstance(A, da.Array):
        try:
            A = np.asarray(A)
        except (TypeError, ValueError) as exc:  # ragged nested sequences
            raise TypeError(f"A must be a 2-D array of real numbers, got {type(A).__name__}") from exc
    if A.dtype.kind not in "biuf":
        raise TypeError(
            f"A must be a 2-D array of real numbers, got dtype {A.dtype}"
            + (" (complex data has no GLM here)" if A.dtype.kind == "c" else "")
        )
    if A.ndim != 2:
        raise ValueError(f"A must be 2-D (samples x features), got shape {A.shape}")
    if A.dtype != np.float64:
        A = A.astype(np.float64)
    if any(np.isnan(c) for c in A.shape):
        raise ValueError("A has unknown chunk sizes; call A.compute_chunk_sizes() first")
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"A must have at least one row and one column, got shape {A.shape}")
    # a dask array is checked for NaN by no one: that would be a pass over all the data
    if isinstance(A, np.ndarray) and not np.isfinite(A).all():
        raise ValueError("A must not contain NaN or infinity")
    return A, A.shape


def _check_vector(y: Any, m: int) -> np.ndarray:
    """``y`` as a 1-D numpy array of length ``m``."""
    if isinstance(y, da.Array):
        y = y.compute()
    try:
        y = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"y must be a 1-D array, got {type(y).__name__}") from exc
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if y.shape[0] != m:
        raise ValueError(f"y has {y.shape[0]} entries but A has {m} rows")
    return y


def _real_targets(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold real numbers, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if np.isnan(y).any():
        raise ValueError(f"y must not contain NaN, got {np.isnan(y).sum()} NaN value(s)")
    if not np.isfinite(y).all():
        raise ValueError("y must not contain infinity")
    return y


class GeneralizedLinearModel:
    """A GLM with canonical link, fitted with coded data products (base class).

    Subclasses set ``family`` (a `Family`) and may override ``_targets`` (check and encode
    ``y``) and ``predict``. The objective is
    ``F(w, b) = sum_i loss(a_i @ w + b, y_i) / m + alpha / 2 * ||w||**2``.

    Parameters
    ----------
    fit_intercept : bool, default True
        Fit ``b`` (it is not penalised and needs no data movement).
    alpha : float, default 0.0
        L2 penalty on ``w``.
    solver : {"newton", "gd"}, default "newton"
        ``"newton"``: damped Newton / IRLS, Hessian ``A.T D A`` from one coded job per
        iteration. ``"gd"``: gradient descent, two coded vector products per iteration.
    max_iter : int, default 100
    tol : float, default 1e-6
        Stop when the largest absolute entry of the gradient of ``F`` is at most ``tol``.
    step_size : float, optional
        Fixed step of ``"gd"``; default: Barzilai-Borwein steps with a non-monotone Armijo
        line search.
    k : int, optional
        Row blocks of ``A`` (data blocks of the code). Default: ``A``'s row chunks if it is
        a dask array in more than one, else 8 (at most the number of rows).
    code, client, executor, stragglers, seed
        As in `dask_polar.CodedMatrix`: the code (default ``polar.code``), a dask.distributed
        client (default: the current one, else threads), a ``concurrent.futures.Executor``
        for the coded tasks, injected straggler delays and their seed.
    options : mapping, optional
        Further `CodedMatrix` options (``n``, ``redundancy``, ``backup``, ``retries``,
        ``local_workers``, ...).

    Attributes
    ----------
    coef_ : ndarray of shape (p,)
    intercept_ : float
    n_iter_ : int
        Steps taken.
    converged_ : bool
    history_ : list of dict
        Per step: ``iteration`` (from 1), ``loss`` after it, ``grad_norm`` (max abs
        gradient it started from), ``step``, ``seconds`` (wall time of the step) and
        ``products`` (coded jobs so far).
    encode_seconds_ : float
        Time spent encoding ``A`` and ``A.T`` (0 when ``fit`` was given a `CodedMatrix`
        that was already encoded).
    n_features_in_ : int

    Notes
    -----
    ``A`` is encoded once for ``A @ x`` and once for ``A.T @ r`` (``CodedMatrix`` and its
    ``.T``). Every iteration then runs coded jobs against those encodings: gradient descent
    ships only vectors; Newton ships the m x (p + 2) right-hand side ``[D A | D 1 | r]``
    (``D`` changes every iteration and is kept off the encoded side, so nothing is
    re-encoded). Pass a `CodedMatrix` to ``fit`` to share one encoding between fits.
    """

    family: Family = Gaussian()

    def __init__(
        self,
        *,
        fit_intercept: bool = True,
        alpha: float = 0.0,
        solver: str = "newton",
        max_iter: int = 100,
        tol: float = 1e-6,
        step_size: float | None = None,
        k: int | None = None,
        code: Any = None,
        client: Any = None,
        executor: Any = None,
        stragglers: Any = None,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.fit_intercept = fit_intercept
        self.alpha = alpha
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.step_size = step_size
        self.k = k
        self.code = code
        self.client = client
        self.executor = executor
        self.stragglers = stragglers
        self.seed = seed
        self.options = options

    # -- fitting --------------------------------------------------------------------------

    def _check_params(self) -> dict[str, Any]:
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept must be a bool, got {self.fit_intercept!r}")
        if not isinstance(self.solver, str):
            raise TypeError(f"solver must be one of {SOLVERS}, got {type(self.solver).__name__}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a mapping, got {type(self.options).__name__}")
        step = self.step_size
        if step is not None:
            step = check_real("step_size", step, minimum=0.0, strict=True)
            if self.solver != "gd":
                raise ValueError("step_size is a gradient-descent option: use solver='gd'")
        return {
            "alpha": check_real("alpha", self.alpha, minimum=0.0),
            "max_iter": check_int("max_iter", self.max_iter, minimum=1),
            "tol": check_real("tol", self.tol, minimum=0.0, strict=True),
            "step_size": step,
            "k": None if self.k is None else check_int("k", self.k, minimum=1),
        }

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Check ``y`` (already 1-D of the right length) and return it as float64."""
        return _real_targets(y)

    def fit(self, A: Any, y: Any) -> GeneralizedLinearModel:
        """Fit the model; every product with ``A`` runs as a coded job.

        Parameters
        ----------
        A : numpy array, dask array, array-like or CodedMatrix, shape (m, p)
            Real data (integers are converted to float64). A `CodedMatrix` is used as is
            (its code and options win over the estimator's) and left open.
        y : array-like of shape (m,)

        Returns
        -------
        self

        Raises
        ------
        TypeError
            Non-numeric or complex ``A`` or ``y``, bad parameter types.
        ValueError
            ``A`` not 2-D, ``y`` not 1-D or of another length, NaN or infinity in ``y``
            (or in a numpy ``A``), bad parameter values, and the family's own checks
            (e.g. not exactly two classes for `LogisticRegression`).

        Warns
        -----
        ConvergenceWarning
            If the solver stopped before the gradient fell below ``tol``.
        """
        params = self._check_params()
        A, (m, p) = _check_matrix(A)
        y = self._targets(_check_vector(y, m))
        own = not isinstance(A, CodedMatrix)
        started = time.perf_counter()
        if own:
            k = params["k"]
            if k is None:
                chunks = A.numblocks[0] if isinstance(A, da.Array) else 1
                k = chunks if chunks > 1 else DEFAULT_K
            coded = CodedMatrix(
                A, k=min(k, m), client=self.client, code=self.code, executor=self.executor,
                stragglers=self.stragglers, seed=self.seed, **dict(self.options or {}),
            )
            source = A
        else:
            coded, source = A, A.source
        try:
            coded.T  # encode A.T now, so that encode_seconds_ holds the whole encoding
            self.encode_seconds_ = time.perf_counter() - started
            result = self._solve(Design(coded, source, bool(self.fit_intercept)), y, params)
        finally:
            if own:
                coded.close()
        x = result.x
        self.coef_ = x[:p].copy()
        self.intercept_ = float(x[p]) if self.fit_intercept else 0.0
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.history_ = result.history
        self.n_features_in_ = p
        self.fit_seconds_ = time.perf_counter() - started
        if not result.converged:
            warnings.warn(
                f"{type(self).__name__} ({self.solver}) stopped after {result.n_iter} "
                f"iteration(s) without reaching tol={params['tol']:g}: {result.message}",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _solve(self, design: Design, y: np.ndarray, params: dict[str, Any]) -> SolverResult:
        objective = Objective(self.family, y, params["alpha"], design)
        x0 = np.zeros(design.size)
        if design.intercept:  # start from the best constant model
            x0[-1] = self.family.link(float(y.mean()))
        if self.solver == "newton":
            return newton(objective, x0, max_iter=params["max_iter"], tol=params["tol"])
        return gradient_descent(
            objective, x0, max_iter=params["max_iter"], tol=params["tol"],
            step_size=params["step_size"],
        )

    # -- predicting -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def decision_function(self, A: Any) -> np.ndarray:
        """The linear predictor ``A @ coef_ + intercept_`` (coded if ``A`` is a CodedMatrix).

        Raises
        ------
        AttributeError
            Before ``fit``.
        TypeError, ValueError
            As in ``fit``, or if ``A`` has another number of features.
        """
        self._check_fitted()
        A, (_, p) = _check_matrix(A)
        if p != self.n_features_in_:
            raise ValueError(f"A has {p} features, but the model was fitted with {self.n_features_in_}")
        eta = A @ self.coef_
        if isinstance(eta, da.Array):
            eta = eta.compute()
        return np.asarray(eta) + self.intercept_

    def predict(self, A: Any) -> np.ndarray:
        """The fitted mean ``E[y]`` for the rows of ``A``."""
        return self.family.mean(self.decision_function(A))

    def __repr__(self) -> str:
        parameters = inspect.signature(GeneralizedLinearModel.__init__).parameters
        shown = [
            f"{name}={reprlib.repr(getattr(self, name))}"
            for name, parameter in parameters.items()
            if name != "self" and not _is_default(getattr(self, name), parameter.default)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays compare elementwise
        return False


class LeastSquares(GeneralizedLinearModel):
    """Linear least squares (ridge with ``alpha > 0``) with coded products.

    Minimises ``||A w + b - y||**2 / (2 m) + alpha / 2 * ||w||**2``. Parameters and
    attributes as in `GeneralizedLinearModel`; with the default ``solver="newton"`` the
    first step is the exact solution (normal equations from one coded job).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_polar.linear_model import LeastSquares
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((500, 6))
    >>> y = A @ np.arange(6.0) + 1.0
    >>> model = LeastSquares(k=4).fit(A, y)
    >>> np.round(model.coef_, 6) + 0.0, round(model.intercept_, 6), model.n_iter_
    (array([0., 1., 2., 3., 4., 5.]), 1.0, 1)
    >>> expected = np.linalg.lstsq(A, y - 1.0, rcond=None)[0]
    >>> gd = LeastSquares(solver="gd", fit_intercept=False, tol=1e-10, k=4).fit(A, y - 1.0)
    >>> bool(np.allclose(gd.coef_, expected, atol=1e-8))
    True
    """

    family = Gaussian()

    def score(self, A: Any, y: Any) -> float:
        """The coefficient of determination R^2 of the prediction."""
        predicted = self.predict(A)
        y = _real_targets(_check_vector(y, predicted.shape[0]))
        residual = y - predicted
        total = y - y.mean()
        return 1.0 - float(residual @ residual) / float(total @ total)


class LogisticRegression(GeneralizedLinearModel):
    """Binary logistic regression with coded products.

    Minimises ``sum_i [log(1 + exp(eta_i)) - y_i eta_i] / m + alpha / 2 * ||w||**2`` with
    ``eta = A w + b`` and ``y`` in {0, 1} (the larger of the two classes is 1). scikit-learn's
    ``LogisticRegression(C=C)`` is ``alpha = 1 / (C m)``; ``alpha=0`` (the default) is its
    ``penalty=None``. Parameters and attributes as in `GeneralizedLinearModel`, plus:

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels, sorted; ``predict`` returns them.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_polar.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((400, 3))
    >>> y = np.where(A @ [2.0, -1.0, 0.5] + 0.3 * rng.standard_normal(400) > 0, "yes", "no")
    >>> model = LogisticRegression(k=4, alpha=1e-3).fit(A, y)
    >>> model.classes_
    array(['no', 'yes'], dtype='<U3')
    >>> float(model.score(A, y)) > 0.9, model.converged_
    (True, True)
    """

    family = Binomial()

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError(f"y must not contain NaN, got {np.isnan(y).sum()} NaN value(s)")
        if y.dtype.kind not in "biufUSO":
            raise TypeError(f"y must hold class labels, got dtype {y.dtype}")
        classes = np.unique(y)
        if classes.size != 2:
            raise ValueError(
                f"y must have exactly two classes (binary labels) for {type(self).__name__}, "
                f"got {classes.size}: {reprlib.repr(classes.tolist())}"
            )
        self.classes_ = classes
        return (y == classes[1]).astype(np.float64)

    def predict_proba(self, A: Any) -> np.ndarray:
        """Probabilities of ``classes_``, shape (m, 2)."""
        p = self.family.mean(self.decision_function(A))
        return np.column_stack([1.0 - p, p])

    def predict(self, A: Any) -> np.ndarray:
        """The more likely class of each row of ``A``."""
        return self.classes_[(self.decision_function(A) > 0).astype(int)]

    def score(self, A: Any, y: Any) -> float:
        """The accuracy of ``predict`` on ``(A, y)``."""
        return float(np.mean(self.predict(A) == np.asarray(y)))


class PoissonRegression(GeneralizedLinearModel):
    """Poisson regression (log link) with coded products; ``y`` must be ``>= 0``.

    Minimises ``sum_i [exp(eta_i) - y_i eta_i] / m + alpha / 2 * ||w||**2``. Parameters and
    attributes as in `GeneralizedLinearModel`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_polar.linear_model import PoissonRegression
    >>> rng = np.random.default_rng(1)
    >>> A = rng.standard_normal((2000, 2))
    >>> y = rng.poisson(np.exp(A @ [0.5, -0.25] + 1.0))
    >>> model = PoissonRegression(k=4).fit(A, y)
    >>> np.round(model.coef_, 1), round(model.intercept_, 1)
    (array([ 0.5, -0.2]), 1.0)
    """

    family = Poisson()

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = _real_targets(y)
        if (y < 0).any():
            raise ValueError(f"y must be >= 0 for {type(self).__name__}, got min {y.min():g}")
        return y
