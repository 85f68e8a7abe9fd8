"""Benchmark of the straggler simulator (`dask_polar.simulate`): speed at 10,000+ workers,
latency of every method side by side, the polarization picture, and a check against real jobs.

Sections (each prints a table; targets are marked PASS or MISS, a miss is reported, not raised):

1. Cost model: the real encoders/decoders timed on this machine (`measure_costs`), the fitted
   affine coefficients the simulator then uses.
2. Speed: ``N = 16384`` workers (the polar/MDS ``n``, the first power of two >= 10,000;
   ``k = 8192``) x 100 trials for uncoded, backup, replication, local product, MDS, polar SC
   and polar with inactivation, timed per method. The exact inactivation check runs per trial
   (Python), so it runs on a subset of trials in quick mode and its 100-trial time is
   extrapolated from the measured per-trial time (printed as such). Target: <= 10 s.
3. Latency side by side at ``N = 16384``: median and p99 per method, ratios to uncoded and to
   the floor (the k-th fastest worker), results needed / k, for several runtime models
   (shifted exponential, Pareto, bimodal, Lambda-like, Lambda-like with correlated slow
   groups laid out contiguously or strided), on the same draws for every method.
4. Polar design at large ``n``: results needed with the default design of each decoder and
   with the SC design (``straggler_prob = 1 - k/n``) for the inactivation decoder.
5. The polarization picture (``benchmarks/results/polarization.png``): the virtual workers'
   CDFs at levels 0..14 and their distance from step functions.
6. Validation (small N): the simulator's latency vs `dask_polar.coded_matmul` run on a
   LocalCluster with the same injected delays (``stragglers=``, ``seed=``), per method.

Run with ``python -m benchmarks --quick simulate`` (about a minute) or
``python -m benchmarks simulate`` (a few minutes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dask_polar.simulate import (
    CostModel,
    Heterogeneity,
    LambdaLike,
    measure_costs,
    plot_polarization,
    polarization,
    simulate,
)
from dask_polar.stragglers import Bimodal, Pareto, ShiftedExponential, draw_delays

from . import straggling

__all__ = ["run"]

SEED = 20_260_806
WORKERS = 16_384  # >= 10,000, a power of two for the polar codes
TRIALS = 100
TARGET_SECONDS = 10.0
BLOCK_BYTES = 8192  # one coded result block: e.g. 8 rows x 128 columns of float64
RESULTS = Path(__file__).resolve().parent / "results"

MODELS: list[tuple[str, Any, Heterogeneity | None]] = [
    ("shifted-exp", ShiftedExponential(shift=1.0, scale=0.2), None),
    ("pareto", Pareto(shift=1.0, scale=0.1, alpha=1.5), None),
    ("bimodal", Bimodal(base=1.0, slow_prob=0.05, slowdown=5.0, jitter=0.1), None),
    ("lambda", LambdaLike(), None),
    ("lambda+hosts", LambdaLike(),
     Heterogeneity(group_size=16, group_slow_prob=0.02, group_slowdown=4.0)),
    ("lambda+strided", LambdaLike(),
     Heterogeneity(group_size=16, group_slow_prob=0.02, group_slowdown=4.0, layout="strided")),
]


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def calibrate(quick: bool) -> tuple[CostModel, dict[str, Any]]:
    cost, points = measure_costs(quick=quick, block_bytes=65536, seed=SEED)
    print("\n1. Cost model: real encoders/decoders on this machine "
          "(64 KiB blocks, fastest of repeats)")
    print(f"{'kind':<7}{'size':>7}{'work':>12}{'ms':>10}{'fit ms':>10}")
    for kind, rows in points.items():
        fit = getattr(cost, kind)
        for row in rows:
            print(f"{kind:<7}{row['size']:>7}{row['work']:>12.3g}{1e3 * row['seconds']:>10.2f}"
                  f"{1e3 * fit(row['work']):>10.2f}")
    fitted = []
    for kind in points:
        fit = getattr(cost, kind)
        fitted.append(f"{kind} {1e3 * fit.intercept:.2f} ms + {fit.slope:.3g} s/unit")
    print("fitted: " + ", ".join(fitted))
    return cost, {"coefficients": cost.to_dict(), "points": points}


def speed(cost: CostModel, quick: bool) -> dict[str, Any]:
    exact = 10 if quick else TRIALS
    model = ShiftedExponential(shift=1.0, scale=0.2)
    start = time.perf_counter()
    result = simulate(model, workers=WORKERS, trials=TRIALS, seed=SEED, cost=cost,
                      block_bytes=BLOCK_BYTES, exact_trials=exact)
    wall = time.perf_counter() - start
    per_trial = result.seconds["polar"] / max(exact, 1)
    others = wall - result.seconds["polar"]
    projected = others + per_trial * TRIALS
    print(f"\n2. Speed: {WORKERS} workers (k={WORKERS // 2}) x {TRIALS} trials, {model}")
    print(f"{'step':<16}{'seconds':>9}   note")
    for name, seconds in result.seconds.items():
        note = ""
        if name == "polar":
            note = f"exact inactivation check on {exact} trials: {per_trial:.3f} s/trial"
        print(f"{name:<16}{seconds:>9.3f}   {note}")
    print(f"{'wall':<16}{wall:>9.3f}")
    print(f"all methods, polar-SC path, {TRIALS} trials: {others:.2f} s "
          f"(target <= {TARGET_SECONDS:g} s: {mark(others <= TARGET_SECONDS)})")
    label = "measured" if exact == TRIALS else f"extrapolated from {exact} trials"
    print(f"all methods incl. exact inactivation on all {TRIALS} trials: {projected:.2f} s "
          f"({label}; target <= {TARGET_SECONDS:g} s: {mark(projected <= TARGET_SECONDS)})")
    print(result.table())
    return {
        "workers": WORKERS, "trials": TRIALS, "exact_trials": exact, "wall_seconds": wall,
        "seconds": result.seconds, "polar_exact_seconds_per_trial": per_trial,
        "without_exact_seconds": others, "projected_all_exact_seconds": projected,
        "projected_is_extrapolated": exact != TRIALS, "summary": result.summary(),
    }


def side_by_side(cost: CostModel, quick: bool) -> dict[str, Any]:
    exact = 5 if quick else 30
    results = {}
    for label, model, het in MODELS:
        results[label] = simulate(model, workers=WORKERS, trials=TRIALS, seed=SEED, cost=cost,
                                  block_bytes=BLOCK_BYTES, exact_trials=exact, heterogeneity=het)
    methods = results[MODELS[0][0]].methods
    print(f"\n3. Latency side by side: {WORKERS} workers, k={WORKERS // 2}, {TRIALS} trials "
          f"(polar: {exact}), {BLOCK_BYTES // 1024} KiB blocks, calibrated costs")
    print("   hosts: groups of 16 consecutive workers slow down 4x with probability 0.02 per trial;"
          " strided: the same groups spread round-robin")
    out: dict[str, Any] = {}
    for title, key, fmt in [
        ("median latency / uncoded median (same trials)", "median_vs_uncoded", "{:.3f}"),
        ("p99 latency / uncoded p99", "p99_vs_uncoded", "{:.3f}"),
        ("median latency / median floor (k-th fastest worker)", "median_vs_floor", "{:.3f}"),
        ("median latency, seconds", "median", "{:.3f}"),
        ("results needed / k", "needed_over_k", "{:.3f}"),
    ]:
        print(f"\n{title}")
        print(f"{'method':<14}" + "".join(f"{label:>15}" for label, _, _ in MODELS))
        for method in methods:
            cells = []
            for label, _, _ in MODELS:
                row = next(r for r in results[label].summary() if r["method"] == method)
                cells.append(fmt.format(row[key]) if row[key] is not None else "-")
            print(f"{method:<14}" + "".join(f"{cell:>15}" for cell in cells))
    for label, _, _ in MODELS:
        out[label] = {"model": results[label].model, "settings": results[label].settings,
                      "summary": results[label].summary()}
    return out


def polar_design(quick: bool) -> dict[str, Any]:
    from dask_polar.codes import PolarCode
    from dask_polar.simulate import results_needed

    trials = 5 if quick else 20
    rng = np.random.default_rng(SEED)
    print(f"\n4. Polar design at large n (k = n/2, {trials} random arrival orders): "
          "results needed / k")
    print(f"{'n':>6}{'decoder':>14}{'design eps':>12}{'mean':>8}{'max':>8}")
    rows = []
    for n in (1024, 4096, WORKERS):
        orders = np.array([rng.permutation(n) for _ in range(trials)])
        for decoder, eps in [("sc", None), ("inactivation", None), ("inactivation", 0.5)]:
            code = PolarCode(n, n // 2, decoder=decoder, straggler_prob=eps)
            needed = results_needed(code, orders) / (n // 2)
            shown = code.design.split("=")[1]
            print(f"{n:>6}{decoder:>14}{shown:>12}{needed.mean():>8.3f}{needed.max():>8.3f}")
            rows.append({"n": n, "decoder": decoder, "design": code.design,
                         "mean_over_k": float(needed.mean()), "max_over_k": float(needed.max())})
    return {"rows": rows, "monotonicity": monotonicity(quick)}


def monotonicity(quick: bool) -> list[dict[str, Any]]:
    """How far the binary-search threshold is from the first decodable prefix.

    The conditioning guard of the inactivation decoder makes decodability non-monotone near
    the threshold at large n: a prefix can be decodable and a longer one not. A job's
    incremental decoder stops at the *first* decodable prefix (it checks every arrival);
    ``code.min_results`` and the simulator search for a boundary, which can lie above it.
    """
    from dask_polar.codes import PolarCode
    from dask_polar.simulate.decodability import inactivation_check, inactivation_needed, sc_needed

    sizes = [(1024, 10), (2048, 4)] if quick else [(1024, 40), (2048, 10), (4096, 4)]
    rng = np.random.default_rng(SEED + 1)
    print("\n   Inactivation decodability is not monotone at large n (conditioning guard): "
          "results needed / k")
    print(f"   {'n':>6}{'trials':>7}{'first decodable':>17}{'simulator':>11}{'min_results':>13}"
          f"{'max overshoot':>15}")
    out = []
    for n, trials in sizes:
        code = PolarCode(n, n // 2)
        first, searched, reference = [], [], []
        for _ in range(trials):
            order = rng.permutation(n)
            upper = int(sc_needed(code, order.argsort()[np.newaxis, :])[0])
            found = inactivation_needed(code, order, upper)[0]
            mask = np.zeros(n, dtype=bool)
            mask[order[: code.k - 1]] = True
            count = code.k - 1
            while True:  # what the job's incremental decoder does: check every arrival
                mask[order[count]] = True
                count += 1
                if inactivation_check(code, mask)[0]:
                    break
            first.append(count)
            searched.append(found)
            reference.append(code.min_results(order))
        first_a, searched_a, reference_a = (np.array(v) / code.k for v in (first, searched, reference))
        over = max(np.max(searched_a - first_a), np.max(reference_a - first_a))
        print(f"   {n:>6}{trials:>7}{first_a.mean():>17.4f}{searched_a.mean():>11.4f}"
              f"{reference_a.mean():>13.4f}{over:>15.4f}")
        out.append({"n": n, "trials": trials, "first_over_k": first_a.tolist(),
                    "simulator_over_k": searched_a.tolist(),
                    "min_results_over_k": reference_a.tolist()})
    return out


def polarization_picture() -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = ShiftedExponential(shift=1.0, scale=0.2)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "polarization.png"
    fig = plot_polarization(model, 1024, path=str(path))
    plt.close(fig)
    pol = polarization(model, WORKERS, levels=[0])
    print(f"\n5. Polarization of {model}: distance of the virtual workers' CDFs from step "
          "functions (mean integral of F_i (1 - F_i), relative to one worker)")
    print("level " + "".join(f"{level:>7}" for level in range(len(pol.spread))))
    print("      " + "".join(f"{value:>7.3f}" for value in pol.spread))
    print(f"plot: {path.relative_to(RESULTS.parent.parent)}")
    return {"spread": pol.spread.tolist(), "plot": str(path.relative_to(RESULTS.parent.parent))}


VALIDATION_METHODS = [
    # (simulator method, coded_matmul keywords)
    ("uncoded", {"code": "uncoded"}),
    ("backup", {"code": "uncoded", "backup": 3.0}),
    ("replication", {"code": "replication"}),
    ("local-product", {"code": "local-product"}),
    ("mds", {"code": "mds"}),
    ("polar", {"code": "polar"}),
]


def validation(quick: bool) -> dict[str, Any]:
    import dask.array as da

    from dask_polar import coded_matmul, last_job

    k, n = 8, 16
    trials = 4 if quick else 20
    model = Pareto(shift=0.1, scale=0.05, alpha=1.5)
    rng = np.random.default_rng(SEED)
    A = da.from_array(rng.standard_normal((64 * k, 64)), chunks=(64, 64))
    B = rng.standard_normal((64, 32))
    expected = A.compute() @ B
    seeds = [SEED + 1000 * t for t in range(trials)]
    # the delays coded_matmul injects: task j's first attempt, then re-runs and backup copies
    delays = np.array([draw_delays(model, n, seed=s) for s in seeds])
    backups = np.array([draw_delays(model, n, seed=s + 1) for s in seeds])
    methods = [method for method, _ in VALIDATION_METHODS]
    sim = simulate(times=delays, backup_times=backups, k=k, cost=CostModel.free(), methods=methods)
    real: dict[str, list[float]] = {method: [] for method in methods}
    used: dict[str, list[int]] = {method: [] for method in methods}
    observed: dict[str, np.ndarray] = {}
    overheads: list[float] = []
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=n + 4, processes=False, dashboard_address="127.0.0.1:0"
    )
    client = Client(cluster)
    for method, options in VALIDATION_METHODS:
        finished = np.zeros((trials, n))
        for t, s in enumerate(seeds):
            C = coded_matmul(A, B, stragglers=straggling(model), seed=s, **options)
            assert np.allclose(C.compute(), expected)
            record = last_job(client)
            real[method].append(record.decodable_at)
            used[method].append(len(record.used))
            # when each task's result was in: tasks cancelled at the decodable moment come
            # later than every used one, whatever their exact time
            late = record.decodable_at + 1.0
            finished[t, : record.n] = [
                task.finished if task.status == "done" else late for task in record.tasks
            ]
            finished[t, record.n :] = late
            if method != "backup":  # a backed-up task may finish through its copy
                overheads += [task.finished - delays[t, task.index] for task in record.tasks
                              if task.status == "done"]
        observed[method] = finished
    client.close()
    cluster.close()
    # the decision logic alone: the simulator fed the finish times the real job observed
    replay = {
        method: simulate(times=observed[method], k=k, cost=CostModel.free(), methods=[method])
        for method in methods if method != "backup"
    }
    print(f"\n6. Validation: simulator vs coded_matmul on a LocalCluster, k={k}, n={n}, {trials} trials, "
          f"injected {model}")
    print(f"per-task overhead on top of the injected delay (thread start, product, bookkeeping): "
          f"median {1e3 * np.median(overheads):.1f} ms, max {1e3 * np.max(overheads):.1f} ms")
    print(f"{'method':<14}{'real med s':>11}{'sim med s':>11}{'real-sim med ms':>17}"
          f"{'|diff| max ms':>15}{'replay |diff| ms':>18}{'replay needed':>15}")
    out: dict[str, Any] = {"k": k, "n": n, "trials": trials, "model": repr(model),
                           "task_overhead_median": float(np.median(overheads)), "methods": {}}
    for method in methods:
        measured = np.array(real[method])
        simulated = sim.arrival[method]
        diff = measured - simulated
        if method in replay:
            replay_diff = np.abs(measured - replay[method].arrival[method]).max()
            same = float(np.mean(np.array(used[method]) == replay[method].needed[method]))
            replay_text = f"{1e3 * replay_diff:>18.2f}{same:>15.2f}"
        else:
            replay_diff, same, replay_text = float("nan"), float("nan"), f"{'-':>18}{'-':>15}"
        print(f"{method:<14}{np.median(measured):>11.3f}{np.median(simulated):>11.3f}"
              f"{1e3 * np.median(diff):>17.1f}{1e3 * np.abs(diff).max():>15.1f}{replay_text}")
        out["methods"][method] = {
            "real": measured.tolist(), "simulated": simulated.tolist(),
            "median_diff": float(np.median(diff)), "max_abs_diff": float(np.abs(diff).max()),
            "replay_max_abs_diff": replay_diff, "replay_same_needed_fraction": same,
        }
    print("real: the job's decodable moment (s from the coded tasks' launch); sim: the simulated "
          "arrival with the same injected delays (no compute or thread overhead); replay: the "
          "simulator fed the task finish times the real job observed, and the fraction of "
          "trials where it used the same number of results (the job checks once per burst "
          "of arrivals, so results that land together with the decisive one are used too)")
    return out


def run(quick: bool) -> dict:
    start = time.perf_counter()
    out: dict[str, Any] = {}
    cost, out["cost_model"] = calibrate(quick)
    out["speed"] = speed(cost, quick)
    out["side_by_side"] = side_by_side(cost, quick)
    out["polar_design"] = polar_design(quick)
    out["polarization"] = polarization_picture()
    out["validation"] = validation(quick)
    out["wall_seconds"] = time.perf_counter() - start
    return out
