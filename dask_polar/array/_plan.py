"""What the layouts of one coded product share: the product as the graph gives it
(`ProductSpec`), its encode tasks (`EncodedBlocks`) and its `ProductPlan`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.task_spec import Task

from ..codes import ErasureCode
from ..stragglers.faults import FaultPlan
from ._scaling import work_dtype

if TYPE_CHECKING:
    from ._options import CodedOptions

__all__ = ["EncodedBlocks", "ProductPlan", "ProductSpec"]


@dataclass(frozen=True)
class ProductSpec:
    """One coded product as the graph gives it, before any of its tasks is laid out.

    Attributes
    ----------
    a_keys, b_keys : tuple of tuple of key
        ``a_keys[i][j]`` and ``b_keys[j][c]``: the keys of ``A``'s and ``B``'s blocks (row,
        inner and column block indices); ``A``'s row blocks are the ``k`` data blocks.
    row_chunks, col_chunks : tuple of int
        Rows of each of ``A``'s row blocks, columns of each output block.
    dtype : numpy.dtype
        The product's.
    a_dtype : numpy.dtype or None
        ``A``'s (None if unknown): when it differs from the work dtype, ``A``'s blocks are
        cast before encoding.
    inner : int
        The inner dimension.
    code : ErasureCode
    faults : FaultPlan or None
    options : CodedOptions
    out_name : str
        The output layer's name: its blocks are ``(out_name, i, c)``.
    token : str
        Names the product's tasks.
    homes : tuple of (str or None), or None
        The worker holding each of ``A``'s row blocks, when known.
    """

    a_keys: tuple[tuple[Any, ...], ...]
    b_keys: tuple[tuple[Any, ...], ...]
    row_chunks: tuple[int, ...]
    col_chunks: tuple[int, ...]
    dtype: np.dtype
    a_dtype: np.dtype | None
    inner: int
    code: ErasureCode
    faults: FaultPlan | None
    options: CodedOptions
    out_name: str
    token: str
    homes: tuple[str | None, ...] | None = None

    @property
    def work(self) -> np.dtype:
        """The dtype the coded work runs in (`work_dtype`)."""
        return np.dtype(work_dtype(self.dtype))

    @property
    def cast(self) -> bool:
        """Whether ``A``'s blocks are cast to the work dtype before they are used."""
        return self.a_dtype is None or np.dtype(self.a_dtype) != self.work

    @property
    def col_bounds(self) -> list[int]:
        """Column bounds of the output blocks."""
        return _bounds(self.col_chunks)


def _bounds(chunks: tuple[int, ...]) -> list[int]:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(int).tolist()


@dataclass
class EncodedBlocks:
    """The encode tasks of a coded product and what the later tasks need to find.

    Attributes
    ----------
    layer : dict
        The tasks: data block preparation, block statistics, scale factors, encoding.
    coded_keys : dict of int -> key
        Coded index -> key of its block; identically zero coded blocks have none.
    sources : dict of int -> int
        Coded index -> the data block it is as it is (its work task applies the block's
        scale factor), or -1 for a sum.
    data_keys : list of key
        The prepared data blocks (padded, cast to the work dtype).
    scales_key : str
        The key of the job's `Scales`.
    placement : dict of key -> str
        Encode task -> the worker to run it on, when the data blocks' workers were given.
    """

    layer: dict[Any, Task]
    coded_keys: dict[int, Any]
    sources: dict[int, int]
    data_keys: list[Any]
    scales_key: str
    placement: dict[Any, str]


@dataclass(frozen=True)
class ProductPlan:
    """One coded product, as both layouts (`dask_polar.array._cluster` and the driver
    layout in `dask_polar.array.matmul`) lay it out after its encode tasks.

    Attributes
    ----------
    code : ErasureCode
    token : str
        Names the product's tasks (``polar-work-<token>``, ...).
    encoded : EncodedBlocks
        The encode tasks and the keys of the coded blocks.
    rhs_key : key
        The key of ``B`` as one block.
    row_chunks, col_chunks : tuple of int
        Rows of each data block (in data block order) and columns of each output block.
    dtype, work : numpy.dtype
        The product's dtype, and the dtype the coded work runs in.
    faults : FaultPlan or None
        Injected stragglers and failures.
    options : CodedOptions
    out_name : str
        The output layer's name: its blocks are ``(out_name, i, c)``.
    homes : tuple of (str or None), or None
        The worker holding each data block, when known.
    order : tuple of int, or None
        ``order[i]`` is the output row block that data block ``i`` is (None: the identity).
    """

    code: ErasureCode
    token: str
    encoded: EncodedBlocks
    rhs_key: Any
    row_chunks: tuple[int, ...]
    col_chunks: tuple[int, ...]
    dtype: np.dtype
    work: np.dtype
    faults: FaultPlan | None
    options: CodedOptions
    out_name: str
    homes: tuple[str | None, ...] | None = None
    order: tuple[int, ...] | None = None

    @property
    def block_rows(self) -> int:
        """Rows of every coded block (the data blocks are padded to it)."""
        return max(self.row_chunks)

    @property
    def col_bounds(self) -> list[int]:
        """Column bounds of the output blocks."""
        return _bounds(self.col_chunks)
