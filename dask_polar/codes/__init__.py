"""Erasure codes for coded computation, in pure numpy.

Every code has ``n``, ``k``, ``name``, ``encode``, ``decodable``, ``decode``,
``min_results`` and ``decoder()`` (see `ErasureCode`). Nothing here imports Dask.
"""

from __future__ import annotations

from ..exceptions import NotDecodableError
from ._base import DecodabilityTracker, ErasureCode, IncrementalDecoder
from .construction import (
    erasure_probabilities,
    expected_finish_times,
    information_set,
    polarize,
    polarized_cdfs,
)
from .local_product import LocalProductCode
from .mds import MDSCode
from .polar import PolarCode
from .replication import ReplicationCode, UncodedCode

__all__ = [
    "DecodabilityTracker",
    "ErasureCode",
    "IncrementalDecoder",
    "LocalProductCode",
    "MDSCode",
    "NotDecodableError",
    "PolarCode",
    "ReplicationCode",
    "UncodedCode",
    "erasure_probabilities",
    "expected_finish_times",
    "information_set",
    "polarize",
    "polarized_cdfs",
]
