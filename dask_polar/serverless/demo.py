"""``python -m dask_polar lambda demo``: coded vs uncoded ``A @ B`` on local Lambda workers.

Starts the local services (`dask_polar.serverless.local`), warms ``workers`` execution
environments, and runs the same product two ways on identical injected stragglers
(``ShiftedExponential(shift=0.2, scale=0.4)`` seconds per task, seeded): a polar code with
``n = workers`` tasks for ``k = workers / 2`` row blocks, decoded from the first decodable
set, and the uncoded product with ``k`` tasks, which waits for its slowest one. Prints the
median times, their ratio, and the floor (the k-th fastest of the n injected delays).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["lambda_demo"]


def lambda_demo(
    *,
    workers: int = 32,
    trials: int = 3,
    seed: int = 0,
    s3: str = "seaweedfs",
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the demo; returns the per-trial times (seconds) of both methods and the floors."""
    import dask.array as da

    from .._validation import check_int
    from ..array import coded_matmul
    from ..jobs import last_job
    from ..stragglers import ShiftedExponential, draw_delays
    from .local import local_serverless

    workers = check_int("workers", workers, minimum=4)
    if workers & (workers - 1):
        raise ValueError(f"workers must be a power of two (polar codes), got {workers}")
    trials = check_int("trials", trials, minimum=1)
    k = workers // 2
    model = ShiftedExponential(shift=0.2, scale=0.4)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k * 64, 256))
    B = rng.standard_normal((256, 16))
    expected = A @ B
    A_dask = da.from_array(A, chunks=(64, 256))
    times: dict[str, list[float]] = {"polar": [], "uncoded": []}
    floors = []
    echo(f"starting local S3 ({s3}) and Lambda; warming {workers} execution environments ...")
    with local_serverless(s3=s3, concurrency=workers + 8, timeout=120) as local:
        local.lambda_service.prewarm(local.function_name, workers)
        with local.executor(max_concurrency=workers, poll_interval=0.5) as ex:
            # a first product wakes every environment (S3 client, imports) before timing
            coded_matmul(A_dask, B, n=workers, executor=ex).compute()
            for trial in range(trials):
                floors.append(float(np.sort(draw_delays(model, workers, seed=seed + trial))[k - 1]))
                methods = (("polar", {"n": workers}), ("uncoded", {"code": "uncoded"}))
                for method, options in methods:
                    start = time.perf_counter()
                    C = coded_matmul(A_dask, B, executor=ex, stragglers=model,
                                     seed=seed + trial, **options)
                    out = C.compute()
                    times[method].append(time.perf_counter() - start)
                    if not np.allclose(out, expected):
                        raise AssertionError(f"{method}: wrong product")
                    record = last_job()
                    echo(f"trial {trial}: {method:8s} {times[method][-1]:6.2f} s  "
                         f"({len(record.used)} of {record.n} results used)")
            ex.wait_idle(60)
            leftover = local.objects(ex.session_prefix)
    polar, uncoded = (float(np.median(times[m])) for m in ("polar", "uncoded"))
    echo(f"median over {trials} trials on {workers} local Lambda workers (k = {k}):")
    echo(f"  polar n={workers}: {polar:.2f} s   uncoded n={k}: {uncoded:.2f} s   "
         f"ratio {polar / uncoded:.2f}   floor (k-th fastest delay) {np.median(floors):.2f} s")
    echo(f"  S3 objects left behind: {len(leftover)}")
    return {"polar": times["polar"], "uncoded": times["uncoded"], "floor": floors,
            "leftover_objects": len(leftover)}
