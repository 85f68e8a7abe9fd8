"""Benchmark of real stragglers: tasks that block in C, always fail, and a paused worker.

What is measured (DESIGN.md section 4: ratios measured side by side in one run):

* ``A @ B`` with ``A`` float64 in ``k = 32`` row blocks (128 MiB: 16384 x 1024; quick: 32
  MiB) and a thin ``B`` (64 columns), both persisted on a
  ``LocalCluster(n_workers=4, threads_per_worker=2, processes=True)``; polar with n = 2k.
* Faults (`dask_polar.stragglers.Faults`), none of which polls the cancel flag:
  ``block1`` / ``block3``: one or three coded tasks blocked in ``time.sleep`` (30 s; quick:
  10 s); ``fail1``: one task raising on every attempt; ``busy``: every task of every
  method spends 0.25 s in ``time.sleep``; ``pause``: as ``busy``, and the first worker
  process seen running a work task is stopped with SIGSTOP for 20 s (quick: 8 s), then
  resumed (if it is still there: ``polar.unresponsive`` has it removed and restarted).
* Methods: polar (median of >= 5 trials per fault), and beside it what the same fault costs
  without a code (one trial each, since each waits the whole block): plain Dask (its row
  block 0's product blocks, or raises) and ``code="uncoded"``.
* On threads (the default scheduler) the same faults at the demo's shape (A 256 MiB in
  32 row blocks, B 16 columns; quick: 64 MiB), polar against its own fault-free run.
* On the local Lambda service (`dask_polar.serverless.local`, S3 in SeaweedFS) with 32
  functions: one function blocked, polar (n = 32, k = 16) against its fault-free run.

Targets (issue 18; printed PASS/MISS, not raised): on the cluster, one or three blocked
tasks cost polar at most 1.5x its fault-free time and at most 3 s; one failing task at
most 1.5x; the paused worker at most 2x the ``busy`` time and 4 s. On threads the same
targets (no pause); on Lambda, one blocked function at most 1.5x.

Run it with ``python -m benchmarks --quick faults`` or ``python -m benchmarks faults``;
results go to ``benchmarks/results/faults.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import numpy as np

__all__ = ["run"]

SEED = 20_261_202
K, N, Q = 32, 64, 64
WORKERS = 4
MODE = "block"
#: Seconds every task of every method spends (in ``time.sleep``) in the ``busy`` and ``pause``
#: scenarios, so that a worker can be paused while it runs work tasks.
BUSY = 0.25


def _faults(kind: str, block: float, code_n: int, k: int = K) -> Any:
    """The `Faults` of one scenario for a job of ``code_n`` tasks over ``k`` data blocks
    (None: no injected fault)."""
    from dask_polar.array.matmul import make_code
    from dask_polar.stragglers import Faults

    if kind == "none":
        return None
    if kind in ("busy", "pause"):  # every task busy for BUSY seconds (no flag looked at)
        return Faults(np.full(code_n, BUSY), mode=MODE)
    code = make_code("polar", k, n=code_n, systematic=True) if code_n > k else None
    count = {"block1": 1, "block3": 3, "fail1": 1}[kind]
    # the faults hit tasks that run: a systematic code's data blocks (its parity runs only
    # when they straggle)
    candidates = np.arange(code_n) if code is None else code.info_set
    rng = np.random.default_rng(SEED)
    while True:  # faults a polar code can absorb (the uncoded job cannot absorb any)
        chosen = sorted(rng.choice(candidates, count, replace=False).tolist())
        mask = np.ones(code_n, bool)
        mask[chosen] = False
        if code is None or code.decodable(mask):
            break
    if kind == "fail1":
        return Faults(fail=chosen)
    delays = np.zeros(code_n)
    delays[chosen] = block
    return Faults(delays, mode=MODE)


def _plain_block(a: np.ndarray, b: np.ndarray, kind: str, block: float, block_info: Any = None):
    """Plain Dask's row-block product with row block 0's fault injected."""
    if kind in ("busy", "pause"):
        time.sleep(BUSY)
    elif block_info[0]["chunk-location"][0] == 0:
        if kind == "fail1":
            raise RuntimeError("injected failure of row block 0")
        if kind.startswith("block"):
            time.sleep(block)
    return a @ b


def _product(method: str, A: Any, B: Any, kind: str, block: float) -> Any:
    import dask.array as da

    from dask_polar import coded_matmul

    if method == "plain":
        if kind == "none":
            return A @ B
        return da.map_blocks(
            _plain_block, A, B, kind, block, chunks=(A.chunks[0], B.chunks[1]), dtype=A.dtype
        )
    n = K if method == "uncoded" else N
    return coded_matmul(A, B, code=method, n=n, stragglers=_faults(kind, block, n))


def _pause_first_worker_at_work(
    client: Any, pids: dict[str, int], seconds: float
) -> threading.Thread:
    """SIGSTOP the first worker process seen running a work task (a coded job's, see
    `is_work_key`, or plain Dask's row-block product), SIGCONT it ``seconds`` later."""
    from dask_polar.array._cluster_systematic import is_work_key

    def pause() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for address, keys in client.processing().items():
                if any(is_work_key(key) or "_plain_block" in str(key) for key in keys):
                    os.kill(pids[address], signal.SIGSTOP)
                    time.sleep(seconds)
                    with contextlib.suppress(ProcessLookupError):  # killed and restarted
                        os.kill(pids[address], signal.SIGCONT)
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=pause, daemon=True)
    thread.start()
    return thread


def _time(compute: Any) -> tuple[float, str | None]:
    start = time.perf_counter()
    try:
        compute()
    except Exception as error:  # a method that does not survive the fault
        return time.perf_counter() - start, f"{type(error).__name__}: {str(error)[:120]}"
    return time.perf_counter() - start, None


def _cluster_section(quick: bool) -> dict[str, Any]:
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    rows = 4096 if quick else 16384
    block = 10.0 if quick else 30.0
    pause = 8.0 if quick else 20.0
    trials = 5
    out: dict[str, Any] = {"A_MiB": rows * 1024 * 8 / 2**20, "block_seconds": block,
                           "pause_seconds": pause, "trials": trials, "mode": MODE}
    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=logging.CRITICAL,  # the failing tasks' logs
    ) as cluster, Client(cluster) as client:
        rng = da.random.default_rng(SEED)
        A = rng.standard_normal((rows, 1024), chunks=(rows // K, 1024)).persist()
        B = rng.standard_normal((1024, Q), chunks=(1024, Q)).persist()
        wait([A, B])
        expected = (A @ B).compute()
        results: dict[str, dict[str, Any]] = {}
        for kind in ("none", "block1", "block3", "fail1", "busy", "pause"):
            cell: dict[str, Any] = {}
            for method in ("polar", "plain", "uncoded"):
                repeats = trials if method == "polar" else 1
                if method != "polar" and kind in ("none", "busy"):
                    repeats = trials
                times, errors = [], []
                for _ in range(repeats):
                    C = _product(method, A, B, kind, block)
                    pauser = None
                    if kind == "pause":
                        pids = client.run(os.getpid)
                        pauser = _pause_first_worker_at_work(client, pids, pause)
                    holder: list[Any] = []
                    seconds, error = _time(lambda: holder.append(C.compute()))
                    if error is None and not np.allclose(holder[0], expected):
                        error = "wrong result"
                    if pauser is not None:
                        pauser.join()
                        client.wait_for_workers(WORKERS, timeout=120)  # a restarted one
                    times.append(seconds)
                    errors.append(error)
                cell[method] = {"seconds": times, "median": float(np.median(times)),
                                "errors": [e for e in errors if e]}
                print(f"  cluster {kind:<7} {method:<8} median {cell[method]['median']:6.2f} s"
                      + (f"  ({cell[method]['errors'][0]})" if cell[method]["errors"] else ""),
                      flush=True)
            results[kind] = cell
        out["results"] = results
    return out


def _threads_section(quick: bool) -> dict[str, Any]:
    import dask.array as da

    from dask_polar import coded_matmul

    rows = 8192 if quick else 16384
    block = 10.0 if quick else 30.0
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((rows, 2048))
    b = rng.standard_normal((2048, 16))
    A = da.from_array(a, chunks=(rows // K, 2048))
    expected = a @ b
    out: dict[str, Any] = {"A_MiB": a.nbytes / 2**20, "block_seconds": block, "mode": MODE,
                           "results": {}}
    for kind in ("none", "block1", "block3", "fail1"):
        out["results"][kind] = _polar_trials(
            "threads", kind, lambda: coded_matmul(A, b, n=N, stragglers=_faults(kind, block, N)),
            expected, trials=5,
        )
    return out


def _polar_trials(section: str, kind: str, product: Any, expected: np.ndarray, trials: int) -> dict:
    """Times of ``trials`` computes of ``product()``, each checked against ``expected``,
    after one untimed compute (the first job in a section also pays for its warm-up: thread
    pools, caches, a cluster closing just before)."""
    product().compute()
    times = []
    for _ in range(trials):
        C = product()
        holder: list[Any] = []
        seconds, error = _time(lambda: holder.append(C.compute()))
        if error is None and not np.allclose(holder[0], expected):
            error = "wrong result"
        if error:
            raise RuntimeError(f"{section} {kind}: {error}")
        times.append(seconds)
    print(f"  {section:<7} {kind:<7} polar    median {np.median(times):6.2f} s", flush=True)
    return {"seconds": times, "median": float(np.median(times))}


def _lambda_section(quick: bool) -> dict[str, Any]:
    """One function blocked (``mode="block"``) among 32 on the local Lambda service (S3 in
    SeaweedFS), polar n = 32, k = 16, against the same job without faults."""
    import dask.array as da

    from dask_polar import coded_matmul
    from dask_polar.serverless.local import local_serverless

    functions, k, trials = 32, 16, 5
    block = 10.0 if quick else 30.0
    rng = np.random.default_rng(SEED)
    a, b = rng.standard_normal((4096, 256)), rng.standard_normal((256, 16))
    A = da.from_array(a, chunks=(4096 // k, 256))
    expected = a @ b
    # a blocked function holds its environment (and a client thread) for the whole block
    slots = functions + trials
    out: dict[str, Any] = {"functions": functions, "k": k, "block_seconds": block,
                           "trials": trials, "mode": MODE, "results": {}}
    with local_serverless(s3="seaweedfs", concurrency=slots, timeout=120) as local:
        local.lambda_service.prewarm(local.function_name, slots)
        with local.executor(max_concurrency=slots, poll_interval=0.05) as ex:
            coded_matmul(A, b, n=functions, executor=ex).compute()  # warm the session
            for kind in ("none", "block1"):
                out["results"][kind] = _polar_trials(
                    "lambda", kind,
                    lambda: coded_matmul(
                        A, b, n=functions, executor=ex,
                        stragglers=_faults(kind, block, functions, k),
                    ),
                    expected, trials,
                )
    return out


def _verdicts(section: dict[str, Any], name: str, limits: dict[str, tuple[float, float]]) -> dict:
    results = section["results"]

    def polar(kind: str) -> float:
        cell = results[kind]
        return cell["polar"]["median"] if "polar" in cell else cell["median"]

    verdicts = {}
    for kind, (ratio_limit, seconds_limit) in limits.items():
        if kind not in results:
            continue
        base = polar("busy" if kind == "pause" else "none")  # the same job without the pause
        ratio, seconds = polar(kind) / base, polar(kind)
        ok = ratio <= ratio_limit and seconds <= seconds_limit
        verdicts[kind] = {"ratio": ratio, "seconds": seconds, "pass": ok}
        print(f"  {name} {kind:<7} polar {ratio:5.2f}x its fault-free time, {seconds:5.2f} s "
              f"(target <= {ratio_limit}x and <= {seconds_limit} s): {'PASS' if ok else 'MISS'}")
    return verdicts


def run(quick: bool = False) -> dict[str, Any]:
    """Run both sections; returns their medians, ratios and verdicts."""
    print(f"faults injected with mode={MODE!r} (they never look at the cancel flag)")
    cluster = _cluster_section(quick)
    threads = _threads_section(quick)
    serverless = _lambda_section(quick)
    limits = {"block1": (1.5, 3.0), "block3": (1.5, 3.0), "fail1": (1.5, np.inf),
              "pause": (2.0, 4.0)}
    print("targets:")
    cluster["verdicts"] = _verdicts(cluster, "cluster", limits)
    threads["verdicts"] = _verdicts(threads, "threads", limits)
    serverless["verdicts"] = _verdicts(serverless, "lambda", {"block1": (1.5, 3.0)})
    return {"cluster": cluster, "threads": threads, "lambda": serverless}
