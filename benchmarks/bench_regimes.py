"""The matrix of regimes on the threads scheduler: every method, side by side, in one run.

What is measured (issue 19; DESIGN.md section 4: ratios measured side by side in one run):

* Two products: thin ``B`` (``A`` (256 k) x 1024, ``B`` 1024 x 64) and square ``B``
  (``A`` (64 k) x 512, ``B`` 512 x 512); ``A`` in ``k`` row blocks, float64, in memory.
* Two rates: ``k / n = 1/2`` (k = 32) and ``3/4`` (k = 48), n = 64.
* Four straggler cells: none, ``Bimodal`` with 5 % and 20 % of tasks 15x slower, and a
  ``ShiftedExponential``, all with a base of 100 ms per task spent **blocked** in
  ``time.sleep`` (``Faults(mode="block")``): real stragglers, which poll nothing.
* Seven methods: plain Dask (``A @ B``; with stragglers, a ``map_blocks`` that sleeps its
  block's delay, on ``k`` threads so that each block has its worker, as the coded methods
  do), ``uncoded`` (n = k), backup tasks (``uncoded``, ``backup=3``), replication x2
  (n = 2k, at both rates), MDS, polar (``systematic=False``) and systematic polar.
* Per run (after one untimed warm-up run of each method per cell; cells without
  stragglers take three times the seeds, their runs are short and noisy): the wall time of ``compute()`` (the graph is built before the clock starts) and
  this process's CPU time over it (all threads). The methods of a seed run back to back
  on the same straggler draws (``stragglers=model, seed=seed``), in an order rotated from
  seed to seed. The floor of a seed: the k-th smallest of the n injected delays (no code
  beats it; it leaves out the compute).

Targets (printed PASS/MISS, from the issue; a miss is reported, not raised):

* no stragglers, systematic polar against plain: wall <= 1.15x, CPU <= 1.3x;
* with stragglers: systematic polar <= 0.5x uncoded in every cell, <= 1.6x the floor at
  20 %, and <= 1.25x the best of replication and backup tasks at 5 %.

``python -m benchmarks --quick regimes``: 5 seeds per cell (about 4 minutes);
``python -m benchmarks regimes``: 15 seeds. Results go to ``benchmarks/results/regimes.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import STRAGGLER_MODE, straggling

__all__ = ["run"]

SEED = 20_261_203
N = 64
RATES = {"1/2": 32, "3/4": 48}  # rate -> k
PRODUCTS = {"thin": (256, 1024, 64), "square": (64, 512, 512)}  # rows per block, p, q
BASE = 0.1


def _cells() -> dict[str, Any]:
    from dask_polar.stragglers import Bimodal, ShiftedExponential

    return {
        "none": None,
        "bimodal 5%": Bimodal(base=BASE, slow_prob=0.05, slowdown=15.0, jitter=0.5),
        "bimodal 20%": Bimodal(base=BASE, slow_prob=0.2, slowdown=15.0, jitter=0.5),
        "shifted exp": ShiftedExponential(shift=BASE, scale=BASE),
    }


METHODS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "uncoded": {"code": "uncoded"},
    "backup": {"code": "uncoded", "backup": 3.0},
    "replication": {"code": "replication", "redundancy": 2},
    "mds": {"code": "mds", "n": N},
    "polar": {"code": "polar", "n": N, "systematic": False},
    "polar-systematic": {"code": "polar", "n": N, "systematic": True},
}


def _once(method: str, A: Any, B: Any, k: int, model: Any, seed: int) -> dict[str, Any]:
    import dask

    import dask_polar
    from dask_polar.array.baselines import plain_matmul

    options: dict[str, Any] = {}
    if method == "plain":  # on k threads with stragglers: each block has its worker
        C = plain_matmul(A, B, model, seed=seed)
        options = {} if model is None else {"num_workers": k}
    else:
        C = dask_polar.coded_matmul(
            A, B, stragglers=straggling(model), seed=seed, **METHODS[method]
        )
    with dask.config.set(scheduler="threads", **options):
        cpu, start = time.process_time(), time.perf_counter()
        out = C.compute()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    row: dict[str, Any] = {"wall": wall, "cpu": cpu, "out": out}
    if method != "plain":
        record = dask_polar.last_job()
        row["results_used"] = len(record.used)
    return row


def _cell(product: str, rate: str, cell: str, model: Any, seeds: int) -> dict[str, Any]:
    import dask.array as da

    from dask_polar.stragglers import draw_delays

    k = RATES[rate]
    rows_per_block, p, q = PRODUCTS[product]
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((rows_per_block * k, p))
    b = rng.standard_normal((p, q))
    expected = a @ b
    A, B = da.from_array(a, chunks=(rows_per_block, p)), da.from_array(b, chunks=b.shape)
    names = list(METHODS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    floors = []
    for name in names:  # warm up: the first run of a shape pays for imports and caches
        _once(name, A, B, k, None, SEED)
    if model is None:  # runs without stragglers are short and noisier: more of them
        seeds *= 3
    for s in range(seeds):
        seed = SEED + s
        if model is not None:
            floors.append(float(np.sort(draw_delays(model, N, seed=seed))[k - 1]))
        shift = s % len(names)
        for name in names[shift:] + names[:shift]:
            row = _once(name, A, B, k, model, seed)
            row["ok"] = bool(np.allclose(row.pop("out"), expected))
            runs[name].append(row)
    stats: dict[str, Any] = {"floor": float(np.median(floors)) if floors else None}
    for name, rows in runs.items():
        walls = [r["wall"] for r in rows]
        stats[name] = {
            "median_wall": float(np.median(walls)),
            "p99_wall": float(np.percentile(walls, 99)),
            "median_cpu": float(np.median([r["cpu"] for r in rows])),
            "ok": all(r["ok"] for r in rows),
            "walls": walls,
        }
    return stats


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for key, stats in results.items():
        product, rate, cell = key.split(" | ")
        sys = stats["polar-systematic"]
        if cell == "none":
            plain = stats["plain"]
            checks.append((key, "wall vs plain", sys["median_wall"] / plain["median_wall"], 1.15))
            checks.append((key, "CPU vs plain", sys["median_cpu"] / plain["median_cpu"], 1.3))
            continue
        checks.append((key, "vs uncoded", sys["median_wall"] / stats["uncoded"]["median_wall"], 0.5))
        if cell == "bimodal 20%":
            checks.append((key, "vs floor", sys["median_wall"] / stats["floor"], 1.6))
        if cell == "bimodal 5%":
            best = min(stats[m]["median_wall"] for m in ("replication", "backup"))
            checks.append((key, "vs best fixed", sys["median_wall"] / best, 1.25))
    return [
        {"cell": key, "ratio": name, "value": value, "target": target, "pass": value <= target}
        for key, name, value, target in checks
    ]


def run(quick: bool = False) -> dict[str, Any]:
    seeds = 5 if quick else 15
    print(f"regimes on threads: stragglers mode={STRAGGLER_MODE!r}, base {BASE * 1e3:.0f} ms, "
          f"n={N}, {seeds} seeds per cell; median wall [s] (CPU [s])")
    results: dict[str, Any] = {}
    names = list(METHODS)
    print(f"{'product | rate | cell':34}" + "".join(f"{name:>18}" for name in names) + f"{'floor':>8}")
    for product in PRODUCTS:
        for rate in RATES:
            for cell, model in _cells().items():
                key = f"{product} | {rate} | {cell}"
                stats = results[key] = _cell(product, rate, cell, model, seeds)
                line = "".join(
                    f"{stats[m]['median_wall']:>9.3f} ({stats[m]['median_cpu']:5.2f})"
                    + ("" if stats[m]["ok"] else "!") for m in names
                )
                floor = "" if stats["floor"] is None else f"{stats['floor']:8.3f}"
                print(f"{key:34}{line}{floor}", flush=True)
    targets = _targets(results)
    for t in targets:
        print(f"  {'PASS' if t['pass'] else 'MISS'} {t['cell']}: systematic polar "
              f"{t['ratio']} {t['value']:.2f} (target <= {t['target']})")
    failures = sum(not results[key][m]["ok"] for key in results for m in names)
    print(f"  wrong results: {failures}")
    plot = _plot(results, names)
    return {
        "n": N, "rates": RATES, "products": PRODUCTS, "base": BASE, "seeds": seeds,
        "mode": STRAGGLER_MODE, "methods": names, "cells": results, "targets": targets,
        "failures": failures, "plot": plot,
    }


def _plot(results: dict[str, Any], names: list[str]) -> str | None:
    """Median wall time per method and cell, one panel per product and rate
    (``benchmarks/results/regimes.png``); None without matplotlib (the ``plot`` extra)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .__main__ import RESULTS

    panels = sorted({key.rsplit(" | ", 1)[0] for key in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), sharey=True)
    width = 0.8 / len(names)
    for ax, panel in zip(np.atleast_1d(axes), panels):
        cells = [key for key in results if key.startswith(panel + " | ")]
        x = np.arange(len(cells))
        for m, name in enumerate(names):
            ax.bar(x + m * width, [results[c][name]["median_wall"] for c in cells], width,
                   label=name)
        floors = [results[c]["floor"] or np.nan for c in cells]
        ax.plot(x + 0.4 - width / 2, floors, "k_", markersize=22, label="floor")
        ax.set_xticks(x + 0.4 - width / 2, [c.rsplit(" | ", 1)[1] for c in cells], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(panel)
    np.atleast_1d(axes)[0].set_ylabel("median wall time [s]")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "regimes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path.relative_to(RESULTS.parent.parent)}")
    return str(path.relative_to(RESULTS.parent.parent))
