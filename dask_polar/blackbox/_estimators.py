"""Gradient estimators from function evaluations run as early-completing task jobs.

Every estimator turns one gradient request into ``n`` tasks, each evaluating the black-box
function ``f`` a few times, and runs them with `dask_polar.executors.run_early_completion`
(the loop shared with the coded matrix products): straggler injection, retries, backup
copies, job records and cancellation work the same way.
"""

from __future__ import annotations

import itertools
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._validation import check_int, check_real
from ..array import CodedOptions, split_rows
from ..codes import ErasureCode, PolarCode, UncodedCode
from ..executors import ExecutorBackend, ThreadBackend, WorkOutcome, run_early_completion
from ..executors.cooperative import CooperativeTask
from ..executors.local import default_client
from ..jobs import JobRecord, find_job
from ..stragglers.faults import fault_plan

__all__ = [
    "CodedGradient",
    "FiniteDifferenceGradient",
    "RandomSearchGradient",
    "directional_derivatives",
]


def directional_derivatives(
    f: Callable[[np.ndarray], Any],
    x: np.ndarray,
    directions: np.ndarray,
    h: float,
    batch: bool,
    combine: bool,
    flag: Any,
    faults: Any,
    index: int,
    attempt: int,
) -> WorkOutcome:
    """The work of one task: central differences of ``f`` at ``x`` along ``directions``.

    Each row ``z`` of ``directions`` (b, d) gives ``(f(x + t z) - f(x - t z)) / (2 t)`` with
    ``t = h / ||z||``, so every evaluation point lies at distance ``h`` from ``x`` whatever the
    length of ``z`` (coded directions are sums of base directions); zero rows give 0 without
    evaluating ``f``. The value is the ``(b,)`` vector of derivatives, or with ``combine``
    the ``(d,)`` vector ``sum_r derivative_r * z_r`` (random search).

    Cancelling never interrupts running Python, so the task polls ``flag`` while it waits
    out an injected straggler delay (``faults``, a `FaultPlan` or None; a ``"slow"`` task
    waits its delay too) and between evaluations.
    """
    task = CooperativeTask(flag)
    if task.inject(faults, index, attempt):
        return task.stopped()
    if task.slowdown > 1 and task.flag.wait(faults.delay(index, attempt)):
        return task.stopped()
    norms = np.linalg.norm(directions, axis=1)
    live = np.flatnonzero(norms > 0)
    if live.size == 0:  # f is never called on an empty batch
        value = np.zeros(directions.shape[1] if combine else directions.shape[0])
        return task.done(value)
    steps = h / norms[live]
    shifts = steps[:, None] * directions[live]
    points = np.concatenate([x + shifts, x - shifts])
    if batch:
        values = np.asarray(f(points), dtype=np.float64).reshape(-1)
        if values.shape != (points.shape[0],):
            raise ValueError(
                f"f with batch=True must return one value per row: got {values.size} values "
                f"for {points.shape[0]} points"
            )
    else:
        values = np.empty(points.shape[0])
        for i, point in enumerate(points):
            if task.cancelled():
                return task.stopped()
            values[i] = float(f(point))
    derivatives = np.zeros(directions.shape[0])
    derivatives[live] = (values[: live.size] - values[live.size :]) / (2.0 * steps)
    return task.done(derivatives @ directions if combine else derivatives)


class _FirstArrivals(ErasureCode):
    """``n`` independent samples of which any ``k`` will do: the stopping rule of random search.

    Not a linear code (there is no generator): "decoding" keeps the first ``k`` received
    results by index, which is independent of their values, so the estimate stays unbiased.
    """

    name = "first-arrivals"

    def _generator(self) -> np.ndarray:
        raise NotImplementedError("independent samples are not a linear code")

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError("independent samples are not a linear code")

    def _decodable(self, mask: np.ndarray) -> bool:
        return int(mask.sum()) >= self._k

    def _missing(self, mask: np.ndarray) -> Sequence[int]:
        return list(range(int(mask.sum()), self._k))

    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return coded[np.flatnonzero(mask)[: self._k]].copy()


class _TaskGradient:
    """Shared machinery: validation, the backend, one early-completion job per gradient."""

    prefix = "gradient"

    def __init__(
        self,
        f: Callable[[np.ndarray], Any],
        dim: int,
        *,
        h: float,
        batch: bool,
        client: Any,
        options: dict[str, Any],
    ) -> None:
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        self.f = f
        self.dim = check_int("dim", dim, minimum=1)
        self.h = check_real("h", h, minimum=0.0, strict=True)
        if not isinstance(batch, (bool, np.bool_)):
            raise TypeError(f"batch must be a bool, got {batch!r}")
        self.batch = bool(batch)
        self.options = CodedOptions.resolve(**options)
        self.code = self._make_code()
        self.evaluations = 0
        self._calls = itertools.count()
        self._token = f"{self.prefix}-{uuid.uuid4().hex[:16]}"
        if self.options.executor is None:
            client = client if client is not None else default_client()
        else:
            client = None
        if client is not None:
            from ..executors.distributed import DistributedBackend

            self._backend: Any = DistributedBackend(client)
            self._f_ref: Any = client.scatter(f, hash=False)  # the function travels once
        elif self.options.executor is not None:
            self._backend = ExecutorBackend(self.options.executor)
            self._f_ref = f
        else:
            self._backend = ThreadBackend(self.options.local_workers or self.code.n)
            self._f_ref = f
        self._finalizer = weakref.finalize(self, self._backend.close)

    # -- subclass hooks -------------------------------------------------------------------

    def _make_code(self) -> ErasureCode:
        raise NotImplementedError

    def _directions(self, call: int) -> Callable[[int], np.ndarray]:
        """Task index -> its (b, d) directions, for gradient request number ``call``."""
        raise NotImplementedError

    def _combine(self) -> bool:
        return False

    def _known(self) -> dict[int, np.ndarray]:
        return {}

    def _result_shape(self) -> tuple[int]:
        """The shape of every task's value (float64)."""
        raise NotImplementedError

    def _gradient(self, decoded: np.ndarray, call: int) -> np.ndarray:
        raise NotImplementedError

    def _evaluations(self, j: int) -> int:
        raise NotImplementedError

    # -- the public interface -------------------------------------------------------------

    def __call__(self, x: Any) -> np.ndarray:
        """The gradient estimate at ``x`` (shape ``(dim,)``), from one early-completing job.

        Raises
        ------
        TypeError, ValueError
            For ``x`` that is not a finite real vector of length ``dim``.
        dask_polar.CodedJobError
            If the tasks keep failing (e.g. ``f`` raises) and the results stay insufficient.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
        if x.shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},), got {x.shape}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("x must be finite")
        call = next(self._calls)
        faults = fault_plan(self.options.stragglers, self.code.n, self.options.seed + call)
        directions = self._directions(call)
        combine = self._combine()
        h, batch, f = self.h, self.batch, self._f_ref

        def make_task(j: int, attempt: int, flag: Any):
            # a re-run or backup copy goes to another worker: a fresh draw of its delay
            args = (f, x, directions(j), h, batch, combine, flag, faults, j, attempt)
            return directional_derivatives, args

        record = JobRecord(
            token=f"{self._token}-{call}",
            code=repr(self.code),
            n=self.code.n,
            k=self.code.k,
            backend=self._backend.name,
            info_set=self.code.info_set.tolist() if isinstance(self.code, PolarCode) else None,
            straggler_delays=None if faults is None else faults.first.tolist(),
        )
        decoded = run_early_completion(
            self.code, self._backend, make_task, record=record,
            result_shape=self._result_shape(), dtype=np.dtype(np.float64), known=self._known(),
            retries=self.options.retries, backup=self.options.backup,
            timeout=self.options.timeout,
        )
        self.evaluations += sum(
            self._evaluations(task.index) for task in record.tasks if task.status == "done"
        )
        return self._gradient(decoded, call)

    estimate = __call__

    @property
    def n(self) -> int:
        """Number of tasks per gradient estimate."""
        return self.code.n

    @property
    def last_record(self) -> JobRecord | None:
        """The job record of the most recent gradient estimate (see `dask_polar.last_job`)."""
        return find_job(self._token)

    def close(self) -> None:
        """Release the worker threads (also done when collected)."""
        self._finalizer()

    def __enter__(self) -> _TaskGradient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dim={self.dim} code={self.code!r} backend={self._backend.name}>"


class CodedGradient(_TaskGradient):
    """Coded finite-difference gradient estimator (Bartan & Pilanci 2019).

    The ``dim`` coordinates are split into ``k`` groups (base directions); the code's
    generator ``G`` (n x k) mixes them into ``n`` *encoded* directions, and task ``j``
    evaluates the central differences of ``f`` along its encoded directions. Directional
    derivatives are linear in the direction, so the task values are (up to the
    finite-difference error) a codeword of the code applied to the base-direction
    derivatives: the gradient is decoded from the first decodable subset of tasks, and
    the stragglers are cancelled.

    Parameters
    ----------
    f : callable
        ``f(x) -> float`` for ``x`` of shape ``(dim,)``; with ``batch=True``,
        ``f(X) -> (r,)`` for ``X`` of shape ``(r, dim)``. Must pickle to run on a cluster.
    dim : int
        Dimension of ``x``.
    k : int, optional
        Base-direction groups (data blocks). Default ``dim``: each task evaluates ``f``
        twice and yields one scalar. With ``k < dim`` each task handles
        ``ceil(dim / k)`` directions.
    h : float, default 1e-4
        Distance from ``x`` of every evaluation point.
    batch : bool, default False
        Call ``f`` once per task on all its points.
    code : str or ErasureCode, optional
        As in `dask_polar.coded_matmul` (default ``polar.code``: a polar code with
        ``n`` the next power of two >= ``redundancy * k``).
    client : distributed.Client, optional
        Run the tasks there (default: the current client if any, else threads).
    **options
        `dask_polar.coded_matmul` options: ``n``, ``redundancy``, ``straggler_prob``,
        ``runtimes``, ``executor``, ``stragglers``, ``seed``, ``retries``, ``backup``,
        ``timeout`` (per estimate), ``local_workers``. Straggler delays are drawn afresh
        for every estimate (seed ``seed + estimates so far``).

    Attributes
    ----------
    code : ErasureCode
    evaluations : int
        Evaluations of ``f`` by the tasks that finished, over all estimates so far.

    Notes
    -----
    The decoder treats the task values as an exact codeword; they are one up to the
    central-difference error ``O(h**2 * |f'''|)`` plus rounding ``O(eps * |f| / h)``
    (exact for quadratics up to rounding), which decoding (additions and subtractions for
    polar codes) amplifies by a small factor. Generator rows are computed once by encoding
    the identity: O(n k) memory.

    References
    ----------
    B. Bartan and M. Pilanci, "Distributed Black-Box Optimization via Error Correcting
    Codes", Allerton 2019.

    Examples
    --------
    >>> import numpy as np
    >>> Q = np.diag([1.0, 2.0, 3.0, 4.0])
    >>> def f(x):
    ...     return 0.5 * x @ Q @ x + x.sum()
    >>> with CodedGradient(f, 4) as gradient:
    ...     g = gradient(np.ones(4))
    >>> gradient.code
    <PolarCode n=8 k=4 systematic>
    >>> bool(np.allclose(g, Q @ np.ones(4) + 1.0, atol=1e-6))
    True
    """

    prefix = "coded-gradient"

    def __init__(
        self,
        f: Callable[[np.ndarray], Any],
        dim: int,
        *,
        k: int | None = None,
        h: float = 1e-4,
        batch: bool = False,
        code: Any = None,
        client: Any = None,
        **options: Any,
    ) -> None:
        dim = check_int("dim", dim, minimum=1)
        self.k = dim if k is None else check_int("k", k, minimum=1)
        if self.k > dim:
            raise ValueError(f"k must be <= dim ({dim}), got {self.k}")
        options["code"] = code
        super().__init__(f, dim, h=h, batch=batch, client=client, options=options)
        sizes = split_rows(dim, self.k)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._width = int(self._sizes.max())
        # generator rows by encoding the identity: works for every code, O(n k) memory
        self._generator = self.code.encode(np.eye(self.k))

    def _make_code(self) -> ErasureCode:
        return self.options.make_code(self.k)

    def _known(self) -> dict[int, np.ndarray]:
        # an identically zero encoded direction has derivative 0: no task needed
        zero = np.zeros(self._width)
        return {int(j): zero for j in np.flatnonzero(~self._generator.any(axis=1))}

    def _result_shape(self) -> tuple[int]:
        return (self._width,)  # one derivative per row of the task's directions

    def _directions(self, call: int) -> Callable[[int], np.ndarray]:
        def directions(j: int) -> np.ndarray:
            # row r of task j: sum_i G[j, i] e_{starts[i] + r} (groups shorter than r skip)
            out = np.zeros((self._width, self.dim))
            for i in np.flatnonzero(self._generator[j]):
                size = self._sizes[i]
                out[np.arange(size), self._starts[i] + np.arange(size)] = self._generator[j, i]
            return out

        return directions

    def _evaluations(self, j: int) -> int:
        used = np.flatnonzero(self._generator[j])
        return 2 * (int(self._sizes[used].max()) if used.size else 0)

    def _gradient(self, decoded: np.ndarray, call: int) -> np.ndarray:
        gradient = np.empty(self.dim)
        for i, (start, size) in enumerate(zip(self._starts, self._sizes)):
            gradient[start : start + size] = decoded[i, :size]
        return gradient


class FiniteDifferenceGradient(CodedGradient):
    """Uncoded central finite differences: the baseline that waits for every task.

    `CodedGradient` with ``code="uncoded"``: ``k`` tasks (default ``dim``), task ``i``
    differentiating along base-direction group ``i``; the estimate needs all of them, so
    the slowest task sets the latency. Parameters as in `CodedGradient` (except ``code``).

    Examples
    --------
    >>> import numpy as np
    >>> with FiniteDifferenceGradient(lambda x: np.sin(x).sum(), 3, h=1e-5) as gradient:
    ...     g = gradient(np.zeros(3))
    >>> gradient.code, np.round(g, 8)
    (<UncodedCode n=3 k=3>, array([1., 1., 1.]))
    """

    prefix = "fd-gradient"

    def __init__(self, f: Callable[[np.ndarray], Any], dim: int, **options: Any) -> None:
        if options.get("code") is not None:
            raise TypeError("FiniteDifferenceGradient is uncoded: use CodedGradient(code=...)")
        options["code"] = "uncoded"
        super().__init__(f, dim, **options)


class RandomSearchGradient(_TaskGradient):
    """Random search: the antithetic Gaussian-smoothing gradient estimator.

    Task ``j`` draws ``u_j ~ N(0, I)`` and returns ``D_j u_j`` with ``D_j`` the central
    difference of ``f`` along ``u_j`` (points at distance ``h`` from ``x``); the estimate is
    the mean of ``D_j u_j`` over the first ``use`` tasks to finish (unbiased for the
    gradient of ``f``, up to the finite-difference error, since ``E[u u^T] = I``; its
    relative variance is about ``dim / use``).

    Parameters
    ----------
    f, dim, h, batch, client
        As in `CodedGradient`.
    samples : int, optional
        Tasks per estimate (default ``dim``).
    use : int, optional
        Estimate from the first ``use`` tasks to finish (default ``samples``: wait for
        all). ``use < samples`` makes random search straggler-resilient at the price of
        variance.
    **options
        ``executor``, ``stragglers``, ``seed`` (also seeds the directions), ``retries``,
        ``backup``, ``timeout`` (per estimate), ``local_workers``.

    References
    ----------
    Y. Nesterov and V. Spokoiny, "Random Gradient-Free Minimization of Convex Functions",
    Found. Comput. Math., 2017.

    Examples
    --------
    >>> import numpy as np
    >>> with RandomSearchGradient(lambda x: x @ x, 2, samples=2000, use=1000, seed=1) as rs:
    ...     g = rs(np.array([1.0, -1.0]))
    >>> bool(np.allclose(g, [2.0, -2.0], atol=0.3)), rs.code.n, rs.code.k
    (True, 2000, 1000)
    """

    prefix = "random-search"

    def __init__(
        self,
        f: Callable[[np.ndarray], Any],
        dim: int,
        *,
        samples: int | None = None,
        use: int | None = None,
        h: float = 1e-4,
        batch: bool = False,
        client: Any = None,
        **options: Any,
    ) -> None:
        dim = check_int("dim", dim, minimum=1)
        self.samples = dim if samples is None else check_int("samples", samples, minimum=1)
        self.use = self.samples if use is None else check_int("use", use, minimum=1)
        if self.use > self.samples:
            raise ValueError(f"use must be <= samples ({self.samples}), got {self.use}")
        for name in ("code", "n", "redundancy", "straggler_prob", "runtimes"):
            if options.get(name) is not None:
                raise TypeError(f"RandomSearchGradient takes no {name!r}: it is not a code")
        super().__init__(f, dim, h=h, batch=batch, client=client, options=options)

    def _make_code(self) -> ErasureCode:
        if self.use == self.samples:
            return UncodedCode(self.samples)
        return _FirstArrivals(self.samples, self.use)

    def _combine(self) -> bool:
        return True

    def _result_shape(self) -> tuple[int]:
        return (self.dim,)  # derivative times direction

    def _directions(self, call: int) -> Callable[[int], np.ndarray]:
        # one stream per estimate: re-runs of a task see the same direction
        rng = np.random.default_rng((self.options.seed, call))
        samples = rng.standard_normal((self.samples, self.dim))
        return lambda j: samples[j : j + 1]

    def _evaluations(self, j: int) -> int:
        return 2

    def _gradient(self, decoded: np.ndarray, call: int) -> np.ndarray:
        return decoded.mean(axis=0)
