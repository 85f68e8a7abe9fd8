"""The Dask layer: coded matrix products as Dask array graphs."""

from __future__ import annotations

from .matmul import coded_matmul, make_code

__all__ = ["coded_matmul", "make_code"]
