"""The functions inside a coded product's tasks: encode, work, drive, slice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codes import ErasureCode, PolarCode
from ..executors import WorkOutcome, open_backend, run_early_completion
from ..executors.cooperative import CooperativeTask
from ..jobs import JobRecord

__all__ = [
    "CodedJobSpec", "add", "combine", "pad_rows", "coded_product", "drive", "run_coded_product",
    "take",
]



def add(first: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """The sum of the blocks: one output of a (radix-2**s) butterfly stage."""
    out = first + others[0]
    for block in others[1:]:
        out += block
    return out


def combine(coefficients: np.ndarray, *blocks: np.ndarray) -> np.ndarray:
    """``sum_i coefficients[i] * blocks[i]`` (an encoded block of a dense code)."""
    out = coefficients[0] * blocks[0]
    for c, block in zip(coefficients[1:], blocks[1:]):
        out += c * block
    return out.astype(np.result_type(*blocks), copy=False)


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


def coded_product(x: np.ndarray, b: np.ndarray, flag: Any, delay: float, panel_rows: int | None) -> WorkOutcome:
    """The work of one coded task: ``x @ b``, stopping early once ``flag`` is set.

    Cancelling never interrupts running Python, so the task polls ``flag`` while it waits out
    an injected straggler ``delay`` and between row panels of the product.
    """
    task = CooperativeTask(flag)
    if task.sleep(delay):
        return task.stopped()
    rows = x.shape[0]
    out = np.empty((rows, b.shape[1]), dtype=np.result_type(x.dtype, b.dtype))
    step = panel_rows or max(1, -(-rows // 8))
    for lo in range(0, rows, step):
        if task.cancelled():
            return task.stopped()
        np.matmul(x[lo : lo + step], b, out=out[lo : lo + step])
    return task.done(out)


@dataclass
class CodedJobSpec:
    """Everything the driving task needs, shipped inside the graph (must pickle)."""

    token: str
    code: ErasureCode
    coded_keys: dict[int, Any]  # coded index -> graph key of its block (absent: zero block)
    rhs_key: Any
    block_rows: int
    dtype: np.dtype
    delays: np.ndarray | None  # injected straggler delays: first attempts, re-runs (2, n)
    retries: int
    backup: float | None
    timeout: float | None
    local_workers: int | None
    panel_rows: int | None
    executor: Any = None


def drive(spec: CodedJobSpec, b: np.ndarray, *coded: np.ndarray) -> np.ndarray:
    """The driving task of a coded product in a graph: run it where the graph runs.

    Returns the ``(k, block_rows, q)`` decoded products of the data blocks.
    """
    values = dict(zip(spec.coded_keys, coded))
    with open_backend(spec.executor, spec.local_workers or spec.code.n) as backend:
        return run_coded_product(
            spec.code,
            backend,
            {j: backend.reference(spec.coded_keys[j], v) for j, v in values.items()},
            backend.reference(spec.rhs_key, b),
            result_shape=(spec.block_rows, b.shape[1]),
            dtype=spec.dtype,
            token=spec.token,
            delays=spec.delays,
            retries=spec.retries,
            backup=spec.backup,
            timeout=spec.timeout,
            panel_rows=spec.panel_rows,
        )


def run_coded_product(
    code: ErasureCode,
    backend: Any,
    coded_refs: dict[int, Any],
    rhs_ref: Any,
    *,
    result_shape: tuple[int, int],
    dtype: np.dtype,
    token: str,
    delays: np.ndarray | None,
    retries: int,
    backup: float | None,
    timeout: float | None,
    panel_rows: int | None,
) -> np.ndarray:
    """Run ``X_j @ B`` for the coded blocks in ``coded_refs`` and decode early.

    Coded indices missing from ``coded_refs`` are identically zero blocks: their results
    (zeros of ``result_shape``) are known without work. Returns ``(k, *result_shape)``.
    """
    zero = np.zeros(result_shape, dtype=dtype)
    known = {j: zero for j in range(code.n) if j not in coded_refs}
    record = JobRecord(
        token=token,
        code=repr(code),
        n=code.n,
        k=code.k,
        backend=backend.name,
        info_set=code.info_set.tolist() if isinstance(code, PolarCode) else None,
        straggler_delays=None if delays is None else delays[0].tolist(),
    )

    def make_task(j: int, attempt: int, flag: Any):
        # a re-run or backup copy goes to another worker: a fresh draw of its delay
        delay = 0.0 if delays is None else float(delays[min(attempt, 1), j])
        return coded_product, (coded_refs[j], rhs_ref, flag, delay, panel_rows)

    return run_early_completion(
        code, backend, make_task, record=record, result_shape=result_shape, dtype=dtype,
        known=known, retries=retries, backup=backup, timeout=timeout,
    )


def take(decoded: np.ndarray, i: int, rows: int, col_start: int, col_stop: int) -> np.ndarray:
    """Output block: the first ``rows`` rows of data block ``i``, columns ``col_start:col_stop``."""
    return decoded[i, :rows, col_start:col_stop]
