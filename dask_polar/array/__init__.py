"""The Dask layer: coded matrix products as Dask array graphs."""

from __future__ import annotations

from ._auto import plan_matmul
from ._options import split_rows
from .coded_matrix import CodedMatrix
from .matmul import CodedOptions, coded_matmul, make_code
from .rewrite import coded, disable, enable, enabled, optimize

__all__ = [
    "CodedMatrix", "CodedOptions", "coded", "coded_matmul", "disable", "enable", "enabled",
    "make_code", "optimize", "plan_matmul", "split_rows",
]
