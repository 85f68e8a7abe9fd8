"""Benchmark of coded products on a multi-process LocalCluster: traffic, memory, time.

What is measured (DESIGN.md section 4: ratios measured side by side in one run):

* ``A @ B`` with ``A`` float64 in ``k = 32`` row blocks (quick: 32768 x 1024, 256 MiB;
  full: 65536 x 2048, 1 GiB) and ``B`` with 64 columns, both persisted on a
  ``LocalCluster(n_workers=4, threads_per_worker=2, processes=True)``: the blocks of ``A``
  live on four worker processes, as they would on a real cluster.
* Four methods: plain Dask (``A @ B``), and `coded_matmul` with ``code="uncoded"``,
  ``"polar"`` (n = 2k) and ``"mds"`` (n = 2k), all in the cluster layout. Each run persists
  ``C`` (it stays a distributed array) and waits for it.
* Per run: wall time, the worker processes' **CPU time** (on a machine with fewer cores
  than worker threads it is what the wall time pays for), **bytes moved** between workers (the workers' incoming transfer logs,
  summed) over ``|A|``, and the **peak managed memory** of the busiest worker (a worker
  plugin samples ``WorkerState.nbytes`` at every task transition) over ``|A|``.
* Two sections: no stragglers, and injected stragglers ``Bimodal(base=0.1, slow_prob=0.05,
  slowdown=15)`` (one task in twenty 15 times slower); plain Dask meets the same draws as
  its ``k`` row-block products (task ``j`` sleeps ``delay[j]`` first). Trials rotate the
  method order. Medians over trials; ratios against plain Dask's median.
* A memory-limited run: ``A`` of 1 GiB on a fresh cluster of four workers whose
  ``memory_limit`` is ``0.6 |A|`` each (so ``|A|`` fits on no single worker), polar once,
  checked against plain Dask's product.

Every result is checked against ``A @ B`` in numpy on its first trial. Targets (issue 11;
printed PASS/MISS, not raised): polar's bytes moved <= 2 |A|, peak worker memory <= 0.75
|A|, no-straggler wall time <= 2.5 x plain Dask, with stragglers polar's median below plain
Dask's, and the memory-limited run completes and matches numpy.

Run it with ``python -m benchmarks --quick distributed`` (about 2 minutes) or
``python -m benchmarks distributed``. Results go to ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import straggling

__all__ = ["run"]

SEED = 20_261_201
K = 32
N = 2 * K
Q = 64
WORKERS = 4
METHODS = ("plain", "uncoded", "polar", "mds")
PLUGIN = "dask-polar-bench-memory"
LIMITED_BYTES = 2**30  # |A| of the memory-limited run


def _peak_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class PeakMemory(WorkerPlugin):
        """The largest ``WorkerState.nbytes`` (managed memory) seen at a task transition."""

        name = PLUGIN

        def setup(self, worker: Any) -> None:
            self.worker = worker
            self.peak = 0

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            self.peak = max(self.peak, self.worker.state.nbytes)

    return PeakMemory()


def _reset(dask_worker: Any) -> None:
    dask_worker.transfer_incoming_log.clear()
    dask_worker.plugins[PLUGIN].peak = dask_worker.state.nbytes


def _measure(dask_worker: Any) -> tuple[int, int]:
    moved = sum(entry["total"] for entry in dask_worker.transfer_incoming_log)
    return moved, dask_worker.plugins[PLUGIN].peak


def _product(method: str, A: Any, B: Any, model: Any, seed: int) -> Any:
    from dask_polar import coded_matmul
    from dask_polar.array.baselines import plain_matmul

    if method == "plain":  # the first k of the coded methods' draws
        return plain_matmul(A, B, model, seed=seed)
    n = K if method == "uncoded" else N
    return coded_matmul(
        A, B, code=method, n=n, stragglers=straggling(model), seed=seed, layout="cluster"
    )


def _cpu_seconds() -> float:
    """CPU time of this (worker) process so far: the cost of a run on a machine whose
    cores are all busy, where wall time hides it."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def _managed(dask_worker: Any) -> int:
    return dask_worker.state.nbytes


def _settle(client: Any, baseline: int, seconds: float = 10.0) -> None:
    """Wait until the previous run's data is released (releases are asynchronous)."""
    deadline = time.monotonic() + seconds
    while sum(client.run(_managed).values()) > baseline * 1.02 + 2**20:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


def _once(client: Any, method: str, A: Any, B: Any, model: Any, seed: int, expected: Any) -> dict:
    from distributed import wait

    C = _product(method, A, B, model, seed)
    _settle(client, A.nbytes + B.nbytes)
    client.run(_reset)
    cpu = sum(client.run(_cpu_seconds).values())
    start = time.perf_counter()
    C = C.persist()
    wait(C)
    wall = time.perf_counter() - start
    cpu = sum(client.run(_cpu_seconds).values()) - cpu
    measured = client.run(_measure)
    row = {
        "wall": wall,
        "cpu": cpu,
        "moved": sum(moved for moved, _ in measured.values()),
        "peak": max(peak for _, peak in measured.values()),
        "max_received": max(moved for moved, _ in measured.values()),
    }
    if expected is not None:
        row["ok"] = bool(np.allclose(C.compute(), expected))  # C is |A| / 16: fits anywhere
    del C
    return row


def _section(client: Any, A: Any, B: Any, model: Any, trials: int, seed: int, expected: Any):
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    for trial in range(trials):
        shift = trial % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            check = expected if trial == 0 else None
            rows[method].append(_once(client, method, A, B, model, seed + trial, check))
    size = A.nbytes
    stats = {}
    for method, runs in rows.items():
        stats[method] = {
            "median_wall": float(np.median([r["wall"] for r in runs])),
            "median_cpu": float(np.median([r["cpu"] for r in runs])),
            "moved_over_A": float(np.median([r["moved"] for r in runs]) / size),
            "max_received_over_A": float(np.median([r["max_received"] for r in runs]) / size),
            "peak_over_A": float(np.median([r["peak"] for r in runs]) / size),
            "ok": all(r.get("ok", True) for r in runs),
            "walls": [r["wall"] for r in runs],
        }
    plain = stats["plain"]["median_wall"]
    for method in METHODS:
        stats[method]["wall_vs_plain"] = stats[method]["median_wall"] / plain
    return stats


def _print(title: str, stats: dict) -> None:
    print(f"\n{title}")
    print(f"{'method':<10}{'median s':>10}{'x plain':>9}{'cpu s':>8}{'moved/|A|':>11}"
          f"{'max recv/|A|':>14}{'peak/|A|':>10}{'ok':>5}")
    for method, s in stats.items():
        print(f"{method:<10}{s['median_wall']:>10.3f}{s['wall_vs_plain']:>9.2f}"
              f"{s['median_cpu']:>8.2f}"
              f"{s['moved_over_A']:>11.2f}{s['max_received_over_A']:>14.2f}"
              f"{s['peak_over_A']:>10.2f}{'yes' if s['ok'] else 'NO':>5}")


def _cluster(memory_limit: Any) -> Any:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=WORKERS, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", memory_limit=memory_limit,
        silence_logs=40,  # ERROR: spilling under the memory limit is expected here
    )


def _data(client: Any, m: int, p: int) -> tuple[Any, Any]:
    import dask.array as da
    from distributed import wait

    rng = da.random.default_rng(SEED)
    A = rng.standard_normal((m, p), chunks=(m // K, p)).persist()
    B = rng.standard_normal((p, Q), chunks=(p, Q)).persist()
    wait([A, B])
    return A, B


def run(quick: bool = False) -> dict[str, Any]:
    """Run both sections and the memory-limited run; print tables, return the numbers."""
    from distributed import Client

    from dask_polar import last_job
    from dask_polar.stragglers import Bimodal

    m, p = (32768, 1024) if quick else (65536, 2048)
    trials = 3 if quick else 10
    model = Bimodal(base=0.1, slow_prob=0.05, slowdown=15.0)
    size = m * p * 8
    print(f"A {m}x{p} float64 ({size / 2**20:.0f} MiB) in k={K} row blocks, B {p}x{Q}; "
          f"n={N}; LocalCluster {WORKERS} worker processes x 2 threads")
    with _cluster("auto") as cluster, Client(cluster) as client:
        client.register_plugin(_peak_plugin())
        A, B = _data(client, m, p)
        expected = A.compute() @ B.compute()
        for method in METHODS:  # warm-up: imports and first-call costs on every worker
            _once(client, method, A, B, None, SEED - 1, None)
        quiet = _section(client, A, B, None, trials, SEED, expected)
        _print("no stragglers", quiet)
        slow = _section(client, A, B, model, trials, SEED + 1000, expected)
        _print(f"stragglers: {model!r}", slow)
        del A, B

    # |A| = 1 GiB in both modes: a worker process needs ~150 MiB of its own, so a limit of
    # 0.6 |A| with a smaller A would measure the interpreter, not the product
    m_limited = LIMITED_BYTES // (8 * p)
    limited_size = m_limited * p * 8
    limit = int(0.6 * limited_size)
    print(f"\nmemory-limited: A {m_limited}x{p} ({limited_size / 2**20:.0f} MiB), {WORKERS} "
          f"workers x memory_limit {limit / 2**20:.0f} MiB (0.6 |A|), polar")
    with _cluster(limit) as cluster, Client(cluster) as client:
        client.register_plugin(_peak_plugin())
        A, B = _data(client, m_limited, p)
        expected = (A @ B).compute()  # plain Dask: numpy's blocks, no worker holds all of A
        limited = _once(client, "polar", A, B, None, SEED, expected)
        record = last_job(client)
        del A, B
    limited_stats = {
        "shape_A": [m_limited, p], "memory_limit": limit, "wall": limited["wall"],
        "ok": limited["ok"], "peak_over_A": limited["peak"] / limited_size,
        "moved_over_A": limited["moved"] / limited_size,
        "used": len(record.used) if record else None,
    }
    print(f"completed in {limited['wall']:.2f} s, matches: {limited['ok']}, "
          f"peak managed memory {limited_stats['peak_over_A']:.2f} |A|, "
          f"moved {limited_stats['moved_over_A']:.2f} |A|")

    polar = quiet["polar"]
    targets = {
        "moved <= 2 |A|": polar["moved_over_A"] <= 2.0,
        "peak worker memory <= 0.75 |A|": polar["peak_over_A"] <= 0.75,
        "no stragglers: wall <= 2.5 x plain": polar["wall_vs_plain"] <= 2.5,
        "stragglers: median below plain": slow["polar"]["wall_vs_plain"] < 1.0,
        "memory-limited run completes and matches numpy": bool(limited["ok"]),
    }
    print()
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    return {
        "shape_A": [m, p], "k": K, "n": N, "q": Q, "workers": WORKERS, "trials": trials,
        "straggler_model": repr(model), "no_stragglers": quiet, "stragglers": slow,
        "memory_limited": limited_stats, "targets": targets,
    }
