"""Polar code construction: which positions carry data (information set) and how reliable each is.

Everything here follows one recursion, `polarize`. For the kernel ``F = [[1, 0], [1, 1]]``
the encoder splits ``u`` into halves, ``x_L = (u_L + u_R) G'`` and ``x_R = u_R G'``. The
decoder recovers ``u_L`` from ``x_L - x_R`` (needs *both* halves: the worse virtual worker)
and then ``u_R`` from either half (the better one). Applied to per-output quantities:

* arrival masks: ``worse = and``, ``better = or`` (genie-aided SC decodability);
* success probabilities ``p = 1 - eps``: ``worse = p**2``, ``better = 1 - (1 - p)**2``
  (Arikan's erasure recursion, ``z -> 2z - z**2`` and ``z -> z**2``);
* finish-time CDFs ``F(t)`` (Pilanci 2021, computational polarization): the worse virtual
  worker finishes at the max of two, CDF ``F**2``; the better one at the min,
  ``1 - (1 - F)**2``.

The children of each node are kept in the encoder's order (first half = worse), so position
``i`` of the result is position ``i`` of ``u``; a bit-reversed ranking here would silently
double the results needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import check_power_of_two, check_probability

__all__ = [
    "check_runtimes",
    "polarize",
    "erasure_probabilities",
    "polarized_cdfs",
    "expected_finish_times",
    "information_set",
]

Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def polarize(channel: np.ndarray, worse: Combine, better: Combine) -> np.ndarray:
    """Apply the polar recursion to a per-output quantity.

    Parameters
    ----------
    channel : ndarray of shape ``(n, *trailing)``
        One value per coded output (n a power of two); trailing axes are carried along
        (e.g. a time grid).
    worse, better : callable ``(left, right) -> array``
        How the two halves combine into the worse (first-half) and better (second-half)
        child at every level.

    Returns
    -------
    ndarray of shape ``(n, *trailing)``
        The value seen by each input position ``u_i``.

    Notes
    -----
    ``log2(n)`` vectorised steps, each over ``n`` entries: O(n log n) work.
    """
    n = channel.shape[0]
    check_power_of_two("channel.shape[0]", n)
    trailing = channel.shape[1:]
    level = channel.reshape(1, n, *trailing)
    while level.shape[1] > 1:
        half = level.shape[1] // 2
        left, right = level[:, :half], level[:, half:]
        level = np.stack([worse(left, right), better(left, right)], axis=1)
        level = level.reshape(-1, half, *trailing)
    return level.reshape(n, *trailing)


def erasure_probabilities(n: int, straggler_prob: float) -> np.ndarray:
    """Probability that SC decoding (with a genie for earlier positions) loses each ``u_i``.

    Parameters
    ----------
    n : int
        Code length, a power of two.
    straggler_prob : float
        Probability ``eps`` in (0, 1) that one worker's result is missing (erased).

    Returns
    -------
    ndarray of shape ``(n,)``
        Erasure probability of each input position under i.i.d. erasures.

    Examples
    --------
    >>> erasure_probabilities(2, 0.5)
    array([0.75, 0.25])
    """
    n = check_power_of_two("n", n)
    eps = check_probability("straggler_prob", straggler_prob)
    success = polarize(np.full(n, 1.0 - eps), lambda a, b: a * b, lambda a, b: a + b - a * b)
    return 1.0 - success


def polarized_cdfs(cdf_values: np.ndarray, n: int) -> np.ndarray:
    """CDFs of the ``n`` virtual workers, from one worker's CDF on a time grid.

    Parameters
    ----------
    cdf_values : ndarray of shape ``(T,)``
        ``F(t)`` of one worker's finish time at ``T`` grid points.
    n : int
        Number of workers, a power of two.

    Returns
    -------
    ndarray of shape ``(n, T)``
        ``F_i(t)`` for each virtual worker ``i``; their mean over ``i`` equals ``F`` at every
        level of the recursion (the functional martingale of Pilanci 2021).
    """
    n = check_power_of_two("n", n)
    cdf_values = np.clip(np.asarray(cdf_values, dtype=np.float64), 0.0, 1.0)
    grid = np.broadcast_to(cdf_values, (n, cdf_values.size))
    return polarize(grid, lambda a, b: a * b, lambda a, b: a + b - a * b)


def check_runtimes(runtimes: Any) -> Any:
    """``runtimes`` if it can design a polar code (finish-time samples, or an object with
    ``cdf`` and ``ppf``), else a TypeError/ValueError naming it."""
    _runtime_cdf(runtimes, points=8)
    return runtimes


def _runtime_cdf(runtimes: Any, points: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A time grid and one worker's CDF on it, from samples or a distribution object."""
    if hasattr(runtimes, "cdf") and hasattr(runtimes, "ppf"):
        # a quantile grid follows the mass: an evenly spaced one would put the whole body of
        # a heavy-tailed distribution in its first cell
        grid = np.unique(np.asarray(runtimes.ppf(np.linspace(1e-6, 1 - 1e-6, points)), dtype=np.float64))
        grid = grid[np.isfinite(grid)]
        return grid, np.asarray(runtimes.cdf(grid), dtype=np.float64)
    try:
        samples = np.asarray(runtimes, dtype=np.float64)
    except (TypeError, ValueError):  # e.g. a string: name the argument, not the conversion
        raise TypeError(
            "runtimes must be finish-time samples (an array of numbers) or an object with "
            f"cdf and ppf, got {type(runtimes).__name__} {runtimes!r:.60}"
        ) from None
    if samples.ndim != 1 or samples.size < 2:
        raise ValueError(
            "runtimes must be a 1-D array of at least 2 finish-time samples or an object "
            f"with .cdf and .ppf methods, got shape {samples.shape}"
        )
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise ValueError("runtimes samples must be finite and non-negative")
    grid = np.unique(np.concatenate([[0.0], np.sort(samples)]))
    cdf = np.searchsorted(np.sort(samples), grid, side="right") / samples.size
    return grid, cdf


def expected_finish_times(n: int, runtimes: Any) -> np.ndarray:
    """Expected finish time of each virtual worker under computational polarization.

    Parameters
    ----------
    n : int
        Code length, a power of two.
    runtimes : 1-D array of finish-time samples, or object with ``cdf`` and ``ppf``
        One worker's runtime distribution (i.i.d. across workers), e.g. measured task times
        or a ``scipy.stats`` frozen distribution.

    Returns
    -------
    ndarray of shape ``(n,)``
        ``E[T_i] = t_0 + integral of (1 - F_i(t)) dt`` on the grid.
    """
    grid, cdf = _runtime_cdf(runtimes)
    virtual = polarized_cdfs(cdf, n)
    survival = 1.0 - virtual
    widths = np.diff(grid)
    # right-continuous empirical CDF: survival is constant on [t_j, t_{j+1})
    return grid[0] + survival[:, :-1] @ widths


def information_set(n: int, k: int, reliability: np.ndarray) -> np.ndarray:
    """The ``k`` most reliable positions, sorted ascending (ties go to the later position).

    Parameters
    ----------
    reliability : ndarray of shape ``(n,)``
        Larger is better (e.g. ``-erasure_probabilities`` or ``-expected_finish_times``).
    """
    # stable sort on (-reliability, -index): later positions win ties, since they sit
    # deeper on the better side of the butterfly.
    order = np.lexsort((-np.arange(n), -np.asarray(reliability)))
    return np.sort(order[:k])
