"""Plots of runtime models and of their polarized virtual workers (needs matplotlib).

matplotlib is imported inside the functions, so ``dask_polar.stragglers`` stays importable
without it; install it with ``pip install dask_polar[plot]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_int, check_power_of_two
from ..codes.construction import polarized_cdfs
from .models import RuntimeModel

__all__ = ["plot_cdf", "plot_polarized_cdfs"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib: pip install dask_polar[plot]"
        ) from err
    return plt


def _check_model(model: object) -> RuntimeModel:
    if not isinstance(model, RuntimeModel):
        raise TypeError(
            f"model must be a RuntimeModel (e.g. ShiftedExponential), "
            f"got {type(model).__name__} {model!r}"
        )
    return model


def _check_points(points: object) -> int:
    return check_int("points", points, minimum=2)


def _heavy_tailed(model: RuntimeModel, grid: np.ndarray) -> bool:
    """Whether a linear time axis would squeeze the body of the distribution into one jump."""
    low = float(model.ppf(0.001))
    return low > 0 and grid[-1] > 10 * float(model.ppf(0.5))


def _time_grid(model: RuntimeModel, upper_q: float, points: int) -> np.ndarray:
    """Times from a little below the support's start to the ``upper_q`` quantile.

    Evenly spaced, or log-spaced from half the 0.1 % quantile for heavy tails.
    """
    lo, hi = float(model.ppf(0.0)), float(model.ppf(upper_q))
    if np.isfinite(hi) and hi > 0 and _heavy_tailed(model, np.array([hi])):
        return np.geomspace(0.5 * float(model.ppf(0.001)), hi, points)
    if not hi > lo:  # a point mass: show one unit (or 10 %) either side
        hi = lo + max(abs(lo) * 0.1, 1.0)
    pad = 0.05 * (hi - lo)
    grid = np.linspace(lo - pad, hi + pad, points)
    # include the support's ends exactly, so jumps of step CDFs are drawn at the right time
    return np.unique(np.concatenate([grid, [lo, hi]]))


def plot_cdf(model: RuntimeModel, ax: Any = None, *, points: int = 512) -> Any:
    """Plot the CDF of one worker's task time.

    Parameters
    ----------
    model : RuntimeModel
        The runtime model to draw.
    ax : matplotlib.axes.Axes, optional
        Where to draw; by default a new figure with one Axes.
    points : int, default 512
        Number of time points (``>= 2``).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on.

    Raises
    ------
    TypeError
        If ``model`` is not a `RuntimeModel` or ``points`` not an int.
    ValueError
        If ``points < 2``.
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_polar.stragglers import Bimodal
    >>> ax = plot_cdf(Bimodal(base=1.0, slow_prob=0.2, slowdown=4.0, jitter=0.3))
    >>> ax.get_xlabel()
    'task time t (s)'
    >>> import matplotlib.pyplot as plt
    >>> plt.close(ax.figure)
    """
    model = _check_model(model)
    points = _check_points(points)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots()
    grid = _time_grid(model, 0.999, points)
    ax.plot(grid, model.cdf(grid), drawstyle="steps-post", label=repr(model))
    ax.set_xlabel("task time t (s)")
    ax.set_ylabel("F(t) = P(T <= t)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(repr(model))
    return ax


def plot_polarized_cdfs(
    model: RuntimeModel,
    n: int,
    ax: Any = None,
    levels: Sequence[int] | None = None,
    *,
    points: int = 512,
) -> Any:
    """Plot the CDFs ``F_i`` of the virtual workers of computational polarization.

    At level ``l`` of the polar recursion there are ``2**l`` virtual workers; each level
    replaces a CDF ``F`` by ``F**2`` (worse child) and ``1 - (1 - F)**2`` (better child).
    Their mean over ``i`` stays equal to ``F`` at every level (a functional martingale), while
    the individual CDFs converge to step functions: each virtual worker becomes either
    almost surely fast or almost surely slow (Pilanci 2021).

    Parameters
    ----------
    model : RuntimeModel
        One worker's runtime distribution ``F``.
    n : int
        Code length, a power of two; the deepest level is ``log2(n)``.
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        One Axes per level. By default a new figure with one panel per level. A single Axes
        is accepted when only one level is drawn (the default level is then ``log2(n)``).
    levels : sequence of int, optional
        Levels in ``[0, log2(n)]`` to draw. Default: every level if ``log2(n) <= 4``, else
        five levels evenly spaced from 0 to ``log2(n)``.
    points : int, default 512
        Number of time points (``>= 2``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the panels.

    Raises
    ------
    TypeError
        If ``model`` is not a `RuntimeModel`, or ``n``, ``levels`` or ``points`` have the
        wrong type.
    ValueError
        If ``n`` is not a power of two, a level is outside ``[0, log2(n)]``, ``levels`` is
        empty, or the number of Axes differs from the number of levels.
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_polar.stragglers import ShiftedExponential
    >>> fig = plot_polarized_cdfs(ShiftedExponential(shift=0.1, scale=0.05), 64)
    >>> [ax.get_title() for ax in fig.axes]  # doctest: +NORMALIZE_WHITESPACE
    ['level 0: 1 virtual worker', 'level 2: 4 virtual workers',
     'level 3: 8 virtual workers', 'level 4: 16 virtual workers',
     'level 6: 64 virtual workers']
    >>> import matplotlib.pyplot as plt
    >>> plt.close(fig)
    """
    model = _check_model(model)
    n = check_power_of_two("n", n)
    points = _check_points(points)
    depth = n.bit_length() - 1
    single_ax = ax is not None and not isinstance(ax, (Sequence, np.ndarray))
    if levels is None:
        if single_ax:
            levels = [depth]
        elif depth <= 4:
            levels = list(range(depth + 1))
        else:
            levels = sorted({int(round(x)) for x in np.linspace(0, depth, 5)})
    elif isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, np.ndarray)):
        raise TypeError(
            f"levels must be a sequence of integers, got {type(levels).__name__} {levels!r}"
        )
    levels = [check_int("level in levels", level, minimum=0) for level in levels]
    if not levels:
        raise ValueError("levels must name at least one level, got an empty sequence")
    if max(levels) > depth:
        raise ValueError(f"level in levels must be <= log2(n) = {depth}, got {max(levels)}")
    if ax is not None:
        axes = [ax] if single_ax else list(np.ravel(ax))
        if len(axes) != len(levels):
            raise ValueError(
                f"ax must hold one Axes per level: got {len(axes)} Axes for {len(levels)} "
                f"levels {levels}"
            )

    plt = _pyplot()
    if ax is None:
        fig, grid_axes = plt.subplots(
            1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True, squeeze=False,
            layout="constrained",
        )
        axes = list(grid_axes[0])
    else:
        fig = axes[0].figure

    # the worst virtual worker finishes at the max of n draws: reach its upper tail too
    grid = _time_grid(model, 1.0 - 0.01 / n, points)
    cdf = np.asarray(model.cdf(grid), dtype=np.float64)
    log_time = _heavy_tailed(model, grid)
    colormap = plt.get_cmap("viridis")
    for panel, level in zip(axes, levels):
        count = 1 << level
        virtual = polarized_cdfs(cdf, count)
        for i, curve in enumerate(virtual):
            panel.plot(
                grid, curve, drawstyle="steps-post", linewidth=0.8,
                color=colormap(i / max(count - 1, 1)),
            )
        panel.plot(grid, cdf, "k--", linewidth=1.0, label="F (one worker)")
        noun = "virtual worker" if count == 1 else "virtual workers"
        panel.set_title(f"level {level}: {count} {noun}")
        panel.set_xlabel("task time t (s)")
        panel.set_ylim(-0.02, 1.02)
        if log_time:
            panel.set_xscale("log")
    axes[0].set_ylabel("F_i(t)")
    axes[0].legend(loc="lower right", fontsize="small")
    return fig
