"""dask_polar: straggler-resilient matrix products for Dask, with polar codes."""

from __future__ import annotations

from . import codes, config
from .array import coded_matmul
from .exceptions import CodedJobError, NotDecodableError
from .jobs import JobCallback, JobRecord, jobs, last_job

__version__ = "0.1.0.dev0"

__all__ = [
    "CodedJobError",
    "JobCallback",
    "JobRecord",
    "NotDecodableError",
    "__version__",
    "codes",
    "coded_matmul",
    "config",
    "jobs",
    "last_job",
]
