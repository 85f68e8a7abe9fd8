"""``python -m dask_polar demo``: coded products with injected stragglers, side by side.

``python -m dask_polar demo codes`` shows the codes alone: encode random blocks, let random
workers straggle, decode.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .codes import ErasureCode, LocalProductCode, MDSCode, PolarCode, ReplicationCode, UncodedCode

__all__ = ["codes_demo", "matmul_demo"]

# (label, coded_matmul keywords; None: plain Dask): every method sees the same draws
METHODS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain dask", None),
    ("uncoded", {"code": "uncoded"}),
    ("backup tasks (3x median)", {"code": "uncoded", "backup": 3.0}),
    ("replication x2", {"code": "replication"}),
    ("MDS (n=2k)", {"code": "mds"}),
    ("polar butterfly (n=2k)", {"code": "polar", "systematic": False}),
    ("polar systematic (n=2k)", {"code": "polar", "systematic": True}),
    ("auto (learns trial by trial)", {"code": "auto"}),
]


def matmul_demo(
    m: int = 16384,
    p: int = 2048,
    q: int = 16,
    k: int = 32,
    trials: int = 5,
    seed: int = 0,
    plot: str | None = "dask_polar_demo.png",
    cluster: bool = False,
) -> list[dict[str, Any]]:
    """Compare plain Dask, uncoded, backup tasks, replication, MDS, polar and auto side by side.

    ``A`` (m x p, float64, 256 MiB by default) is split into ``k`` row blocks; each method
    computes ``A @ B`` with the same heavy-tailed straggler delays injected into its tasks
    (one worker in twenty 15 times slower: most tasks take 0.2-0.3 s, a few 3-4.5 s), spent
    blocked in ``time.sleep`` (``Faults(mode="block")``: a straggler that polls nothing).
    ``B`` is thin so that the 2 cores hosting all the simulated workers are not the
    bottleneck. It runs on Dask's default threads scheduler (each simulated worker a
    thread; plain Dask gets ``k`` threads, so that each block has its worker), or with
    ``cluster`` on a ``LocalCluster`` in the cluster layout. Prints the median wall time per
    method (``.compute()``, encoding included) and of the coded job itself (from the start
    of its tasks to the decoded result), the ratio to plain Dask, and the floor: the k-th
    fastest of the n = 2k workers' delays, which no code can beat.

    Returns
    -------
    list of dict
        One row per method with its wall times.
    """
    import contextlib

    import dask
    import dask.array as da

    from . import coded_matmul, last_job
    from .array.baselines import plain_matmul
    from .stragglers import Bimodal, Faults, draw_delays

    # one worker in twenty is 15x slow: most jobs of 32 tasks meet at least one straggler
    model = Bimodal(base=0.2, slow_prob=0.05, slowdown=15.0, jitter=0.5)
    # real stragglers poll nothing: each delay is spent blocked in time.sleep
    faults = Faults(model, mode="block")
    n = 2 * k
    where = "a LocalCluster (cluster layout)" if cluster else "the threads scheduler"
    print(
        f"A @ B with A {m}x{p} ({m * p * 8 / 2**20:.0f} MiB), B {p}x{q}, k={k} row blocks, "
        f"n={n} coded tasks, on {where}; injected stragglers: {model}, mode={faults.mode!r} "
        "(they ignore the cancel flag)\n"
    )
    with contextlib.ExitStack() as scope:
        client = None
        if cluster:
            from distributed import Client, LocalCluster

            local = scope.enter_context(LocalCluster(
                n_workers=2, threads_per_worker=n + 8, processes=False,
                dashboard_address="127.0.0.1:0",
            ))
            client = scope.enter_context(Client(local))
        rng = da.random.default_rng(seed)
        A = rng.standard_normal((m, p), chunks=(m // k, p)).persist()
        B = rng.standard_normal((p, q), chunks=(p, q)).persist()
        expected = (A @ B).compute()
        rows: list[dict[str, Any]] = []
        floors = []
        for trial in range(trials):
            delays = draw_delays(model, n, seed=seed + 1000 * trial)
            floors.append(float(np.sort(delays)[k - 1]))
        for label, options in METHODS:
            times, job_times, errors = [], [], []
            for trial in range(trials):
                trial_seed = seed + 1000 * trial
                if options is None:
                    C = plain_matmul(A, B, model, seed=trial_seed)
                else:
                    C = coded_matmul(A, B, stragglers=faults, seed=trial_seed, **options)
                threads = {} if cluster or options is not None else {"num_workers": k}
                with dask.config.set(**threads):
                    start = time.perf_counter()
                    out = C.compute()
                    times.append(time.perf_counter() - start)
                if options is not None:
                    job_times.append(last_job(client).decoded_at)
                errors.append(float(np.abs(out - expected).max()))
            rows.append(
                {"method": label, "seconds": times, "median": float(np.median(times)),
                 "job_seconds": job_times,
                 "job_median": float(np.median(job_times)) if job_times else None,
                 "max_error": max(errors), "n": k if options is None else last_job(client).n}
            )
        base = rows[0]["median"]
        floor = float(np.median(floors))
        header = (
            f"{'method':<28}{'n':>5}{'wall s':>8}{'vs plain':>10}{'job s':>8}{'max error':>11}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            job = "" if row["job_median"] is None else f"{row['job_median']:.2f}"
            print(
                f"{row['method']:<28}{row['n']:>5}{row['median']:>8.2f}"
                f"{row['median'] / base:>9.2f}x{job:>8}{row['max_error']:>11.1e}"
            )
        print(f"{'floor (k-th fastest worker)':<28}{n:>5}{floor:>8.2f}{floor / base:>9.2f}x")
        print("\nwall s: median .compute() time, encoding included; job s: from the start of "
              "the coded tasks to the decoded result.")
        print("\nThe coded jobs return when the first decodable set of results is in; the "
              "straggling tasks are cancelled. Systematic polar runs A's blocks as they are "
              "first and its parity only in the gaps.")
    if plot:
        _plot(rows, floor, plot)
        print(f"plot written to {plot}")
    return rows


def _plot(rows: list[dict[str, Any]], floor: float, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: pip install dask_polar[plot] for the plot)")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [r["method"] for r in rows]
    for i, row in enumerate(rows):
        ax.scatter([i] * len(row["seconds"]), row["seconds"], color="C0", alpha=0.6)
        ax.hlines(row["median"], i - 0.3, i + 0.3, color="C0")
    ax.axhline(floor, color="C3", linestyle="--", label="floor: k-th fastest of n workers")
    ax.set_xticks(range(len(rows)), labels, rotation=15, fontsize=8)
    ax.set_ylabel("wall time (s)")
    ax.set_title("A @ B with injected stragglers (median: bar)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _codes(k: int, n: int) -> list[ErasureCode]:
    return [
        UncodedCode(k),
        ReplicationCode(k, n // k),
        LocalProductCode(k, group_size=2),
        MDSCode(n, k),
        PolarCode(n, k, decoder="sc"),
        PolarCode(n, k),
    ]


def codes_demo(k: int = 64, n: int = 128, trials: int = 200, seed: int = 0) -> list[dict]:
    """Encode random blocks, let random workers straggle, decode, and compare the codes.

    For each trial the coded results arrive in a random order (the stragglers come last);
    each code decodes from its first decodable prefix. Prints, per code, the results needed
    (mean and worst over trials, as a multiple of k), the decode error and the decode time.

    Returns
    -------
    list of dict
        One row per code with the printed numbers.
    """
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((k, 32, 32))
    rows = []
    print(f"k={k} data blocks of {data[0].shape}, {trials} random arrival orders\n")
    header = f"{'code':<34}{'n':>6}{'needed/k':>10}{'worst/k':>9}{'max error':>11}{'decode ms':>11}"
    print(header)
    print("-" * len(header))
    for code in _codes(k, n):
        coded = code.encode(data)
        needed, errors, seconds = [], [], []
        for _ in range(trials):
            order = rng.permutation(code.n)
            decoder = code.decoder()
            for index in order:
                if decoder.add(int(index), coded[index]):
                    break
            start = time.perf_counter()
            decoded = decoder.result()
            seconds.append(time.perf_counter() - start)
            needed.append(decoder.received)
            errors.append(float(np.abs(decoded - data).max()))
        label = repr(code) + (" (SC)" if getattr(code, "decoder_kind", "") == "sc" else "")
        row = {
            "code": label,
            "n": code.n,
            "needed_over_k": float(np.mean(needed)) / k,
            "worst_over_k": float(np.max(needed)) / k,
            "max_error": float(np.max(errors)),
            "decode_ms": 1e3 * float(np.median(seconds)),
        }
        rows.append(row)
        print(
            f"{label:<34}{code.n:>6}{row['needed_over_k']:>10.3f}{row['worst_over_k']:>9.3f}"
            f"{row['max_error']:>11.1e}{row['decode_ms']:>11.2f}"
        )
    print(
        "\nneeded/k: results that had to arrive before decoding (stragglers beyond that are "
        "never waited for);\nMDS needs exactly k but solves a dense system; polar decodes by "
        "additions (SC) plus a small solve (inactivation)."
    )
    return rows
