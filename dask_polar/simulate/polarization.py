"""Computational polarization: the virtual workers' CDFs become step functions as ``n`` grows.

One polar level turns a finish-time CDF ``F`` into ``F**2`` (the worse virtual worker waits
for both halves) and ``1 - (1 - F)**2`` (the better one for either). Their mean is ``F`` again,
so at every ``t`` the CDFs form a martingale over the levels (Pilanci 2021); bounded
martingales converge, and here to 0 or 1: each virtual worker becomes surely fast or surely
slow. `polarization` computes the curves and a one-number summary per level, and
`plot_polarization` draws them (matplotlib, ``pip install dask_polar[plot]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_int, check_power_of_two
from ..codes.construction import polarized_cdfs
from ..stragglers import RuntimeModel
from ..stragglers.plot import _check_model, _pyplot, plot_polarized_cdfs

__all__ = ["Polarization", "polarization", "plot_polarization"]


@dataclass
class Polarization:
    """The virtual workers' CDFs at several levels of the polar recursion.

    Attributes
    ----------
    model : str
        ``repr`` of the runtime model.
    n : int
        Code length; levels run from 0 to ``log2(n)``.
    grid : ndarray (T,)
        Times.
    cdf : ndarray (T,)
        One worker's CDF on ``grid``.
    cdfs : dict of int -> ndarray (2**level, T)
        Virtual workers' CDFs at the requested levels; virtual worker ``s`` at level ``l``
        has children ``2s`` (worse) and ``2s + 1`` (better) at level ``l + 1``.
    spread : ndarray (log2(n) + 1,)
        Per level, the mean over virtual workers of ``integral F_i (1 - F_i) dt``, relative to
        level 0: 1 for one worker, tending to 0 as the CDFs become steps.
    """

    model: str
    n: int
    grid: np.ndarray
    cdf: np.ndarray
    cdfs: dict[int, np.ndarray]
    spread: np.ndarray


def _check_levels(levels: Any, depth: int) -> list[int]:
    if levels is None:
        return list(range(depth + 1)) if depth <= 4 else sorted(
            {int(round(x)) for x in np.linspace(0, depth, 5)}
        )
    if isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, np.ndarray, range)):
        raise TypeError(f"levels must be a sequence of integers, got {type(levels).__name__}")
    out = [check_int("level in levels", level, minimum=0) for level in levels]
    if not out:
        raise ValueError("levels must name at least one level, got an empty sequence")
    if max(out) > depth:
        raise ValueError(f"level in levels must be <= log2(n) = {depth}, got {max(out)}")
    return sorted(set(out))


def _grid(model: RuntimeModel, n: int, points: int) -> np.ndarray:
    """Evenly and geometrically spaced times plus quantiles: body and tail both get points."""
    top = 1.0 - 0.01 / n  # the slowest virtual worker waits for the max of n draws
    lo, hi = float(model.ppf(0.0)), float(model.ppf(top))
    if not hi > lo:  # a point mass
        hi = lo + max(abs(lo) * 0.1, 1.0)
    pad = 0.05 * (hi - lo)
    quantiles = np.asarray(model.ppf(np.linspace(0.0, top, points)), dtype=np.float64)
    parts = [np.linspace(lo - pad, hi + pad, points), quantiles]
    low = float(model.ppf(0.001))
    if 0 < low < hi:  # geometric spacing resolves a heavy tail on a log axis
        parts.append(np.geomspace(low, hi, points))
    grid = np.concatenate(parts)
    return np.unique(grid[np.isfinite(grid)])


def polarization(
    model: RuntimeModel, n: int, *, levels: Sequence[int] | None = None, points: int = 512
) -> Polarization:
    """The CDFs ``F_i`` of the virtual workers of computational polarization, level by level.

    Parameters
    ----------
    model : RuntimeModel
        One worker's runtime distribution ``F``.
    n : int
        Code length, a power of two.
    levels : sequence of int, optional
        Levels in ``[0, log2(n)]`` whose curves to keep (``spread`` covers every level).
        Default: every level if ``log2(n) <= 4``, else five evenly spaced ones.
    points : int, default 512
        Time points (``>= 2``) evenly spaced, plus as many quantiles.

    Returns
    -------
    Polarization

    Raises
    ------
    TypeError
        If ``model`` is not a `RuntimeModel`, or ``n``, ``levels``, ``points`` have the wrong
        type.
    ValueError
        If ``n`` is not a power of two, a level is out of range, or ``points < 2``.

    Notes
    -----
    Uses `dask_polar.codes.polarized_cdfs`: ``log2(n)`` vectorised steps over ``n x T``
    values per level.

    Examples
    --------
    >>> from dask_polar.stragglers import ShiftedExponential
    >>> pol = polarization(ShiftedExponential(shift=1.0, scale=0.2), 1024)
    >>> sorted(pol.cdfs)
    [0, 2, 5, 8, 10]
    >>> pol.cdfs[10].shape[0]
    1024
    >>> [round(float(s), 2) for s in pol.spread[[0, 5, 10]]]  # curves tend to steps
    [1.0, 0.39, 0.15]
    """
    model = _check_model(model)
    n = check_power_of_two("n", n)
    points = check_int("points", points, minimum=2)
    depth = n.bit_length() - 1
    kept = _check_levels(levels, depth)
    grid = _grid(model, n, points)
    cdf = np.asarray(model.cdf(grid), dtype=np.float64)
    widths = np.diff(grid)
    cdfs: dict[int, np.ndarray] = {}
    spread = np.empty(depth + 1)
    for level in range(depth + 1):
        virtual = polarized_cdfs(cdf, 1 << level)
        # F (1 - F) on [t_j, t_j+1): zero exactly where a virtual worker is surely done or not
        spread[level] = ((virtual * (1.0 - virtual))[:, :-1] @ widths).mean()
        if level in kept:
            cdfs[level] = virtual
    if spread[0] > 0:
        spread = spread / spread[0]
    return Polarization(model=repr(model), n=n, grid=grid, cdf=cdf, cdfs=cdfs, spread=spread)


def plot_polarization(
    model: RuntimeModel,
    n: int,
    *,
    levels: Sequence[int] | None = None,
    points: int = 512,
    path: str | None = None,
) -> Any:
    """Plot the virtual workers' CDFs at a few levels, and how fast they polarize.

    One panel per level with every virtual worker's CDF (drawn by
    `dask_polar.stragglers.plot_polarized_cdfs`; log time axis for heavy tails), and a last
    panel with
    ``Polarization.spread`` against the level: the mean distance of the CDFs from step
    functions.

    Parameters
    ----------
    model : RuntimeModel
    n : int
        Code length, a power of two.
    levels : sequence of int, optional
        As in `polarization`.
    points : int, default 512
    path : str, optional
        Also save the figure there (PNG at 120 dpi, or any format matplotlib infers).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    TypeError, ValueError
        As `polarization`.
    ImportError
        If matplotlib is not installed (``pip install dask_polar[plot]``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_polar.stragglers import ShiftedExponential
    >>> fig = plot_polarization(ShiftedExponential(shift=1.0, scale=0.2), 64)
    >>> len(fig.axes), fig.axes[-1].get_title()
    (6, 'distance from step functions')
    >>> import matplotlib.pyplot as plt
    >>> plt.close(fig)
    """
    result = polarization(model, n, levels=levels, points=points)
    if path is not None and not isinstance(path, str):
        raise TypeError(f"path must be a string, got {type(path).__name__}")
    plt = _pyplot()
    kept = sorted(result.cdfs)
    fig, axes = plt.subplots(
        1, len(kept) + 1, figsize=(3.2 * (len(kept) + 1), 3.4), squeeze=False,
        layout="constrained",
    )
    plot_polarized_cdfs(model, n, ax=list(axes[0][:-1]), levels=kept, points=points)
    last = axes[0][-1]
    depth = n.bit_length() - 1
    last.semilogy(range(depth + 1), np.maximum(result.spread, 1e-300), "o-")
    last.set_xlabel("level (2**level virtual workers)")
    last.set_ylabel("mean integral of F_i (1 - F_i), relative")
    last.set_title("distance from step functions")
    fig.suptitle(f"computational polarization of {result.model}", fontsize="medium")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
