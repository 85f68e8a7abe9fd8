"""dask_polar: straggler-resilient matrix products for Dask, with polar codes."""

from __future__ import annotations

from . import blackbox, codes, config, jobs, linear_model
from .array import (
    CodedMatrix, coded, coded_matmul, disable, enable, enabled, optimize, plan_matmul,
)
from .diagnostics import ProgressBar
from .exceptions import CodedJobError, CodedJobTimeout, NotDecodableError, RemoteDecodeError
from .jobs import JobCallback, JobRecord, last_job

__version__ = "0.1.0.dev0"

__all__ = [
    "CodedJobError",
    "CodedJobTimeout",
    "CodedMatrix",
    "JobCallback",
    "JobRecord",
    "NotDecodableError",
    "ProgressBar",
    "RemoteDecodeError",
    "__version__",
    "blackbox",
    "codes",
    "coded",
    "coded_matmul",
    "disable",
    "enable",
    "enabled",
    "config",
    "jobs",
    "last_job",
    "linear_model",
    "optimize",
    "plan_matmul",
]
