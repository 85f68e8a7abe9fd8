"""Benchmark of the applications: coded GLM iterations and coded black-box gradients.

What is measured (DESIGN.md section 4: ratios measured side by side in one run, on the same
injected straggler draws):

* **GLM iterations.** ``A`` (m x p float64, standard normal) in ``k = 16`` row blocks;
  least squares by gradient descent with a fixed step (every iteration is the same two
  coded jobs, ``A.T @ r`` and ``A @ d``, whatever the method) and logistic regression by
  Newton (one job ``A.T @ [D A | D 1 | r]`` and one ``A @ d`` per iteration). Methods:
  polar (n = 2k = 32), MDS (n = 32) and uncoded (n = k = 16 tasks, waits for all), all on
  the local thread backend. Every coded task first sleeps an injected straggler delay
  (``stragglers=model, seed=trial``: product ``c`` of a fit draws seed ``trial + c``, and
  task ``j``'s delay is the same draw in every method). Per method and trial: the encoding
  time (``encode_seconds_``: encoding ``A`` and ``A.T`` once) and the median time per
  iteration (``history_``). The methods of a trial run back to back in an order rotated
  from trial to trial.
* **Amortisation.** Coding costs more to set up (n encoded blocks instead of k plain ones)
  and less per iteration; it pays off after ``(encode_coded - encode_uncoded) /
  (iteration_uncoded - iteration_coded)`` iterations ("break-even"), reported per method
  from the medians (``never`` if coding is not faster per iteration).
* **No stragglers.** The same with nothing injected: the overhead of n coded tasks and the
  decode against k plain tasks.
* **Black-box gradients.** A 64-dimensional smooth function; one gradient estimate =
  one job of evaluation tasks with injected delays: coded (polar, n = 128, decodes from the
  first decodable subset), uncoded finite differences (64 tasks, waits for all) and random
  search (128 Gaussian directions, uses the first 64). Median and p99 time per estimate
  and the relative error of the estimate against the true gradient.

BLAS is limited to one thread per process while the benchmark runs (``threadpoolctl``, if
installed): the 16-32 worker threads of a job each call BLAS, and a multi-threaded OpenBLAS
per caller oversubscribes the 2 cores badly (measured: the uncoded Newton product ``A.T @
[D A | D 1 | r]`` at 20000 x 40 took 0.7-2.4 s with 2 BLAS threads, 0.025 s with 1).

Run it with ``python -m benchmarks --quick apps`` (about a minute) or ``python -m benchmarks
apps``. Results go to ``benchmarks/results/apps.json``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import numpy as np

from . import straggling

__all__ = ["run"]

SEED = 20_260_807
K = 16

# (name, estimator keywords): every method sees the same straggler draws
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("polar", {"code": "polar", "options": {"n": 2 * K}}),
    ("mds", {"code": "mds", "options": {"n": 2 * K}}),
    ("uncoded", {"code": "uncoded"}),
]


def models() -> dict[str, Any]:
    from dask_polar.stragglers import Bimodal, ShiftedExponential

    return {
        "shifted-exponential": ShiftedExponential(shift=0.01, scale=0.02),
        "bimodal": Bimodal(base=0.01, slow_prob=0.1, slowdown=8.0, jitter=0.2),
        "none": None,
    }


def p99(values: Any) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 99))


# -- GLM iterations ---------------------------------------------------------------------------


def _fit(kind: str, A: np.ndarray, y: np.ndarray, iterations: int, options: dict[str, Any],
         stragglers: Any, seed: int) -> tuple[float, list[float]]:
    from dask_polar.linear_model import LeastSquares, LogisticRegression

    if kind == "least-squares-gd":
        model = LeastSquares(solver="gd", step_size=0.5, max_iter=iterations, tol=1e-300,
                             k=K, stragglers=straggling(stragglers), seed=seed, **options)
    else:
        model = LogisticRegression(solver="newton", max_iter=iterations, tol=1e-300, alpha=1e-3,
                                   k=K, stragglers=straggling(stragglers), seed=seed, **options)
    with warnings.catch_warnings():
        # a fixed number of iterations on purpose: never "converged" at tol=1e-300
        warnings.simplefilter("ignore")
        model.fit(A, y)
    return model.encode_seconds_, [h["seconds"] for h in model.history_]


def glm_iterations(quick: bool) -> dict[str, Any]:
    m, p = (20_000, 40) if quick else (100_000, 100)
    trials = 3 if quick else 10
    iterations = {"least-squares-gd": 6 if quick else 20, "logistic-newton": 3 if quick else 6}
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((m, p))
    w = rng.standard_normal(p) / np.sqrt(p)
    targets = {
        "least-squares-gd": A @ w + 0.1 * rng.standard_normal(m),
        "logistic-newton": (rng.random(m) < 1 / (1 + np.exp(-(A @ w)))).astype(float),
    }
    print(f"A {m}x{p} float64 ({A.nbytes / 2**20:.0f} MiB), k={K} row blocks, {trials} trials")
    out: dict[str, Any] = {"m": m, "p": p, "k": K, "trials": trials, "cases": {}}
    for kind, y in targets.items():
        for model_name, model in models().items():
            if quick and model_name == "bimodal":
                continue
            per_method: dict[str, dict[str, list[float]]] = {
                name: {"encode": [], "iteration": []} for name, _ in METHODS
            }
            for trial in range(trials):
                seed = SEED + 1000 * trial
                order = METHODS[trial % len(METHODS):] + METHODS[: trial % len(METHODS)]
                for name, options in order:
                    encode, seconds = _fit(kind, A, y, iterations[kind], options, model, seed)
                    per_method[name]["encode"].append(encode)
                    per_method[name]["iteration"].append(float(np.median(seconds)))
            summary = _amortise(per_method)
            out["cases"][f"{kind}/{model_name}"] = {"raw": per_method, "summary": summary}
            _print_case(f"{kind}, stragglers: {model or 'none'}", summary)
    return out


def _amortise(per_method: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    base = per_method["uncoded"]
    base_encode = float(np.median(base["encode"]))
    base_iteration = float(np.median(base["iteration"]))
    summary = {}
    for name, values in per_method.items():
        encode = float(np.median(values["encode"]))
        iteration = float(np.median(values["iteration"]))
        saved = base_iteration - iteration
        extra = encode - base_encode
        if name == "uncoded":
            break_even: Any = None
        elif saved <= 0:
            break_even = "never"
        else:
            break_even = max(0, int(np.ceil(extra / saved)))
        summary[name] = {
            "encode_s": encode,
            "iteration_s": iteration,
            "iteration_p99_s": p99(values["iteration"]),
            "iteration_vs_uncoded": iteration / base_iteration,
            "encode_vs_uncoded": encode / base_encode,
            "break_even_iterations": break_even,
        }
    return summary


def _print_case(title: str, summary: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    header = (f"{'method':<10}{'encode s':>10}{'x uncoded':>11}{'s/iter':>9}{'x uncoded':>11}"
              f"{'break-even iters':>18}")
    print(header)
    print("-" * len(header))
    for name, row in summary.items():
        even = row["break_even_iterations"]
        print(
            f"{name:<10}{row['encode_s']:>10.3f}{row['encode_vs_uncoded']:>10.2f}x"
            f"{row['iteration_s']:>9.3f}{row['iteration_vs_uncoded']:>10.2f}x"
            f"{'-' if even is None else str(even):>18}"
        )


# -- black-box gradients ----------------------------------------------------------------------


class _Smooth:
    """``f(x) = sum(log(1 + exp(B x))) / r + |x|^2 / 2``: a logistic-type loss, picklable."""

    def __init__(self, dim: int, seed: int) -> None:
        self.B = np.random.default_rng(seed).standard_normal((256, dim)) / np.sqrt(dim)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        eta = np.atleast_2d(X) @ self.B.T
        return np.logaddexp(0.0, eta).mean(axis=1) + 0.5 * np.sum(np.atleast_2d(X) ** 2, axis=1)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        eta = self.B @ x
        return self.B.T @ (1.0 / (1.0 + np.exp(-eta))) / len(eta) + x


def blackbox_gradients(quick: bool) -> dict[str, Any]:
    from dask_polar.blackbox import CodedGradient, FiniteDifferenceGradient, RandomSearchGradient

    dim = 64
    estimates = 10 if quick else 50
    f = _Smooth(dim, SEED)
    x = np.random.default_rng(SEED + 1).standard_normal(dim)
    true = f.gradient(x)
    makers = [
        ("coded polar n=128", lambda **kw: CodedGradient(f, dim, code="polar", n=2 * dim, **kw)),
        ("finite differences n=64", lambda **kw: FiniteDifferenceGradient(f, dim, **kw)),
        ("random search 64/128",
         lambda **kw: RandomSearchGradient(f, dim, samples=2 * dim, use=dim, **kw)),
    ]
    out: dict[str, Any] = {"dim": dim, "estimates": estimates, "cases": {}}
    for model_name, model in models().items():
        if quick and model_name == "bimodal":
            continue
        rows = {}
        for name, make in makers:
            with make(batch=True, h=1e-4, stragglers=straggling(model), seed=SEED) as estimator:
                seconds, errors = [], []
                for _ in range(estimates):  # estimate i meets the draws of seed SEED + i
                    tick = time.perf_counter()
                    g = estimator(x)
                    seconds.append(time.perf_counter() - tick)
                    errors.append(float(np.linalg.norm(g - true) / np.linalg.norm(true)))
            rows[name] = {"median_s": float(np.median(seconds)), "p99_s": p99(seconds),
                          "relative_error": float(np.median(errors)), "seconds": seconds}
        base = rows["finite differences n=64"]["median_s"]
        print(f"\nblack-box gradient of a {dim}-dim function, {estimates} estimates, "
              f"stragglers: {model or 'none'}")
        header = f"{'estimator':<26}{'median s':>10}{'p99 s':>9}{'x fin.diff.':>13}{'rel. error':>12}"
        print(header)
        print("-" * len(header))
        for name, row in rows.items():
            print(f"{name:<26}{row['median_s']:>10.4f}{row['p99_s']:>9.4f}"
                  f"{row['median_s'] / base:>12.2f}x{row['relative_error']:>12.1e}")
        out["cases"][model_name] = rows
    return out


def _one_blas_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run(quick: bool) -> dict[str, Any]:
    """Run both parts; returns their numbers (see the module docstring)."""
    with _one_blas_thread():
        results = {"glm": glm_iterations(quick), "blackbox": blackbox_gradients(quick)}
    print(
        "\nbreak-even: iterations after which the extra encoding time of the code is repaid "
        "by its faster iterations (from the medians);\nx uncoded / x fin.diff.: ratios of "
        "medians measured side by side on the same straggler draws."
    )
    return results
