"""Exponential families with their canonical links: the per-sample pieces of a GLM.

With the canonical link, the loss of one sample is ``b(eta) - y * eta`` (up to terms in
``y`` alone), so its derivative in ``eta`` is ``mean(eta) - y`` and its second derivative is
``weights(eta) = b''(eta)``. That is all the solvers need: the gradient is
``A.T @ (mean - y) / m`` and the Hessian ``A.T @ diag(weights) @ A / m``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Family", "Gaussian", "Binomial", "Poisson"]


class Family:
    """One exponential family with its canonical link (base class).

    Subclasses define `loss`, `mean` and `weights`; `link` gives the starting intercept.
    """

    name = "family"

    def loss(self, eta: np.ndarray, y: np.ndarray) -> float:
        """Sum over samples of the negative log-likelihood (without terms in ``y`` alone)."""
        raise NotImplementedError

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """``E[y]`` at the linear predictor ``eta`` (the inverse link)."""
        raise NotImplementedError

    def weights(self, eta: np.ndarray) -> np.ndarray:
        """Second derivative of the loss in ``eta``: the IRLS weights ``D``."""
        raise NotImplementedError

    def link(self, mu: float) -> float:
        """The linear predictor whose mean is ``mu`` (the intercept of a constant model)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gaussian(Family):
    """Least squares: ``loss = (eta - y)**2 / 2``, identity link."""

    name = "gaussian"

    def loss(self, eta: np.ndarray, y: np.ndarray) -> float:
        return 0.5 * float(np.dot(eta - y, eta - y))

    def mean(self, eta: np.ndarray) -> np.ndarray:
        return eta

    def weights(self, eta: np.ndarray) -> np.ndarray:
        return np.ones_like(eta)

    def link(self, mu: float) -> float:
        return float(mu)


class Binomial(Family):
    """Logistic regression: ``loss = log(1 + exp(eta)) - y * eta``, ``y`` in {0, 1}."""

    name = "binomial"

    def loss(self, eta: np.ndarray, y: np.ndarray) -> float:
        # logaddexp(0, eta) = log(1 + exp(eta)) without overflow for large eta
        return float(np.sum(np.logaddexp(0.0, eta)) - np.dot(y, eta))

    def mean(self, eta: np.ndarray) -> np.ndarray:
        # the logistic function, evaluated on -|eta| so exp never overflows
        e = np.exp(-np.abs(eta))
        return np.where(eta >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def weights(self, eta: np.ndarray) -> np.ndarray:
        mu = self.mean(eta)
        return mu * (1.0 - mu)

    def link(self, mu: float) -> float:
        mu = min(max(float(mu), 1e-12), 1 - 1e-12)
        return float(np.log(mu / (1.0 - mu)))


class Poisson(Family):
    """Poisson regression: ``loss = exp(eta) - y * eta``, log link, ``y >= 0``."""

    name = "poisson"

    def loss(self, eta: np.ndarray, y: np.ndarray) -> float:
        with np.errstate(over="ignore"):  # exp overflows to inf: the line search backtracks
            return float(np.sum(np.exp(eta)) - np.dot(y, eta))

    def mean(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(eta)

    def weights(self, eta: np.ndarray) -> np.ndarray:
        return self.mean(eta)

    def link(self, mu: float) -> float:
        return float(np.log(max(float(mu), 1e-12)))
