"""Benchmark of `dask_polar.coded_matmul` on a LocalCluster with injected stragglers.

What is measured (DESIGN.md section 4: ratios measured side by side in one run):

* ``A @ B`` with ``A`` 4096 x 256 float64 in ``k = 32`` row blocks and ``B`` 256 x 16, both
  persisted on a ``LocalCluster(n_workers=2, threads_per_worker=n + 8, processes=False)``
  (2 x 72 worker threads, so all ``n = 2k = 64`` coded tasks run at once). The real
  compute is tiny; each coded task sleeps an injected straggler delay first (polling the
  job's cancel flag), so the delays, not the 2 cores, set the latency.
* Five methods: polar (n = 2k), MDS (n = 2k), backup tasks (``code="uncoded",
  backup=3.0``: cubed's rule, a copy of any task running > 3x the median once half are
  done), replication x2 (n = 2k) and uncoded (n = k).
* Two straggler models, ``ShiftedExponential(shift=1.0, scale=0.5)`` and
  ``Bimodal(base=1.0, slow_prob=0.1, slowdown=3.0, jitter=0.2)``. Every method of a trial
  gets ``stragglers=model, seed=trial_seed``: task ``j``'s delay is the same draw in every
  method. The methods of a trial run back to back, in an order rotated from trial to
  trial, so the noise of the shared machine hits them alike.
* Per trial, the wall time of ``C.compute()`` (the graph is built before the clock starts)
  and the job record (`dask_polar.last_job`), from which the wall time is split into
  ``pre`` (graph submission, encode tasks, driver start: compute start -> job start),
  ``needed`` (largest injected delay among the results the decoder used; for backup tasks
  a copy's fresh draw may have won, so it is left out there: n/a), ``sched`` (``decodable_at``
  minus ``needed``: submission, worker, cancel-flag and result latency inside the job),
  ``decode`` (``decoded_at - decodable_at``) and ``post`` (the rest: output slicing and
  gathering to the client).
* The floor of a trial: the k-th smallest of the n = 2k injected delays, which no code can
  beat. ``extra`` = ``needed - floor`` is the cost of waiting for more (or slower) results
  than the k fastest.
* No stragglers (``stragglers=None``): the time of each method with nothing injected, i.e.
  the overhead of n coded tasks plus encode and decode against k plain ones.

Targets (printed PASS/MISS; a miss is reported, not raised): polar p99 <= 0.5 x uncoded p99
and polar median <= 1.25 x floor (median of the per-trial floors), per straggler model; with
no stragglers, polar median <= (n/k) * 1.1 x uncoded median. p99 is numpy's linearly
interpolated 99th percentile: with few trials (quick mode) it is close to the maximum.
Every result is checked against ``A @ B`` computed once in numpy (``np.allclose``); the
failure count must be zero.

Run it with ``python -m benchmarks --quick matmul`` (10 trials per method and model, about
2-3 minutes) or ``python -m benchmarks matmul`` (60 trials, about 15 minutes). Results,
per-trial times included, go to ``benchmarks/results/matmul.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import straggling

__all__ = ["run"]

SEED = 20_260_802
K = 32
N = 2 * K
M, P, Q = 4096, 256, 16  # A is M x P (K row blocks of M / K rows), B is P x Q

# (name, coded_matmul keywords)
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("polar", {"code": "polar", "n": N}),
    ("mds", {"code": "mds", "n": N}),
    ("backup", {"code": "uncoded", "backup": 3.0}),
    ("replication", {"code": "replication", "n": N}),
    ("uncoded", {"code": "uncoded"}),
]
LABELS = {
    "polar": "polar (n=2k)",
    "mds": "MDS (n=2k)",
    "backup": "backup tasks (3x med)",
    "replication": "replication x2",
    "uncoded": "uncoded",
}

# targets from the project issue
TARGET_P99_VS_UNCODED = 0.5  # polar p99 / uncoded p99, at most
TARGET_MEDIAN_VS_FLOOR = 1.25  # polar median / floor median, at most
TARGET_NO_STRAGGLERS = (N / K) * 1.1  # polar / uncoded with no stragglers, at most

PHASES = ("pre", "needed", "sched", "decode", "post")


def models() -> dict[str, Any]:
    from dask_polar.stragglers import Bimodal, ShiftedExponential

    return {
        "shifted-exponential": ShiftedExponential(shift=1.0, scale=0.5),
        "bimodal": Bimodal(base=1.0, slow_prob=0.1, slowdown=3.0, jitter=0.2),
    }


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def p99(values: Any) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 99))


def nanmedian(values: Any) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def fmt(value: float, width: int, digits: int = 3) -> str:
    return f"{'n/a':>{width}}" if not np.isfinite(value) else f"{value:>{width}.{digits}f}"


# -- one timed run ------------------------------------------------------------------------------


class Runner:
    """Times ``coded_matmul(A, B, ...).compute()`` and reads its job record."""

    def __init__(self, client: Any, A: Any, B: Any, expected: np.ndarray) -> None:
        self.client, self.A, self.B, self.expected = client, A, B, expected
        self.failures: list[dict[str, Any]] = []

    def once(
        self, method: str, options: dict[str, Any], stragglers: Any, seed: int, where: str
    ) -> dict[str, Any]:
        from dask_polar import coded_matmul, last_job

        C = coded_matmul(self.A, self.B, stragglers=straggling(stragglers), seed=seed, **options)
        token = C.name.removeprefix("coded-matmul-")
        wall_start = time.time()
        start = time.perf_counter()
        out = C.compute()
        wall = time.perf_counter() - start
        ok = out.shape == self.expected.shape and bool(np.allclose(out, self.expected))
        if not ok:
            self.failures.append({"where": where, "method": method, "seed": seed})
        row: dict[str, Any] = {"wall": wall, "ok": ok}
        record = last_job(self.client)
        if record is None or record.token != token:  # the record did not reach us: say so
            row["record"] = False
            return row
        delays = np.asarray(record.straggler_delays or np.zeros(record.n))
        used = np.asarray(record.used, dtype=int)
        # with backup copies a copy's fresh draw may have won: the needed delay is unknown
        known = used.size and not options.get("backup")
        needed = float(delays[used].max()) if known else float("nan")
        pre = record.started - wall_start
        decodable = record.decodable_at if record.decodable_at is not None else float("nan")
        decoded = record.decoded_at if record.decoded_at is not None else float("nan")
        row.update(
            record=True,
            used=int(used.size),
            backups=record.backups,
            cancelled=len(record.cancelled),
            decodable_at=decodable,
            decoded_at=decoded,
            pre=pre,
            needed=needed,
            sched=decodable - needed if np.isfinite(needed) else float("nan"),
            decode=decoded - decodable,
            post=wall - pre - decoded,
            # per coded task, seconds since the job's start (None: never reported)
            task_started=[t.started for t in record.tasks],
            task_finished=[t.finished for t in record.tasks],
            task_attempts=[t.attempts for t in record.tasks],
        )
        return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall"] for r in rows]
    out: dict[str, Any] = {
        "seconds": walls,
        "median": float(np.median(walls)),
        "p99": p99(walls),
        "max": float(np.max(walls)),
        "failures": sum(not r["ok"] for r in rows),
        "records_missing": sum(not r.get("record") for r in rows),
        "per_trial": rows,
    }
    for key in ("used", "backups", "cancelled", "decodable_at", "decoded_at", *PHASES):
        out[f"median_{key}"] = nanmedian([r.get(key, np.nan) for r in rows])
    return out


# -- sections -----------------------------------------------------------------------------------


def straggler_section(
    runner: Runner, name: str, model: Any, trials: int, base_seed: int
) -> dict[str, Any]:
    from dask_polar.stragglers import draw_delays

    seeds = [base_seed + 10 * t for t in range(trials)]
    draws = [draw_delays(model, N, seed=s) for s in seeds]
    floors = [float(np.sort(d)[K - 1]) for d in draws]
    uncoded_injected = [float(d[:K].max()) for d in draws]  # what uncoded has to wait out
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m, _ in METHODS}
    print(f"\n[{name}] {model}: {trials} trials x {len(METHODS)} methods", flush=True)
    for t, seed in enumerate(seeds):
        shift = t % len(METHODS)
        for method, options in METHODS[shift:] + METHODS[:shift]:
            row = runner.once(method, options, model, seed, where=name)
            row["floor"] = floors[t]
            row["extra"] = row.get("needed", np.nan) - floors[t]
            rows[method].append(row)
    stats = {m: summarise(r) for m, r in rows.items()}
    for m in stats:
        stats[m]["median_extra"] = nanmedian([r["extra"] for r in rows[m]])
    base = stats["uncoded"]
    floor_median = float(np.median(floors))
    for m, s in stats.items():
        s["median_vs_uncoded"] = s["median"] / base["median"]
        s["p99_vs_uncoded"] = s["p99"] / base["p99"]
        s["median_vs_floor"] = s["median"] / floor_median
        s["median_of_trial_ratios_vs_floor"] = float(
            np.median([r["wall"] / r["floor"] for r in rows[m]])
        )

    print(
        f"  floor (k-th of n={N} delays): median {floor_median:.3f} s, p99 {p99(floors):.3f} s; "
        f"uncoded's injected max of k={K}: median {np.median(uncoded_injected):.3f} s, "
        f"p99 {p99(uncoded_injected):.3f} s"
    )
    print(f"  p99 over {trials} trials is ~ the max (linear interpolation)")
    header = (
        f"  {'method':<22}{'median s':>9}{'p99 s':>8}{'med/unc':>9}{'p99/unc':>9}"
        f"{'med/floor':>10}{'used':>6}{'fail':>5}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for m, _ in METHODS:
        s = stats[m]
        print(
            f"  {LABELS[m]:<22}{s['median']:>9.3f}{s['p99']:>8.3f}{s['median_vs_uncoded']:>9.2f}"
            f"{s['p99_vs_uncoded']:>9.2f}{s['median_vs_floor']:>10.2f}{s['median_used']:>6.0f}"
            f"{s['failures']:>5}"
        )
    print(f"  {'floor':<22}{floor_median:>9.3f}{p99(floors):>8.3f}"
          f"{floor_median / base['median']:>9.2f}{p99(floors) / base['p99']:>9.2f}{1.0:>10.2f}")

    print("  where the time goes (medians over trials, s): wall = pre + needed + sched + "
          "decode + post; needed = floor + extra")
    header = (
        f"  {'method':<22}{'wall':>7}{'pre':>7}{'needed':>8}{'extra':>7}{'sched':>7}"
        f"{'decode':>8}{'post':>7}{'decodable':>10}{'backups':>8}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for m, _ in METHODS:
        s = stats[m]
        print(
            f"  {LABELS[m]:<22}{s['median']:>7.3f}{fmt(s['median_pre'], 7)}"
            f"{fmt(s['median_needed'], 8)}{fmt(s['median_extra'], 7)}{fmt(s['median_sched'], 7)}"
            f"{fmt(s['median_decode'], 8)}{fmt(s['median_post'], 7)}"
            f"{fmt(s['median_decodable_at'], 10)}{s['median_backups']:>8.1f}"
        )
    return {
        "model": repr(model),
        "trials": trials,
        "seeds": seeds,
        "floors": floors,
        "floor_median": floor_median,
        "floor_p99": p99(floors),
        "uncoded_injected_max": uncoded_injected,
        "methods": stats,
    }


def no_straggler_section(runner: Runner, trials: int, base_seed: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m, _ in METHODS}
    print(f"\n[no stragglers] {trials} trials x {len(METHODS)} methods", flush=True)
    for t in range(trials):
        seed = base_seed + t  # no draws; a fresh seed gives fresh task keys
        shift = t % len(METHODS)
        for method, options in METHODS[shift:] + METHODS[:shift]:
            rows[method].append(runner.once(method, options, None, seed, where="none"))
    stats = {m: summarise(r) for m, r in rows.items()}
    base = stats["uncoded"]
    for s in stats.values():
        s["median_vs_uncoded"] = s["median"] / base["median"]
        s["p99_vs_uncoded"] = s["p99"] / base["p99"]
    header = (
        f"  {'method':<22}{'median s':>9}{'p99 s':>8}{'med/unc':>9}{'pre':>7}{'in job':>8}"
        f"{'post':>7}{'used':>6}{'fail':>5}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for m, _ in METHODS:
        s = stats[m]
        print(
            f"  {LABELS[m]:<22}{s['median']:>9.3f}{s['p99']:>8.3f}{s['median_vs_uncoded']:>9.2f}"
            f"{fmt(s['median_pre'], 7)}{fmt(s['median_decoded_at'], 8)}{fmt(s['median_post'], 7)}"
            f"{s['median_used']:>6.0f}{s['failures']:>5}"
        )
    return {"trials": trials, "methods": stats}


# -- entry point --------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    """Run every section, print its tables, return all numbers (see the module docstring)."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    trials = 6 if quick else 50
    quiet_trials = 10 if quick else 100
    the_models = models()
    started = time.perf_counter()
    print(
        f"A {M}x{P} float64 in k={K} row blocks, B {P}x{Q}; n={N} coded tasks; "
        f"LocalCluster 2 workers x {N + 8} threads (processes=False)"
    )
    with LocalCluster(
        n_workers=2, threads_per_worker=N + 8, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster) as client:
        rng = da.random.default_rng(SEED)
        A = rng.standard_normal((M, P), chunks=(M // K, P)).persist()
        B = rng.standard_normal((P, Q), chunks=(P, Q)).persist()
        wait([A, B])
        expected = A.compute() @ B.compute()
        runner = Runner(client, A, B, expected)

        warmup: dict[str, float] = {}
        for method, options in METHODS:  # once per method, untimed in the results
            warmup[method] = runner.once(method, options, None, SEED - 1, where="warm-up")["wall"]
        print("warm-up (s): " + ", ".join(f"{m} {t:.3f}" for m, t in warmup.items()))

        sections: dict[str, Any] = {}
        for i, (name, model) in enumerate(the_models.items()):
            sections[name] = straggler_section(runner, name, model, trials, SEED + 100_000 * (i + 1))
        quiet = no_straggler_section(runner, quiet_trials, SEED + 900_000)

    targets = []
    for name, sec in sections.items():
        polar, uncoded = sec["methods"]["polar"], sec["methods"]["uncoded"]
        ratio = polar["p99"] / uncoded["p99"]
        targets.append({
            "target": f"{name}: polar p99 <= {TARGET_P99_VS_UNCODED} x uncoded p99",
            "value": ratio, "limit": TARGET_P99_VS_UNCODED, "ok": ratio <= TARGET_P99_VS_UNCODED,
        })
        ratio = polar["median"] / sec["floor_median"]
        targets.append({
            "target": f"{name}: polar median <= {TARGET_MEDIAN_VS_FLOOR} x floor",
            "value": ratio, "limit": TARGET_MEDIAN_VS_FLOOR,
            "ok": ratio <= TARGET_MEDIAN_VS_FLOOR,
        })
        overhead = quiet["methods"]["polar"]["median"]
        sec["polar_vs_floor_plus_overhead"] = polar["median"] / (sec["floor_median"] + overhead)
    ratio = quiet["methods"]["polar"]["median_vs_uncoded"]
    targets.append({
        "target": f"no stragglers: polar median <= (n/k)*1.1 = {TARGET_NO_STRAGGLERS:.1f} x uncoded",
        "value": ratio, "limit": TARGET_NO_STRAGGLERS, "ok": ratio <= TARGET_NO_STRAGGLERS,
    })
    failures = runner.failures
    targets.append({
        "target": "every result np.allclose to A @ B (failures == 0)",
        "value": len(failures), "limit": 0, "ok": not failures,
    })

    print("\npolar vs floor + measured no-straggler polar time "
          f"({quiet['methods']['polar']['median']:.3f} s):")
    for name, sec in sections.items():
        extra = sec["floor_median"] + quiet["methods"]["polar"]["median"]
        print(f"  {name:<22} floor+overhead {extra:.3f} s, polar median "
              f"{sec['methods']['polar']['median']:.3f} s, ratio "
              f"{sec['polar_vs_floor_plus_overhead']:.2f}")
    print("\ntargets:")
    for t in targets:
        value = t["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {mark(t['ok'])}  {t['target']}: {shown}")
    wall = time.perf_counter() - started
    print(f"\nbenchmark wall time: {wall:.1f} s")
    return {
        "config": {
            "m": M, "p": P, "q": Q, "k": K, "n": N, "trials": trials,
            "no_straggler_trials": quiet_trials, "threads_per_worker": N + 8, "workers": 2,
            "methods": {m: {key: v for key, v in o.items()} for m, o in METHODS},
            "models": {name: repr(model) for name, model in the_models.items()},
            "p99_note": "numpy linear-interpolated 99th percentile; ~max with few trials",
        },
        "warmup_seconds": warmup,
        "stragglers": sections,
        "no_stragglers": quiet,
        "failures": failures,
        "targets": targets,
        "seconds": wall,
    }
