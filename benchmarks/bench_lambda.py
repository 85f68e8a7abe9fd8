"""Benchmark of the Lambda executor on the local services (`dask_polar.serverless.local`).

Everything runs on this machine: SeaweedFS as S3 (signatures checked), the local Lambda
service with one awslambdaric process per execution environment (64 warmed up first). What
is measured, in one run (DESIGN.md section 4: ratios side by side, medians and p99):

* ``overhead``: the latency of one task, sequential and warm, on Lambda vs a local
  ``ThreadPoolExecutor`` (the same function): a trivial call (invoke, sign, pickle, verify);
  the same with a fresh 1 MiB `S3Reference` argument (upload, invoke, download in the
  handler); and a 1 MiB result forced through S3 (handler upload, client download).
* ``s3``: PUT and GET throughput of 16 MiB objects against SeaweedFS.
* ``coded``: ``A @ B`` (``A`` 4096 x 256 in k = 32 row blocks, ``B`` 256 x 16) on 64 local
  Lambda workers: polar with n = 64 coded tasks vs uncoded with k = 32 tasks, both with the
  same injected stragglers (``ShiftedExponential(shift=0.2, scale=0.4)`` seconds per task,
  seeded per trial; the delay is waited out inside the task, which polls its job's cancel
  flag in S3). Also the floor: the k-th fastest of the 64 injected delays. Every result is
  checked against numpy; S3 objects left after the run are counted (must be 0).
* ``fanout``: 256 concurrent invocations of a light function (``pow``) from an executor with
  256 client threads, against the service's 64-environment concurrency limit: invocations
  per second and results lost (must be 0). ``fanout_sleep``: the same with
  ``time.sleep(0.25)`` (no CPU, but each holds an environment), so that more than 64 are
  really in flight: the service answers 429 beyond the limit and botocore's retries absorb
  it (throttled requests counted; nothing lost), once in the executor's default
  ``retry_mode="adaptive"`` (client-side rate limiting after a 429) and once in
  ``"standard"`` (exponential backoff only).

Run it with ``python -m benchmarks --quick lambda`` (about 3-4 minutes on 2 cores) or
``python -m benchmarks lambda``. Cold starts are not measured here (they depend on the
machine's load); the 64 environments are warmed before any clock starts.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import Any

import numpy as np

from . import straggling

__all__ = ["run"]

SEED = 20_261_129
WORKERS = 64
K = 32
M, P, Q = 4096, 256, 16


def _summary(times: list[float]) -> dict[str, float]:
    values = np.asarray(times)
    return {
        "median_ms": round(1e3 * float(np.median(values)), 3),
        "p99_ms": round(1e3 * float(np.percentile(values, 99)), 3),
        "n": int(values.size),
    }


def _sequential(submit, calls: int, make_args) -> list[float]:
    times = []
    for i in range(calls):
        args = make_args(i)
        start = time.perf_counter()
        submit(*args).result()
        times.append(time.perf_counter() - start)
    return times


def _overhead(local: Any, calls: int) -> dict[str, Any]:
    block = np.random.default_rng(SEED).standard_normal(1 << 17)  # 1 MiB
    out: dict[str, Any] = {}
    with local.executor(max_concurrency=4) as ex, cf.ThreadPoolExecutor(4) as pool:
        for _ in range(5):  # warm the environments used below
            ex.submit(abs, -1).result()
        out["trivial_lambda"] = _summary(_sequential(ex.submit, calls, lambda i: (abs, -i)))
        out["trivial_threads"] = _summary(_sequential(pool.submit, calls, lambda i: (abs, -i)))

        def with_reference(i: int) -> tuple:
            # a fresh reference each time: the handler's cache cannot serve it
            return (np.sum, ex.reference(("bench", i), block + i))

        out["s3_reference_1MiB_lambda"] = _summary(
            _sequential(ex.submit, calls // 2, with_reference)
        )
        out["s3_reference_1MiB_threads"] = _summary(
            _sequential(pool.submit, calls // 2, lambda i: (np.sum, block + i))
        )
        ex.wait_idle(60)
    with local.executor(max_concurrency=4, inline_payload_bytes=64 * 1024) as ex:
        ex.submit(np.ones, 1 << 17).result()
        out["s3_result_1MiB_lambda"] = _summary(  # made remotely, read back from S3
            _sequential(ex.submit, calls // 2, lambda i: (np.ones, 1 << 17))
        )
        ex.wait_idle(60)
    for name in ("trivial", "s3_reference_1MiB"):
        out[f"{name}_ratio"] = round(
            out[f"{name}_lambda"]["median_ms"] / out[f"{name}_threads"]["median_ms"], 1
        )
    return out


def _s3(local: Any, repeats: int) -> dict[str, Any]:
    data = np.random.default_rng(SEED).bytes(16 << 20)
    client = local.client("s3")
    puts, gets = [], []
    try:
        for i in range(repeats):
            key = f"dask-polar/bench/s3-{i}"
            start = time.perf_counter()
            client.put_object(Bucket=local.bucket, Key=key, Body=data)
            puts.append(time.perf_counter() - start)
            start = time.perf_counter()
            body = client.get_object(Bucket=local.bucket, Key=key)["Body"].read()
            gets.append(time.perf_counter() - start)
            assert body == data
            client.delete_object(Bucket=local.bucket, Key=key)
    finally:
        client.close()
    mib = len(data) / 2**20
    return {
        "object_MiB": mib,
        "put_MiB_per_s": round(mib / float(np.median(puts)), 1),
        "get_MiB_per_s": round(mib / float(np.median(gets)), 1),
        "repeats": repeats,
    }


def _coded(local: Any, trials: int) -> dict[str, Any]:
    import dask.array as da

    from dask_polar import coded_matmul, last_job
    from dask_polar.stragglers import ShiftedExponential, draw_delays

    model = ShiftedExponential(shift=0.2, scale=0.4)
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((M, P))
    B = rng.standard_normal((P, Q))
    expected = A @ B
    A_dask = da.from_array(A, chunks=(M // K, P))
    methods = {"polar": {"code": "polar", "n": WORKERS}, "uncoded": {"code": "uncoded"}}
    times: dict[str, list[float]] = {name: [] for name in methods}
    used: dict[str, list[int]] = {name: [] for name in methods}
    floors, failures = [], 0
    with local.executor(max_concurrency=WORKERS, poll_interval=0.5) as ex:
        coded_matmul(A_dask, B, n=WORKERS, executor=ex).compute()  # wake every environment
        for trial in range(trials):
            seed = SEED + trial
            floors.append(float(np.sort(draw_delays(model, WORKERS, seed=seed))[K - 1]))
            order = list(methods) if trial % 2 == 0 else list(methods)[::-1]
            for name in order:
                C = coded_matmul(
                    A_dask, B, executor=ex, stragglers=straggling(model), seed=seed, **methods[name]
                )
                start = time.perf_counter()
                out = C.compute()
                times[name].append(time.perf_counter() - start)
                failures += not np.allclose(out, expected)
                used[name].append(len(last_job().used))
        ex.wait_idle(120)
        leftover = len(local.objects(ex.session_prefix))
    result: dict[str, Any] = {
        "model": repr(model), "k": K, "n_polar": WORKERS, "trials": trials,
        "failures": failures, "leftover_objects": leftover,
        "floor_median_s": round(float(np.median(floors)), 3),
    }
    for name in methods:
        result[name] = {
            "median_s": round(float(np.median(times[name])), 3),
            "p99_s": round(float(np.percentile(times[name], 99)), 3),
            "results_used_median": float(np.median(used[name])),
            "times_s": [round(t, 3) for t in times[name]],
        }
    polar, uncoded = result["polar"], result["uncoded"]
    result["polar_over_uncoded_median"] = round(polar["median_s"] / uncoded["median_s"], 3)
    result["polar_over_uncoded_p99"] = round(polar["p99_s"] / uncoded["p99_s"], 3)
    result["polar_over_floor_median"] = round(polar["median_s"] / result["floor_median_s"], 3)
    return result


def _fanout(local: Any, calls: int, sleep: float, mode: str = "adaptive") -> dict[str, Any]:
    """``calls`` concurrent invocations of ``pow`` (``sleep=0``) or ``time.sleep(sleep)``."""
    service = local.lambda_service
    throttled = service.stats["throttles"]
    with local.executor(max_concurrency=calls, retry_mode=mode) as ex:
        start = time.perf_counter()
        if sleep:
            futures = [ex.submit(time.sleep, sleep) for _ in range(calls)]
            expected = [None] * calls
        else:
            futures = [ex.submit(pow, 2, i % 64) for i in range(calls)]
            expected = [2 ** (i % 64) for i in range(calls)]
        done, _ = cf.wait(futures, timeout=600)
        elapsed = time.perf_counter() - start
        ok = sum(
            f in done and f.exception() is None and f.result() == want
            for f, want in zip(futures, expected)
        )
    return {
        "function": f"time.sleep({sleep})" if sleep else "pow",
        "retry_mode": mode,
        "invocations": calls,
        "service_concurrency": service.concurrency,
        "seconds": round(elapsed, 3),
        "invocations_per_s": round(calls / elapsed, 1),
        "throttled_requests": service.stats["throttles"] - throttled,
        "lost": calls - ok,
    }


def run(quick: bool = False) -> dict[str, Any]:
    from dask_polar.serverless.local import local_serverless

    trials = 5 if quick else 20
    calls = 100 if quick else 400
    fanout = 256
    result: dict[str, Any] = {}
    with local_serverless(s3="seaweedfs", concurrency=WORKERS, timeout=120) as local:
        start = time.perf_counter()
        local.lambda_service.prewarm(local.function_name, WORKERS)
        result["warmup_s"] = round(time.perf_counter() - start, 1)
        print(f"warmed {WORKERS} environments in {result['warmup_s']} s", flush=True)
        result["overhead"] = _overhead(local, calls)
        print("overhead", result["overhead"], flush=True)
        result["s3"] = _s3(local, 3 if quick else 10)
        print("s3", result["s3"], flush=True)
        result["coded"] = _coded(local, trials)
        print("coded", {k: v for k, v in result["coded"].items() if k not in ("polar", "uncoded")},
              flush=True)
        for name in ("polar", "uncoded"):
            print(f"  {name}", {k: v for k, v in result["coded"][name].items() if k != "times_s"},
                  flush=True)
        result["fanout"] = _fanout(local, fanout, 0.0)
        print("fanout", result["fanout"], flush=True)
        for mode in ("adaptive", "standard"):
            result[f"fanout_sleep_{mode}"] = _fanout(local, fanout, 0.25, mode)
            print(f"fanout_sleep_{mode}", result[f"fanout_sleep_{mode}"], flush=True)
    return result
