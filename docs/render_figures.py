"""Draw the theory page's figures with dask_polar's own plotting functions.

Run by ``docs/conf.py`` at every build; writes PNG files and ``figures.rst`` (the figure
directives the theory page includes) into ``docs/_generated/``. Without matplotlib it writes
a note instead of the figures and logs a warning (which fails a ``-W`` build: install the
``docs`` extra). Standalone: ``python docs/render_figures.py [outdir]``.
"""

from __future__ import annotations

import io
import logging
import pathlib
import sys
import textwrap
from typing import Any

import numpy as np

#: one worker's task time in the figures: a fixed cost plus an exponential tail
SHIFT, SCALE = 1.0, 0.5
#: code length of the figures
N_CDFS = 64
N_EPS, EPS = 1024, 0.5


def _write(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` unless ``path`` holds it already (Sphinx then keeps the page cached)."""
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def _save(fig: Any, path: pathlib.Path, plt: Any, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    _write(path, buffer.getvalue())


def _cdfs(out: pathlib.Path, plt: Any) -> str:
    from dask_polar.stragglers import ShiftedExponential, plot_polarized_cdfs

    model = ShiftedExponential(shift=SHIFT, scale=SCALE)
    fig = plot_polarized_cdfs(model, N_CDFS)
    _save(fig, out / "polarized_cdfs.png", plt, dpi=100)
    return textwrap.dedent(f"""\
        .. figure:: /_generated/polarized_cdfs.png
           :alt: CDFs of the virtual workers at several levels of the polar recursion
           :width: 100%

           ``dask_polar.stragglers.plot_polarized_cdfs({model!r}, {N_CDFS})``: one worker's
           task-time CDF ``F`` (dashed) and the CDFs ``F_i`` of the ``2**level`` virtual
           workers at several levels of the recursion. Each level replaces ``F`` by ``F**2``
           (the worse child) and ``1 - (1 - F)**2`` (the better one); the curves spread
           towards step functions while their mean stays ``F``.
        """)


def _erasure(out: pathlib.Path, plt: Any) -> str:
    from dask_polar.codes import erasure_probabilities

    z = erasure_probabilities(N_EPS, EPS)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    left.plot(np.arange(N_EPS), z, ".", markersize=2)
    left.set_xlabel("input position i")
    left.set_ylabel("erasure probability of u_i")
    left.set_title(f"n = {N_EPS}, straggler probability {EPS}")
    right.plot(np.arange(1, N_EPS + 1) / N_EPS, np.sort(z), "-")
    right.set_xlabel("fraction of positions (sorted)")
    right.set_title("sorted: most are near 0 or 1")
    for ax in (left, right):
        ax.set_ylim(-0.02, 1.02)
    _save(fig, out / "erasure_probabilities.png", plt, dpi=100)
    share = float(np.mean((z < 0.01) | (z > 0.99)))
    return textwrap.dedent(f"""\
        .. figure:: /_generated/erasure_probabilities.png
           :alt: erasure probability of every input position of a polar code
           :width: 100%

           ``dask_polar.codes.erasure_probabilities({N_EPS}, {EPS})``: the probability that
           SC decoding loses each input position when every worker straggles with
           probability {EPS}. {100 * share:.0f} % of the positions are below 0.01 or above
           0.99: polarized.
        """)


def _polarization(out: pathlib.Path, plt: Any) -> str:
    from dask_polar.simulate import plot_polarization
    from dask_polar.stragglers import Pareto

    model = Pareto(shift=1.0, scale=0.1, alpha=1.5)
    fig = plot_polarization(model, N_EPS)
    _save(fig, out / "polarization_spread.png", plt, dpi=90)
    return textwrap.dedent(f"""\
        .. figure:: /_generated/polarization_spread.png
           :alt: polarization of a heavy-tailed runtime distribution, and its speed
           :width: 100%

           ``dask_polar.simulate.plot_polarization({model!r}, {N_EPS})``: the same picture
           for a heavy-tailed (Pareto) task time, with the mean distance of the virtual
           workers' CDFs from step functions per level (last panel).
        """)


FIGURES = {"cdfs": _cdfs, "erasure": _erasure, "polarization": _polarization}


def render(out: pathlib.Path, logger: Any = None) -> None:
    """Write the figures and ``<name>.rst`` per figure into ``out``."""
    logger = logger or logging.getLogger(__name__)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning(
            "matplotlib is not installed, the theory figures are left out "
            "(pip install dask_polar[docs])"
        )
        plt = None
    for name, draw in FIGURES.items():
        if plt is None:
            text = ".. note:: This figure is drawn at build time and needs matplotlib.\n"
        else:
            text = draw(out, plt)
        _write(out / f"figure_{name}.rst", text.encode())


if __name__ == "__main__":
    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))
    render(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here / "_generated")
