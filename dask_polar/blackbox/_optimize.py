"""Zeroth-order optimisation: projected gradient descent on estimated gradients."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_int, check_real

__all__ = ["ZerothOrderResult", "projected_gradient_descent"]

logger = logging.getLogger("dask_polar")


@dataclass
class ZerothOrderResult:
    """The outcome of `projected_gradient_descent`.

    Attributes
    ----------
    x : ndarray
        The last iterate.
    fun : float
        ``f(x)``.
    n_iter : int
        Gradient steps taken.
    success : bool
        Whether ``stop`` (or ``gtol``) ended the run, rather than ``max_iter``.
    message : str
    evaluations : int
        Evaluations of ``f``: by the gradient tasks that finished, plus one per iterate in
        the driver (for ``fun`` and ``stop``).
    seconds : float
        Wall time.
    history : list of dict
        Per step: ``fun``, ``grad_norm``, ``step``, ``seconds``.
    """

    x: np.ndarray
    fun: float
    n_iter: int
    success: bool
    message: str
    evaluations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def projected_gradient_descent(
    gradient: Callable[[np.ndarray], np.ndarray],
    x0: Any,
    *,
    step_size: float | Callable[[int], float] = 0.1,
    max_iter: int = 100,
    bounds: tuple[Any, Any] | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    normalize: bool = False,
    stop: Callable[[np.ndarray, float], bool] | None = None,
    gtol: float | None = None,
    f: Callable[[np.ndarray], Any] | None = None,
) -> ZerothOrderResult:
    """Minimise ``f`` by projected gradient steps on estimated gradients.

    ``x <- P(x - step * g)`` (or ``g / ||g||`` with ``normalize``), ``g`` from ``gradient``
    (e.g. a `CodedGradient`: one early-completing job of function evaluations per step).

    Parameters
    ----------
    gradient : callable
        ``gradient(x) -> (d,)``; its ``f`` attribute is the objective unless ``f`` is given.
    x0 : array-like of shape (d,)
    step_size : float or callable, default 0.1
        Step length, or ``step_size(iteration) -> float`` (iterations count from 1).
    max_iter : int, default 100
    bounds : (lower, upper), optional
        Box constraint (scalars or arrays); the projection clips to it.
    project : callable, optional
        Any other projection ``project(x) -> x``, applied after the box clip.
    normalize : bool, default False
        Step along the unit vector ``g / ||g||`` (sign-free scale: robust when ``f`` is
        badly scaled, as margins of classifiers are).
    stop : callable, optional
        ``stop(x, f(x)) -> bool``, checked at ``x0`` and after every step; True ends the run
        with ``success``.
    gtol : float, optional
        Also stop successfully when ``max |g| <= gtol``.
    f : callable, optional
        The objective (default ``gradient.f``), evaluated once per iterate in the driver.

    Returns
    -------
    ZerothOrderResult

    Raises
    ------
    TypeError, ValueError
        For a non-callable ``gradient``/``f``/``stop``/``project``, bad ``x0``, ``bounds`` or
        numeric parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_polar.blackbox import CodedGradient
    >>> def f(x):
    ...     return float(np.sum((x - 2.0) ** 2))
    >>> with CodedGradient(f, 4) as gradient:
    ...     result = projected_gradient_descent(
    ...         gradient, np.zeros(4), step_size=0.25, max_iter=50, bounds=(0.0, 1.5), gtol=1e-6
    ...     )
    >>> np.round(result.x, 6), result.n_iter       # the box keeps x from reaching 2
    (array([1.5, 1.5, 1.5, 1.5]), 50)
    """
    if not callable(gradient):
        raise TypeError(f"gradient must be callable, got {type(gradient).__name__}")
    f = getattr(gradient, "f", None) if f is None else f
    if not callable(f):
        raise TypeError("f must be callable (or gradient must have an f attribute)")
    for name, value in (("stop", stop), ("project", project)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    x = np.asarray(x0)
    if x.dtype.kind not in "biuf" or x.ndim != 1:
        raise TypeError(f"x0 must be a 1-D array of real numbers, got {x.dtype} of shape {x.shape}")
    x = x.astype(np.float64)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    if gtol is not None:
        gtol = check_real("gtol", gtol, minimum=0.0)
    if callable(step_size):
        schedule = step_size
    else:
        fixed = check_real("step_size", step_size, minimum=0.0, strict=True)

        def schedule(iteration: int) -> float:
            return fixed
    lower = upper = None
    if bounds is not None:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise TypeError(f"bounds must be a (lower, upper) pair, got {bounds!r}")
        lower, upper = (np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape) for b in bounds)
        if np.any(lower > upper):
            raise ValueError("bounds must have lower <= upper")

    def projected(point: np.ndarray) -> np.ndarray:
        if lower is not None:
            point = np.clip(point, lower, upper)
        return np.asarray(project(point), dtype=np.float64) if project is not None else point

    before = getattr(gradient, "evaluations", 0)
    started = time.perf_counter()
    x = projected(x)
    fun = float(f(x))
    driver_evaluations = 1
    history: list[dict[str, float]] = []

    def result(n_iter: int, success: bool, message: str) -> ZerothOrderResult:
        evaluations = getattr(gradient, "evaluations", 0) - before + driver_evaluations
        return ZerothOrderResult(
            x, fun, n_iter, success, message, evaluations, time.perf_counter() - started, history
        )

    if stop is not None and stop(x, fun):
        return result(0, True, "stop criterion met at x0")
    for iteration in range(1, max_iter + 1):
        tick = time.perf_counter()
        g = np.asarray(gradient(x), dtype=np.float64)
        norm = float(np.linalg.norm(g))
        if gtol is not None and np.max(np.abs(g)) <= gtol:
            return result(iteration - 1, True, "gradient below gtol")
        step = float(schedule(iteration))
        direction = g / norm if normalize and norm > 0 else g
        x = projected(x - step * direction)
        fun = float(f(x))
        driver_evaluations += 1
        history.append({
            "fun": fun, "grad_norm": norm, "step": step, "seconds": time.perf_counter() - tick,
        })
        logger.debug("zeroth-order step %d: f %.6g, |g| %.3g", iteration, fun, norm)
        if stop is not None and stop(x, fun):
            return result(iteration, True, "stop criterion met")
    return result(max_iter, False, "max_iter reached")
