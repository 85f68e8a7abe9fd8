"""``code="auto"`` against every fixed method, on the same straggler draws (issue 20).

What is measured (ratios side by side in one run, DESIGN.md section 4):

* **Threads** (the default scheduler): the matrix of regimes of `bench_regimes` at rate
  1/2 (thin and square ``B``; no stragglers, ``Bimodal`` 5 % and 20 % x15, a shifted
  exponential; base 100 ms, real stragglers blocked in ``time.sleep``). Every fixed method
  of `bench_regimes` runs on seeds ``s_0 .. s_{m-1}``; auto starts from the prior (no
  stragglers seen), runs ``WARM = 5`` jobs on other seeds to learn, then the same ``m``
  seeds. Auto's wall time includes its planning (the graph is built inside the clock, for
  every method).
* **A regime change**: auto at 5 % for 8 jobs, then at 20 %: the jobs it takes until its
  median is within 1.1x the best fixed method's at 20 %.
* **The planner's accuracy**: for each auto job, the chosen candidate's predicted median
  against the job's realised latency (its record's decode moment: what the plan predicts).
* **A 4-process LocalCluster** (4 workers x 2 threads, ``A`` persisted): plain, uncoded,
  backup tasks, replication, systematic polar and auto in three cells (none, 5 %, 20 %).

Targets (PASS/MISS, not raised):

* after at most 5 jobs in a regime, auto's median <= 1.1x the best fixed method's, per cell,
  among the methods within auto's cost cap (CPU without stragglers at most 2x plain's,
  measured in the cell without stragglers: the butterfly, at about 3.8x, is not);
* without stragglers, auto <= 1.15x plain Dask;
* after a change from 5 % to 20 %, auto within 1.1x the best fixed method within 10 jobs;
* the chosen candidate's predicted median within 25 % of the realised one: per cell, the
  median of the predictions against the median of the realised latencies (of the jobs
  after warming up); the median of that error over the cells. Each job's own error is in
  the JSON (one job's latency is a draw from a wide distribution, the prediction a median).

``python -m benchmarks --quick auto``: 5 seeds per cell; full: 9.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import STRAGGLER_MODE, straggling
from .bench_regimes import BASE, METHODS, PRODUCTS, SEED, _cells

__all__ = ["run"]

K = 32
WARM = 5
COST_CAP = 2.0  # auto's default (polar.auto.cost-cap): the best fixed method is taken within it
CLUSTER_METHODS = ("plain", "uncoded", "backup", "replication", "polar-systematic")


def _job(method: str, A: Any, B: Any, model: Any, seed: int, on_cluster: bool) -> dict[str, Any]:
    """One product, built and computed inside the clock."""
    import dask

    import dask_polar
    from dask_polar.array.baselines import plain_matmul

    config: dict[str, Any] = {} if on_cluster else {"scheduler": "threads"}
    cpu, start = time.process_time(), time.perf_counter()
    if method == "plain":
        C = plain_matmul(A, B, model, seed=seed)
        if model is not None and not on_cluster:
            config["num_workers"] = K  # each block has its worker, as the coded methods do
    else:
        options = {"code": "auto"} if method == "auto" else dict(METHODS[method])
        C = dask_polar.coded_matmul(A, B, stragglers=straggling(model), seed=seed, **options)
    with dask.config.set(config):
        out = C.compute()
    row: dict[str, Any] = {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                           "out": out}
    if method == "auto":
        record = _record_of(C.name.rsplit("-", 1)[-1])
        plan = record.plan or {}
        chosen = plan.get("chosen")
        row.update(
            chosen=chosen, realised=record.decoded_at,
            predicted=plan.get("predicted", {}).get(chosen, {}).get("median"),
        )
    return row


def _record_of(token: str) -> Any:
    """The record of job ``token``: here, or (a cluster's) from the scheduler's event log,
    where a plain product's arrives once its last task has reported."""
    from dask_polar import jobs

    record = jobs.find_job(token)
    if record is not None:
        return jobs.attach_plan(record)
    from distributed import default_client

    client = default_client()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for _, message in reversed(client.get_events(jobs.EVENT_TOPIC)):
            if message.get("token") == token:
                return jobs.attach_plan(jobs.JobRecord.from_dict(message))
        time.sleep(0.02)
    raise RuntimeError(f"no record of job {token}")


def _reset(client: Any) -> None:
    """Auto starts from the prior: forget what earlier cells taught it."""
    from dask_polar.array import _auto

    _auto._STATS.clear()
    if client is not None:
        client.run_on_scheduler(_reset_scheduler)


def _reset_scheduler(dask_scheduler: Any = None) -> None:
    from dask_polar.array._auto import BackendStats

    plugin = dask_scheduler.plugins.get("dask_polar-runtimes")
    if plugin is not None:
        plugin.stats = BackendStats()


def _auto_jobs(A: Any, B: Any, model: Any, seeds: list[int], client: Any, expected: Any,
               warm: int = WARM) -> list[dict[str, Any]]:
    rows = []
    for i, seed in enumerate([SEED - 1 - w for w in range(warm)] + seeds):
        row = _job("auto", A, B, model, seed, client is not None)
        row["ok"] = bool(np.allclose(row.pop("out"), expected))
        row["warm"] = i < warm
        rows.append(row)
    return rows


def _cell(A: Any, B: Any, expected: Any, model: Any, seeds: int, methods: list[str],
          client: Any, allowed: list[str] | None = None) -> dict[str, Any]:
    """Every method on the same seeds, then auto (``WARM`` jobs to learn first); the best
    fixed method among ``allowed`` (those within auto's cost cap; default all)."""
    seed_list = [SEED + s for s in range(seeds)]
    for name in methods:  # warm up: the first run of a shape pays for imports and caches
        if name != "auto":
            _job(name, A, B, None, SEED, client is not None)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for s, seed in enumerate(seed_list):
        shift = s % len(methods)
        for name in methods[shift:] + methods[:shift]:
            row = _job(name, A, B, model, seed, client is not None)
            row["ok"] = bool(np.allclose(row.pop("out"), expected))
            runs[name].append(row)
    _reset(client)
    auto = _auto_jobs(A, B, model, seed_list, client, expected)
    stats: dict[str, Any] = {}
    for name, rows in runs.items():
        walls = [r["wall"] for r in rows]
        stats[name] = {"median_wall": float(np.median(walls)), "walls": walls,
                       "median_cpu": float(np.median([r["cpu"] for r in rows])),
                       "ok": all(r["ok"] for r in rows)}
    measured = [r for r in auto if not r["warm"]]
    stats["auto"] = {
        "median_wall": float(np.median([r["wall"] for r in measured])),
        "walls": [r["wall"] for r in auto], "chosen": [r["chosen"] for r in auto],
        "ok": all(r["ok"] for r in auto),
        "prediction_error": [abs(r["predicted"] - r["realised"]) / r["realised"]
                             for r in measured if r["predicted"] is not None and r["realised"]],
        # the chosen candidates' predicted medians against the realised median, over the
        # jobs after warming up (one job's latency is a draw, the prediction a median)
        "median_error": abs(
            np.median([r["predicted"] for r in measured if r["predicted"] is not None])
            / np.median([r["realised"] for r in measured]) - 1
        ),
    }
    stats["best_fixed"] = min(allowed or methods, key=lambda m: stats[m]["median_wall"])
    stats["best_any"] = min(methods, key=lambda m: stats[m]["median_wall"])
    return stats


def _data(product: str) -> tuple[Any, Any, Any]:
    import dask.array as da

    rows_per_block, p, q = PRODUCTS[product]
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((rows_per_block * K, p))
    b = rng.standard_normal((p, q))
    return da.from_array(a, chunks=(rows_per_block, p)), da.from_array(b, chunks=b.shape), a @ b


def _regime_change(quick: bool) -> dict[str, Any]:
    """Auto at 5 %, then at 20 %: how many jobs until it is as fast as the best fixed method."""
    cells = _cells()
    A, B, expected = _data("thin")
    before, after = cells["bimodal 5%"], cells["bimodal 20%"]
    jobs_after = 12 if quick else 15
    _reset(None)
    rows = _auto_jobs(A, B, before, [SEED + 100 + s for s in range(8)], None, expected, warm=0)
    rows += _auto_jobs(A, B, after, [SEED + 200 + s for s in range(jobs_after)], None, expected, warm=0)
    fixed = {}
    for name in ("polar-systematic", "replication", "backup", "mds"):
        walls = [_job(name, A, B, after, SEED + 200 + s, False)["wall"] for s in range(jobs_after)]
        fixed[name] = float(np.median(walls))
    best = min(fixed.values())
    walls = [r["wall"] for r in rows[8:]]
    # the first job after the change from which auto's running median (over the jobs from
    # there on) stays within 1.1x the best fixed method's
    adapted = next((j for j in range(len(walls) - 2)
                    if np.median(walls[j:]) <= 1.1 * best), None)
    return {"chosen": [r["chosen"] for r in rows], "walls": [r["wall"] for r in rows],
            "fixed_at_20": fixed, "adapted_after_jobs": adapted,
            "ok": all(r["ok"] for r in rows)}


def _cluster_section(seeds: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster, wait

    cells = _cells()
    results: dict[str, Any] = {}
    with LocalCluster(n_workers=4, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        import dask.array as da

        rows_per_block, p, q = PRODUCTS["thin"]
        rng = da.random.default_rng(SEED)  # made on the workers: no 64 MiB graph to send
        A = rng.standard_normal((rows_per_block * K, p), chunks=(rows_per_block, p)).persist()
        B = rng.standard_normal((p, q), chunks=(p, q)).persist()
        wait([A, B])
        expected = A.compute() @ B.compute()
        for cell in ("none", "bimodal 5%", "bimodal 20%"):
            results[cell] = _cell(A, B, expected, cells[cell], seeds, list(CLUSTER_METHODS), client)
            _print_row(f"cluster | thin | {cell}", results[cell], list(CLUSTER_METHODS))
    return results


def _print_row(key: str, stats: dict[str, Any], methods: list[str]) -> None:
    line = "".join(f"{stats[m]['median_wall']:>9.3f}" + ("" if stats[m]["ok"] else "!")
                   for m in [*methods, "auto"])
    chosen = stats["auto"]["chosen"]
    picks = ", ".join(f"{name} x{chosen.count(name)}" for name in dict.fromkeys(chosen))
    print(f"{key:30}{line}   auto chose: {picks}", flush=True)


def _targets(threads: dict[str, Any], cluster: dict[str, Any], change: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for where, cells in (("threads", threads), ("cluster", cluster)):
        for key, stats in cells.items():
            auto = stats["auto"]["median_wall"]
            best = stats[stats["best_fixed"]]["median_wall"]
            checks.append((f"{where} | {key}", "auto vs best fixed", auto / best, 1.1))
            if key.endswith("none"):
                checks.append((f"{where} | {key}", "auto vs plain", auto / stats["plain"]["median_wall"], 1.15))
    errors = [s["auto"]["median_error"] for cells in (threads, cluster) for s in cells.values()]
    checks.append(("all cells", "predicted vs realised median (median over cells of |error|)",
                   float(np.median(errors)), 0.25))
    adapted = change["adapted_after_jobs"]
    checks.append(("5% -> 20%", "jobs to adapt", float("inf") if adapted is None else adapted, 10))
    return [{"cell": c, "ratio": r, "value": v, "target": t, "pass": v <= t} for c, r, v, t in checks]


def run(quick: bool = False) -> dict[str, Any]:
    seeds = 5 if quick else 9
    methods = list(METHODS)
    print(f"auto on threads: stragglers mode={STRAGGLER_MODE!r}, base {BASE * 1e3:.0f} ms, k={K}, "
          f"{seeds} seeds per cell (auto: {WARM} jobs to learn first); median wall [s], "
          "graph built inside the clock")
    print(f"{'where | product | cell':30}" + "".join(f"{m[:8]:>9}" for m in [*methods, "auto"]))
    threads: dict[str, Any] = {}
    for product in PRODUCTS:
        A, B, expected = _data(product)
        allowed = None
        for cell, model in _cells().items():  # "none" first: it gives each method's cost
            key = f"{product} | {cell}"
            threads[key] = _cell(A, B, expected, model, seeds, methods, None, allowed)
            if allowed is None:
                plain_cpu = threads[key]["plain"]["median_cpu"]
                allowed = [m for m in methods
                           if threads[key][m]["median_cpu"] <= COST_CAP * plain_cpu]
                print(f"  within the cost cap ({COST_CAP}x plain's CPU without stragglers): "
                      f"{', '.join(allowed)}")
            _print_row(f"threads | {key}", threads[key], methods)
    change = _regime_change(quick)
    print(f"5% -> 20%: auto chose {change['chosen']}; adapted after "
          f"{change['adapted_after_jobs']} jobs (best fixed at 20%: {change['fixed_at_20']})")
    print(f"{'where | product | cell':30}" + "".join(f"{m[:8]:>9}" for m in [*CLUSTER_METHODS, "auto"]))
    cluster = _cluster_section(seeds)
    targets = _targets(threads, cluster, change)
    for t in targets:
        print(f"  {'PASS' if t['pass'] else 'MISS'} {t['cell']}: {t['ratio']} {t['value']:.2f} "
              f"(target <= {t['target']})")
    failures = sum(not s[m]["ok"] for cells in (threads, cluster) for s in cells.values()
                   for m in s if isinstance(s[m], dict) and "ok" in s[m])
    print(f"  wrong results: {failures + (not change['ok'])}")
    return {"k": K, "base": BASE, "seeds": seeds, "warm": WARM, "mode": STRAGGLER_MODE,
            "threads": threads, "cluster": cluster, "regime_change": change, "targets": targets,
            "failures": failures}
