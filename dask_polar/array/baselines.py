"""Plain Dask's product with the same injected stragglers as the coded methods: the
baseline every comparison starts from."""

from __future__ import annotations

import time
from typing import Any

import dask.array as da
import numpy as np

from ..stragglers.models import RuntimeModel, draw_delays

__all__ = ["plain_matmul"]


def plain_matmul(A: da.Array, B: da.Array, stragglers: Any = None, *, seed: int = 0) -> da.Array:
    """``A @ B`` as plain Dask computes it, each row block's product after its injected
    delay, spent blocked in ``time.sleep`` (a straggler that polls nothing).

    Parameters
    ----------
    A, B : dask.array.Array
        ``A`` (m, p) in row blocks, ``B`` (p, q) in one column block.
    stragglers : RuntimeModel or array of seconds, optional
        Row block ``i`` waits ``delays[i]`` first: the first ``k`` draws of the model with
        ``seed``, as the coded methods' first ``k`` tasks draw theirs. None: ``A @ B``.
    seed : int

    Returns
    -------
    dask.array.Array
    """
    if stragglers is None:
        return A @ B
    if A.ndim != 2 or B.ndim != 2 or len(B.chunks[1]) != 1:
        raise ValueError("plain_matmul with stragglers needs a 2-D A and a 2-D B in one column block")
    k = len(A.chunks[0])
    if isinstance(stragglers, RuntimeModel):
        delays = draw_delays(stragglers, k, seed=seed)
    else:
        delays = np.asarray(stragglers, dtype=np.float64)
        if delays.shape != (k,):
            raise ValueError(f"stragglers must hold one delay per row block ({k}), got {delays.shape}")
    B = B.rechunk((B.shape[0], B.shape[1]))
    return da.map_blocks(
        _delayed_product, A.rechunk({1: A.shape[1]}), B, delays,
        chunks=(A.chunks[0], B.chunks[1]), dtype=np.result_type(A.dtype, B.dtype),
    )


def _delayed_product(a: np.ndarray, b: np.ndarray, delays: np.ndarray, block_info: Any = None):
    time.sleep(float(delays[block_info[0]["chunk-location"][0]]))
    return a @ b
