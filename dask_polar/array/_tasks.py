"""The functions inside a coded product's tasks: encode, work, drive, slice."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codes import ErasureCode, PolarCode
from ..codes.certify import Decoded, certify
from ..executors import WorkOutcome, open_backend, run_early_completion
from ..executors.cooperative import CooperativeTask
from ..jobs import JobRecord
from ..stragglers.faults import FaultPlan
from ._scaling import Scales

__all__ = [
    "CodedJobSpec", "JobRun", "add", "combine", "pad_rows", "coded_product", "direct_product", "drive",
    "finish_block", "job_record", "panel_product", "run_coded_product", "take", "take_block",
]

def _terms(
    scales: Scales, sources: tuple[int, ...], blocks: tuple[np.ndarray, ...],
    coefficients: Any = None,
) -> Iterator[tuple[np.ndarray, bool]]:
    """The blocks an encode task sums, each times its coefficient and its data block's row
    factors, with whether it is a new array (else an input, which must not change); data
    blocks computed directly are left out. A generator, so that a dense code's task holds
    one scaled term at a time, not all of them."""
    for t, (source, block) in enumerate(zip(sources, blocks)):
        if scales.left_out(source):
            continue
        rows = scales.row_factors(source)
        coefficient = 1.0 if coefficients is None else coefficients[t]
        if rows is not None:
            yield block * (rows * coefficient).astype(block.dtype)[:, None], True
        elif coefficient != 1.0:
            yield block * np.asarray(coefficient, dtype=block.dtype), True
        else:
            yield block, False


def _sum(terms: Iterator[tuple[np.ndarray, bool]], like: np.ndarray) -> np.ndarray:
    out, owned = None, False
    for term, new in terms:
        if out is None:
            out, owned = term, new
        elif owned:
            out += term
        else:
            out, owned = out + term, True
    return np.zeros_like(like) if out is None else out


def add(scales: Scales, sources: tuple[int, ...], *blocks: np.ndarray) -> np.ndarray:
    """The sum of the blocks: one output of a (radix-2**s) butterfly stage.

    ``sources[t]`` is the data block that ``blocks[t]`` is (scaled by `Scales` first), or -1
    for an already encoded intermediate.
    """
    return _sum(_terms(scales, sources, blocks), blocks[0])


def combine(
    coefficients: np.ndarray, scales: Scales, sources: tuple[int, ...], *blocks: np.ndarray
) -> np.ndarray:
    """``sum_t coefficients[t] * blocks[t]`` (an encoded block of a dense code); the data
    blocks ``sources`` are scaled as in `add`."""
    return _sum(_terms(scales, sources, blocks, coefficients), blocks[0])


def direct_product(scales: Scales, index: int, block: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Data block ``index``'s product computed directly, where coding cannot be exact (a
    non-finite value in the block or in ``B``); None otherwise (the usual case, no work)."""
    return None if scales.coded(index) else block @ b


def pad_rows(block: np.ndarray, rows: int, dtype: np.dtype | None = None) -> np.ndarray:
    """Pad ``block`` with zero rows to ``rows`` rows (all coded blocks share one shape).

    With ``dtype``, the block is cast to it too: blocks are encoded in the product's dtype.
    """
    dtype = block.dtype if dtype is None else dtype
    if block.shape[0] == rows:
        return block.astype(dtype, copy=False)
    out = np.zeros((rows, *block.shape[1:]), dtype=dtype)
    out[: block.shape[0]] = block
    return out


def coded_product(
    x: np.ndarray, b: np.ndarray, flag: Any, faults: FaultPlan | None, index: int,
    attempt: int, panel_rows: int | None, row_factors: np.ndarray | None = None,
    gate: Any = None,
) -> WorkOutcome:
    """The work of coded task ``index``: ``x @ b``, stopping early once ``flag`` is set.

    Cancelling never interrupts running Python, so the task polls ``flag`` between row
    panels of the product (and while it waits out a cooperative injected delay). ``faults``
    (a `FaultPlan`, or None) injects this attempt's fault first: a delay spent as its mode
    says, a slowdown (the panels are repeated), or a failure. ``row_factors`` scale the rows
    of a data block used as a coded block as it is (see `Scales`).
    """
    task = CooperativeTask(flag)
    if task.inject(faults, index, attempt):
        return task.stopped()
    return panel_product(task, x, b, panel_rows, row_factors, gate)


#: Rows of a work task's panel at least (by default): BLAS runs small panels slowly (8-row
#: panels of a 512 x 512 product at 18 GFlop/s, 128-row ones at 34 here, one thread).
MIN_PANEL_ROWS = 128


def panel_product(
    task: CooperativeTask, x: Any, b: np.ndarray, panel_rows: int | None,
    row_factors: np.ndarray | None = None, gate: Any = None,
    needed: Callable[[], bool] | None = None,
) -> WorkOutcome:
    """``x @ b`` in row panels, as ``task`` (its cancel flag, its injected slowdown) says.

    ``x`` is an array, or anything with ``shape``, ``dtype`` and row slicing that forms a
    panel when asked (a parity task's sum). With ``gate`` (a semaphore: the thread pool's
    background slots), each panel waits for a slot first, so that background tasks run a
    few at a time and the first of them finish early instead of all of them late; a task
    whose ``needed()`` turns False before a panel stops there (its result would add
    nothing).
    """
    rows = x.shape[0]
    out = np.empty((rows, b.shape[1]), dtype=np.result_type(x.dtype, b.dtype))
    step = panel_rows or max(MIN_PANEL_ROWS, -(-rows // 8))
    for p, lo in enumerate(range(0, rows, step)):
        # a slow node repeats each panel's product: `slowdown` times the work in all
        repeats = max(1, round(task.slowdown * (p + 1)) - round(task.slowdown * p))
        if gate is not None and not task.acquire(gate):
            return task.stopped()
        try:
            if needed is not None and not needed():
                return task.stopped()
            panel = x[lo : lo + step]
            if row_factors is not None:  # only for mixed magnitudes; powers of two, so exact
                panel = panel * row_factors[lo : lo + step, None].astype(x.dtype)
            for _ in range(repeats):
                if task.cancelled():
                    return task.stopped()
                np.matmul(panel, b, out=out[lo : lo + step])
        finally:
            if gate is not None:
                gate.release()
    return task.done(out)


@dataclass(frozen=True)
class JobRun:
    """How a driven job runs (every driving task's options; must pickle)."""

    faults: FaultPlan | None  # injected stragglers and failures
    retries: int
    backup: float | None
    timeout: float | None
    local_workers: int | None
    panel_rows: int | None
    executor: Any = None

    @classmethod
    def of(cls, options: Any, faults: FaultPlan | None) -> JobRun:
        """The run of a product with `CodedOptions` ``options``."""
        return cls(
            faults=faults, retries=options.retries, backup=options.backup,
            timeout=options.timeout, local_workers=options.local_workers,
            panel_rows=options.panel_rows, executor=options.executor,
        )

    def backend(self, n: int) -> Any:
        """The backend's context for a job of ``n`` tasks (`open_backend`)."""
        return open_backend(self.executor, self.local_workers or n)


@dataclass
class CodedJobSpec:
    """Everything the driving task needs, shipped inside the graph (must pickle)."""

    token: str
    code: ErasureCode
    coded_keys: dict[int, Any]  # coded index -> graph key of its block (absent: zero block)
    sources: dict[int, int]  # coded index -> the data block it is as it is, or -1 (see Scales)
    rhs_key: Any
    block_rows: int
    dtype: np.dtype
    run: JobRun


def drive(spec: CodedJobSpec, scales: Scales, b: np.ndarray, *coded: np.ndarray) -> Decoded:
    """The driving task of a coded product in a graph: run it where the graph runs.

    Returns the ``(k, block_rows, q)`` decoded products of the (scaled) data blocks, with
    the entries each output task computes again (certified decoding, `take`).
    """
    values = dict(zip(spec.coded_keys, coded))
    rhs = scales.rhs(b)
    run = spec.run
    with run.backend(spec.code.n) as backend:
        return run_coded_product(
            spec.code,
            backend,
            {j: backend.reference(spec.coded_keys[j], v) for j, v in values.items()},
            backend.reference(spec.rhs_key if rhs is b else None, rhs),
            row_factors={j: scales.row_factors(spec.sources[j]) for j in values},
            left_out={j for j in values if scales.left_out(spec.sources[j])},
            result_shape=(spec.block_rows, b.shape[1]),
            dtype=spec.dtype,
            token=spec.token,
            faults=run.faults,
            retries=run.retries,
            backup=run.backup,
            timeout=run.timeout,
            panel_rows=run.panel_rows,
            inner=b.shape[0],
        )


def run_coded_product(
    code: ErasureCode,
    backend: Any,
    coded_refs: dict[int, Any],
    rhs_ref: Any,
    *,
    row_factors: dict[int, np.ndarray | None] | None = None,
    left_out: Collection[int] = (),
    result_shape: tuple[int, int],
    dtype: np.dtype,
    token: str,
    faults: FaultPlan | None,
    retries: int,
    backup: float | None,
    timeout: float | None,
    panel_rows: int | None,
    inner: int | None = None,
) -> Any:
    """Run ``X_j @ B`` for the coded blocks in ``coded_refs`` and decode early.

    Coded indices missing from ``coded_refs`` are identically zero blocks: their results
    (zeros of ``result_shape``) are known without work, as are those in ``left_out`` (data
    blocks computed directly, see `Scales`); ``row_factors[j]`` scale the rows of coded
    block ``j`` first. Returns ``(k, *result_shape)``; with ``inner`` (the product's inner
    dimension), certified: a `Decoded`.
    """
    row_factors = row_factors or {}
    zero = np.zeros(result_shape, dtype=dtype)
    known = {j: zero for j in range(code.n) if j not in coded_refs or j in left_out}
    record = job_record(code, backend, token, faults)

    def make_task(j: int, attempt: int, flag: Any):
        # a re-run or backup copy goes to another worker: a fresh draw of its delay
        rows = row_factors.get(j)
        return coded_product, (coded_refs[j], rhs_ref, flag, faults, j, attempt, panel_rows, rows)

    return run_early_completion(
        code, backend, make_task, record=record, result_shape=result_shape, dtype=dtype,
        known=known, retries=retries, backup=backup, timeout=timeout, inner=inner,
    )


def job_record(code: ErasureCode, backend: Any, token: str, faults: FaultPlan | None) -> JobRecord:
    """The record of a coded product's job, before it runs."""
    return JobRecord(
        token=token,
        code=repr(code),
        n=code.n,
        k=code.k,
        backend=backend.name,
        info_set=code.info_set.tolist() if isinstance(code, PolarCode) else None,
        straggler_delays=None if faults is None else faults.first.tolist(),
    )


def finish_block(
    value: np.ndarray, scales: Scales, direct: np.ndarray | None, i: int, rows: int,
    col_start: int, col_stop: int, dtype: np.dtype,
) -> np.ndarray:
    """Output block ``i``: its decoded ``value`` (already cut to its columns) at its own
    scale, or its direct product where coding could not be exact; ``rows`` rows, ``dtype``."""
    if direct is not None:
        return direct[:rows, col_start:col_stop].astype(dtype, copy=False)
    return scales.unscale(i, value[:rows], dtype)


def take_block(
    decoded: list[np.ndarray], i: int, rows: int, col_start: int, col_stop: int, dtype: np.dtype
) -> np.ndarray:
    """Output block of a systematic job: rows ``:rows``, columns ``col_start:col_stop`` of
    data block ``i``'s product (`dask_polar.array._systematic`), in ``dtype``."""
    return decoded[i][:rows, col_start:col_stop].astype(dtype, copy=False)


def take(
    decoded: Decoded, scales: Scales, direct: np.ndarray | None, i: int, rows: int,
    col_start: int, col_stop: int, dtype: np.dtype, block: np.ndarray, b: np.ndarray,
) -> np.ndarray:
    """Output block: rows ``:rows`` of data block ``i``, columns ``col_start:col_stop``;
    the entries its decode may have lost digits in computed from ``block`` and ``b``."""
    value = decoded.values[i, :, col_start:col_stop]
    out = finish_block(value, scales, direct, i, rows, col_start, col_stop, dtype)
    if direct is not None:
        return out
    suspects = decoded.suspects[i].columns(col_start, col_stop)
    return certify(out, suspects, block, b[:, col_start:col_stop])
