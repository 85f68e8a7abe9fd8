"""The encode tasks of a coded product: ``A``'s row blocks made data blocks, their magnitude
statistics and scale factors, and the code's butterfly (or generator rows) over them."""

from __future__ import annotations

from typing import Any

import numpy as np
from dask.task_spec import List, Task, TaskRef

from ..codes import ErasureCode
from . import _tasks
from ._placement import coded_block_owners, is_butterfly
from ._plan import EncodedBlocks
from ._scaling import block_stats, job_scales

__all__ = ["STAGES_PER_TASK", "data_block_layer", "encode_layer"]

#: Butterfly stages done by one encode task (a radix-8 butterfly): 6 stages at n = 64 become
#: 2 dependent task stages, at the price of 2.4 instead of 1.5 additions per block.
STAGES_PER_TASK = 3


def data_block_layer(
    a_keys: list[list[Any]], row_chunks: tuple[int, ...], token: str, dtype: np.dtype | None
) -> tuple[dict[Any, Task], list[Any]]:
    """The tasks that make ``A``'s row blocks the code's data blocks, and their keys.

    A row block chunked along the inner axis is concatenated, shorter blocks are padded
    with zero rows (all blocks share one shape), and with ``dtype`` every block is cast to
    it; a block that needs none of this is used as it is (no task).
    """
    layer: dict[Any, Task] = {}
    block_rows = max(row_chunks)
    data_keys = []
    for i, (row, rows) in enumerate(zip(a_keys, row_chunks)):
        key = row[0]
        if len(row) > 1:  # A chunked along the inner axis: one row block is their concatenation
            key = (f"polar-rows-{token}", i)
            layer[key] = Task(key, np.concatenate, List(*map(TaskRef, row)), axis=1, dtype=dtype)
        elif dtype is not None and rows == block_rows:
            key_cast = (f"polar-cast-{token}", i)
            layer[key_cast] = Task(key_cast, _tasks.pad_rows, TaskRef(key), block_rows, dtype)
            key = key_cast
        if rows != block_rows:
            pad = (f"polar-pad-{token}", i)
            layer[pad] = Task(pad, _tasks.pad_rows, TaskRef(key), block_rows, dtype)
            key = pad
        data_keys.append(key)
    return layer, data_keys


def encode_layer(
    a_keys: list[list[Any]],
    row_chunks: tuple[int, ...],
    code: ErasureCode,
    token: str,
    *,
    work: np.dtype,
    inner: int,
    cast: bool = True,
    rhs_key: Any = None,
    stages_per_task: int = STAGES_PER_TASK,
    homes: list[str | None] | None = None,
) -> EncodedBlocks:
    """Tasks that encode ``A``'s row blocks (see `EncodedBlocks`).

    ``a_keys[i][j]`` is the key of ``A``'s block ``(i, j)``; a row block chunked along the
    inner axis is concatenated first, and shorter blocks are padded with zero rows so that
    all coded blocks share one shape. With ``cast`` the blocks are cast to the ``work``
    dtype first: the butterfly's sums must be taken in the product's dtype (summing bool
    blocks is an OR, integer blocks wrap, float32 blocks round a float64 product). Each
    block's magnitude is measured where it lives, and one small task derives the scale
    factors (`dask_polar.array._scaling`) from them and, given ``rhs_key``, from ``B``'s.
    ``homes[i]`` is the worker holding data block ``i``, if known: each encode task is then
    placed on the worker that is to hold its coded position (see `coded_block_owners`).
    """
    layer, data_keys = data_block_layer(a_keys, row_chunks, token, work if cast else None)
    stats_name = f"polar-stats-{token}"
    for i, key in enumerate(data_keys):
        layer[(stats_name, i)] = Task((stats_name, i), block_stats, TaskRef(key))
    scales_key = f"polar-scales-{token}"
    rhs_stats: Any = (None, True)
    if rhs_key is not None:
        rhs_stats = TaskRef(rhs_stats_key := f"polar-rhs-stats-{token}")
        layer[rhs_stats_key] = Task(rhs_stats_key, block_stats, TaskRef(rhs_key))
    layer[scales_key] = Task(
        scales_key, job_scales, np.dtype(work), code.n, inner,
        List(*[TaskRef((stats_name, i)) for i in range(len(data_keys))]), rhs_stats,
    )
    placement: dict[Any, str] = {}
    for i, home in enumerate(homes or ()):
        # a block's own tasks (cast, padding, statistics) run where the block is
        for key in (data_keys[i], (stats_name, i)):
            if home is not None and key in layer:
                placement[key] = home
    coded_keys, sources = _encode_graph(
        code, data_keys, f"polar-encode-{token}", layer, TaskRef(scales_key), stages_per_task,
        homes, placement,
    )
    return EncodedBlocks(layer, coded_keys, sources, data_keys, scales_key, placement)


def _encode_graph(
    code: ErasureCode,
    data_keys: list[Any],
    name: str,
    layer: dict[Any, Task],
    scales: TaskRef,
    stages_per_task: int,
    homes: list[str | None] | None = None,
    placement: dict[Any, str] | None = None,
) -> tuple[dict[int, Any], dict[int, int]]:
    """Add the encode tasks to ``layer``; return coded index -> key (zero blocks left out)
    and coded index -> the data block it is as it is (or -1).

    With ``homes`` (data block -> worker), ``placement`` receives encode task -> worker: the
    worker that is to hold its output position (`coded_block_owners`).
    """
    owners = coded_block_owners(code, homes)
    if placement is None or owners is None:
        placement = {}  # not asked for, or not known: the scheduler decides
    if is_butterfly(code):
        # The butterfly x[a] += x[a + half], stages_per_task stages at a time: one task sums
        # the inputs that agree with its output outside the stages' bits and are a bitwise
        # superset inside them. Fewer dependent stages means fewer scheduler round trips,
        # more inputs per task more transfers; zero blocks stay symbolic (no task).
        current: list[tuple[Any, int] | None] = [None] * code.n
        for i, position in enumerate(code.info_set):
            current[position] = (data_keys[i], i)
        depth = code.n.bit_length() - 1
        for stage, top in enumerate(range(depth, 0, -stages_per_task)):
            low = max(top - stages_per_task, 0)
            bits = ((1 << top) - 1) ^ ((1 << low) - 1)  # the chunk's bits of the index
            following: list[tuple[Any, int] | None] = []
            for j in range(code.n):
                inner = j & bits
                positions = [
                    (j & ~bits) | sup
                    for sup in range(inner, bits + 1)
                    if sup & bits == sup and sup & inner == inner
                ]
                terms = [current[p] for p in positions if current[p] is not None]
                if len(terms) <= 1:
                    following.append(terms[0] if terms else None)
                    continue
                key = (name, stage, j)
                sources = tuple(source for _, source in terms)
                layer[key] = Task(
                    key, _tasks.add, scales, sources, *(TaskRef(k) for k, _ in terms)
                )
                following.append((key, -1))
                if owners:
                    placement[key] = owners[j]
            current = following
        coded = {j: term for j, term in enumerate(current) if term is not None}
        return {j: key for j, (key, _) in coded.items()}, {j: s for j, (_, s) in coded.items()}
    # a dense code, or a systematic polar code: its data positions are the data blocks as
    # they are, and each parity block one sum over the few data blocks its row uses
    keys: dict[int, Any] = {}
    sources: dict[int, int] = {}
    generator = code.generator
    for j, row in enumerate(generator):
        used = np.flatnonzero(row)
        if used.size == 1 and row[used[0]] == 1:
            keys[j], sources[j] = data_keys[used[0]], int(used[0])
        elif used.size:
            key = (name, j)
            layer[key] = Task(
                key, _tasks.combine, row[used], scales, tuple(int(i) for i in used),
                *[TaskRef(data_keys[i]) for i in used],
            )
            keys[j], sources[j] = key, -1
            if owners:
                placement[key] = owners[j]
    return keys, sources
