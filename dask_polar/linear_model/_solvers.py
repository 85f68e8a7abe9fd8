"""Solvers for GLMs whose data products run as coded, straggler-resilient jobs.

`Design` wraps a `CodedMatrix` (``A`` encoded once, ``A.T`` encoded once) and the optional
intercept column; `gradient_descent` and `newton` only ever touch the data through it.
What each iteration costs in coded jobs, and what travels to the workers:

* gradient descent: ``A.T @ r`` (a vector of length m out) and ``A @ d`` (a vector of
  length p out), where ``d`` is the search direction. The line search evaluates the
  objective at ``x + t d`` from ``eta + t (A @ d)``, without further products.
* Newton / IRLS: one job ``A.T @ [D A | D 1 | r]`` gives the Hessian ``A.T D A``, its
  intercept row and the gradient together, then ``A @ d`` for the line search. ``D``
  changes every iteration; it is put on the *right-hand side*, which is shipped, never
  encoded, so nothing is re-encoded. The price is traffic: the m x (p + 2) right-hand side
  travels to every coded task, where gradient descent ships vectors only.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._families import Family

__all__ = ["Design", "Objective", "SolverResult", "gradient_descent", "newton"]

logger = logging.getLogger("dask_polar")

#: Sufficient-decrease constant of the Armijo test.
ARMIJO = 1e-4
#: Objective values remembered by the non-monotone line search of gradient descent.
MEMORY = 10
#: Step halvings before the line search gives up (the objective cannot decrease further
#: at the precision of the coded products).
MAX_HALVINGS = 60


class Design:
    """The data matrix of a GLM, ``[A | 1]`` with an intercept, behind coded products.

    Parameters
    ----------
    coded : CodedMatrix
        ``A`` (m x p), encoded once; ``coded.T`` is encoded on first use.
    source : numpy or dask array
        ``A`` itself: the Newton solver forms ``D A`` from it as a right-hand side.
    fit_intercept : bool
        Append a column of ones (handled outside the coded products: it needs no data).
    """

    def __init__(self, coded: Any, source: Any, fit_intercept: bool) -> None:
        self.coded = coded
        self.source = source
        self.intercept = fit_intercept
        self.m, self.p = coded.shape
        self.size = self.p + int(fit_intercept)
        self.products = 0

    def split(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Coefficients and intercept of a full parameter vector."""
        return (x[: self.p], float(x[self.p])) if self.intercept else (x, 0.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``[A | 1] @ x``: one coded job (none when the coefficients are all zero)."""
        w, b = self.split(x)
        if not w.any():
            return np.full(self.m, b)
        self.products += 1
        return self.coded @ w + b

    def adjoint(self, r: np.ndarray) -> np.ndarray:
        """``[A | 1].T @ r``: one coded job with ``A.T``."""
        self.products += 1
        out = self.coded.T @ r
        return np.append(out, r.sum()) if self.intercept else out

    def gradient_and_hessian(self, r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[A | 1].T @ r`` and ``[A | 1].T @ diag(d) @ [A | 1]`` in one coded job."""
        weighted = self.source * d[:, None]
        if not isinstance(weighted, np.ndarray):  # a dask array: D A is a right-hand side
            weighted = np.asarray(weighted.compute())
        columns = [weighted, d[:, None]] if self.intercept else [weighted]
        rhs = np.hstack([*columns, r[:, None]])
        self.products += 1
        out = self.coded.T.matmul(rhs)  # (p, p + 2) or (p, p + 1)
        p = self.p
        gram = 0.5 * (out[:, :p] + out[:, :p].T)  # decoding leaves tiny asymmetries
        gradient = out[:, -1]
        if self.intercept:
            corner = np.array([[d.sum()]])
            gram = np.block([[gram, out[:, p : p + 1]], [out[:, p : p + 1].T, corner]])
            gradient = np.append(gradient, r.sum())
        return gradient, gram


@dataclass
class Objective:
    """``F(x) = loss(eta, y) / m + alpha / 2 * ||w||**2`` (the intercept is not penalised)."""

    family: Family
    y: np.ndarray
    alpha: float
    design: Design

    def value(self, eta: np.ndarray, x: np.ndarray) -> float:
        w, _ = self.design.split(x)
        # a trial step may overshoot: an infinite value makes the line search backtrack
        with np.errstate(over="ignore", invalid="ignore"):
            return self.family.loss(eta, self.y) / self.y.size + 0.5 * self.alpha * float(w @ w)

    def penalty_gradient(self, x: np.ndarray) -> np.ndarray:
        out = self.alpha * x
        if self.design.intercept:
            out[-1] = 0.0
        return out

    def gradient(self, eta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """One coded job: ``A.T @ (mean - y) / m`` plus the penalty."""
        r = self.family.mean(eta) - self.y
        return self.design.adjoint(r) / self.y.size + self.penalty_gradient(x)

    def curvature(self, eta: np.ndarray, direction: np.ndarray, image: np.ndarray) -> float:
        """``direction @ H @ direction`` from ``image = [A | 1] @ direction`` (no product)."""
        w, _ = self.design.split(direction)
        weights = self.family.weights(eta)
        return float(image @ (weights * image)) / self.y.size + self.alpha * float(w @ w)


@dataclass
class SolverResult:
    """What a solver returns."""

    x: np.ndarray
    n_iter: int
    converged: bool
    message: str
    history: list[dict[str, float]] = field(default_factory=list)


def _line_search(
    objective: Objective,
    eta: np.ndarray,
    x: np.ndarray,
    direction: np.ndarray,
    image: np.ndarray,
    slope: float,
    reference: float,
    step: float,
) -> tuple[float, float] | None:
    """Backtrack from ``step`` until ``F(x + t d) <= reference + ARMIJO * t * slope``.

    The trial objective values come from ``eta + t * image``: no coded product. Returns
    ``(t, F(x + t d))``, or None if no step decreases the objective.
    """
    for _ in range(MAX_HALVINGS):
        value = objective.value(eta + step * image, x + step * direction)
        if np.isfinite(value) and value <= reference + ARMIJO * step * slope:
            return step, value
        step *= 0.5
    return None


def _start(objective: Objective, x0: np.ndarray) -> tuple[np.ndarray, float]:
    eta = objective.design.forward(x0)
    return eta, objective.value(eta, x0)


def gradient_descent(
    objective: Objective,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    step_size: float | None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> SolverResult:
    """Gradient descent: a fixed step, or Barzilai-Borwein steps with a line search.

    Parameters
    ----------
    objective : Objective
    x0 : ndarray
        Starting parameters (coefficients, then the intercept if any).
    max_iter : int
    tol : float
        Stop when ``max |gradient| <= tol``.
    step_size : float or None
        A fixed step; None: the Barzilai-Borwein step ``s.s / s.y`` (the exact line
        minimiser along ``-g`` at the first iteration), backtracked until the non-monotone
        Armijo test against the largest of the last `MEMORY` objective values passes.
    callback : callable, optional
        Called with each iteration's history entry.

    Returns
    -------
    SolverResult

    Notes
    -----
    Two coded jobs per iteration: the gradient ``A.T @ r`` and ``A @ d``. The non-monotone
    rule (Grippo, Lampariello & Lucidi 1986; Raydan 1997) keeps the Barzilai-Borwein steps,
    which converge far faster than steepest descent on ill-conditioned problems, while
    still guaranteeing convergence.
    """
    x = x0.copy()
    eta, value = _start(objective, x)
    gradient = objective.gradient(eta, x)
    recent = collections.deque([value], maxlen=MEMORY)
    previous: tuple[np.ndarray, np.ndarray] | None = None  # (s, y) of the last step
    history: list[dict[str, float]] = []
    for iteration in range(1, max_iter + 1):
        started = time.perf_counter()
        if np.max(np.abs(gradient)) <= tol:
            return SolverResult(x, iteration - 1, True, "gradient below tol", history)
        direction = -gradient
        image = objective.design.forward(direction)
        slope = float(gradient @ direction)
        if step_size is not None:
            step = step_size
            value = objective.value(eta + step * image, x + step * direction)
            if not np.isfinite(value):
                return SolverResult(
                    x, iteration - 1, False, f"diverged: step_size={step_size:g} is too large",
                    history,
                )
        else:
            if previous is not None and float(previous[0] @ previous[1]) > 0:
                s, change = previous
                trial = float(s @ s) / float(s @ change)
            else:
                curvature = objective.curvature(eta, direction, image)
                trial = -slope / curvature if curvature > 0 else 1.0
            found = _line_search(objective, eta, x, direction, image, slope, max(recent), trial)
            if found is None:
                return SolverResult(
                    x, iteration - 1, False,
                    "line search failed: the objective no longer decreases (at the precision "
                    "of the coded products)", history,
                )
            step, value = found
        x = x + step * direction
        eta = eta + step * image  # no product: A @ x follows from A @ d
        new_gradient = objective.gradient(eta, x)
        previous = (step * direction, new_gradient - gradient)
        entry = _entry(iteration, value, gradient, step, started, objective)
        gradient = new_gradient
        recent.append(value)
        history.append(entry)
        if callback is not None:
            callback(entry)
    converged = bool(np.max(np.abs(gradient)) <= tol)
    return SolverResult(x, max_iter, converged, "max_iter reached", history)


def _solve(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The Newton direction ``-H^-1 g``; least squares if ``H`` is singular."""
    try:
        factor = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:  # singular (collinear columns, alpha = 0): minimum norm
        return -np.linalg.lstsq(hessian, gradient, rcond=None)[0]
    return -np.linalg.solve(factor.T, np.linalg.solve(factor, gradient))


def newton(
    objective: Objective,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> SolverResult:
    """Damped Newton (IRLS for GLMs) with the Hessian ``A.T D A`` from a coded job.

    Parameters
    ----------
    objective : Objective
    x0 : ndarray
    max_iter : int
    tol : float
        Stop when ``max |gradient| <= tol``.
    callback : callable, optional

    Returns
    -------
    SolverResult

    Notes
    -----
    Per iteration, one coded job ``A.T @ [D A | D 1 | r]`` (Hessian, intercept terms and
    gradient together) and one ``A @ d`` for the Armijo backtracking from the full step.
    For least squares the first step is exact. The p x p solve runs in the driver
    (Cholesky; least squares if the Hessian is singular).
    """
    design = objective.design
    x = x0.copy()
    eta, value = _start(objective, x)
    history: list[dict[str, float]] = []
    m = objective.y.size
    for iteration in range(1, max_iter + 1):
        started = time.perf_counter()
        residual = objective.family.mean(eta) - objective.y
        weights = objective.family.weights(eta)
        gradient, hessian = design.gradient_and_hessian(residual, weights)
        gradient = gradient / m + objective.penalty_gradient(x)
        if np.max(np.abs(gradient)) <= tol:
            return SolverResult(x, iteration - 1, True, "gradient below tol", history)
        hessian = hessian / m
        penalised = np.full(design.size, objective.alpha)
        if design.intercept:
            penalised[-1] = 0.0
        hessian[np.diag_indices_from(hessian)] += penalised
        direction = _solve(hessian, gradient)
        image = design.forward(direction)
        slope = float(gradient @ direction)
        if slope >= 0:  # not a descent direction: the Hessian is too inaccurate to use
            direction, slope = -gradient, -float(gradient @ gradient)
            image = design.forward(direction)
        found = _line_search(objective, eta, x, direction, image, slope, value, 1.0)
        if found is None:
            return SolverResult(
                x, iteration - 1, False,
                "line search failed: the objective no longer decreases (at the precision of "
                "the coded products)", history,
            )
        step, value = found
        x = x + step * direction
        eta = eta + step * image
        entry = _entry(iteration, value, gradient, step, started, objective)
        history.append(entry)
        if callback is not None:
            callback(entry)
    # the gradient at the last iterate needs one more job: report max_iter as not converged
    return SolverResult(x, max_iter, False, "max_iter reached", history)


def _entry(
    iteration: int, value: float, gradient: np.ndarray, step: float, started: float,
    objective: Objective,
) -> dict[str, float]:
    """One history entry: the loss after the step, the gradient the step started from."""
    entry = {
        "iteration": iteration,
        "loss": value,
        "grad_norm": float(np.max(np.abs(gradient))),
        "step": float(step),
        "seconds": time.perf_counter() - started,
        "products": objective.design.products,
    }
    logger.debug("GLM iteration %d: loss %.6g, |g| %.3g, step %.3g", iteration, value,
                 entry["grad_norm"], step)
    return entry
