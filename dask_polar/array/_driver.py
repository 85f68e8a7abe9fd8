"""The driver layout of a coded product: one driving task runs the coded tasks (on its own
threads, an executor, or the cluster) and decodes; the output blocks are cut from its result."""

from __future__ import annotations

from typing import Any

from dask.task_spec import Task, TaskRef

from ..codes import ErasureCode
from . import _tasks
from ._encode import data_block_layer
from ._options import CodedOptions
from ._plan import ProductPlan, ProductSpec
from ._systematic import SystematicJobSpec, SystematicLayout, drive_systematic

__all__ = ["driver_layer", "runs_systematically", "systematic_driver_layer"]


def driver_layer(layer: dict[Any, Task], plan: ProductPlan) -> None:
    """Add the driver layout's tasks to ``layer`` (which holds the encode and
    ``polar-direct-<token>`` tasks): one driving task that runs the work and decodes, and
    the output blocks cut from its result."""
    encoded, options, token = plan.encoded, plan.options, plan.token
    scales = TaskRef(encoded.scales_key)
    spec = _tasks.CodedJobSpec(
        token=token, code=plan.code, coded_keys=encoded.coded_keys, sources=encoded.sources,
        rhs_key=plan.rhs_key, block_rows=plan.block_rows, dtype=plan.work,
        run=_tasks.JobRun.of(options, plan.faults),
    )
    decode_key = f"polar-decode-{token}"
    layer[decode_key] = Task(
        decode_key, _tasks.drive, spec, scales, TaskRef(plan.rhs_key),
        *map(TaskRef, encoded.coded_keys.values()),
    )
    col_bounds = plan.col_bounds
    for i, rows in enumerate(plan.row_chunks):
        for c in range(len(plan.col_chunks)):
            key = (plan.out_name, i, c)
            # with the data block and B: the entries the decode may have lost digits in
            # are computed from them (certified decoding)
            layer[key] = Task(
                key, _tasks.take, TaskRef(decode_key), scales,
                TaskRef((f"polar-direct-{token}", i)), i, rows, col_bounds[c],
                col_bounds[c + 1], plan.dtype, TaskRef(encoded.data_keys[i]),
                TaskRef(plan.rhs_key),
            )


def runs_systematically(code: ErasureCode, options: CodedOptions) -> bool:
    """Whether a driver-layout product runs its data blocks as plain products first
    (`dask_polar.array._systematic`): every data block is a coded block as it is, and the
    results come back to the driver (an executor that keeps them remotely, such as the
    Lambda executor's ``decode="function"``, decodes pre-encoded blocks)."""
    if getattr(options.executor, "remote_results", None) is not None:
        if getattr(options.executor, "decode", None) != "client":
            return False
    return SystematicLayout.of(code) is not None


def systematic_driver_layer(spec: ProductSpec, rhs_key: Any) -> dict[Any, Task]:
    """The driver layout of a systematic code: the data blocks (no encode, no statistics),
    one driving task (`drive_systematic`) and the output blocks cut from its result;
    ``rhs_key`` is the key of ``B`` as one block."""
    work = spec.work
    layer, data_keys = data_block_layer(
        spec.a_keys, spec.row_chunks, spec.token, work if spec.cast else None
    )
    job = SystematicJobSpec(
        token=spec.token, code=spec.code, data_keys=data_keys, rhs_key=rhs_key,
        block_rows=max(spec.row_chunks), inner=spec.inner, dtype=work,
        run=_tasks.JobRun.of(spec.options, spec.faults),
    )
    decode_key = f"polar-decode-{spec.token}"
    layer[decode_key] = Task(
        decode_key, drive_systematic, job, TaskRef(rhs_key), *map(TaskRef, data_keys)
    )
    col_bounds = spec.col_bounds
    for i, rows in enumerate(spec.row_chunks):
        for c in range(len(spec.col_chunks)):
            key = (spec.out_name, i, c)
            layer[key] = Task(
                key, _tasks.take_block, TaskRef(decode_key), i, rows, col_bounds[c],
                col_bounds[c + 1], spec.dtype,
            )
    return layer
