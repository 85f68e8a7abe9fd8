"""Where coded tasks run, and the one early-completion loop they all share.

A *backend* is a small adapter with ``submit(fn, *args, key=, background=) ->
concurrent.futures.Future`` (``background``: a low-priority task, e.g. parity),
``cancel(futures)``, ``cancel_flag()`` (an object with ``set``, ``is_set`` and
``wait(timeout)`` that work tasks poll to stop early) and ``reference(key, value)`` (how a
work task receives a block the driver already holds); optionally ``remote_results(code,
flag, result_shape, dtype)``, when results stay where they ran and are decoded there
(`RemoteResults`). `run_early_completion` does the rest.
"""

from __future__ import annotations

from ._core import CANCELLED, RemoteResults, WorkOutcome, run_early_completion
from .local import ExecutorBackend, ThreadBackend, open_backend

__all__ = [
    "CANCELLED",
    "ExecutorBackend",
    "RemoteResults",
    "ThreadBackend",
    "WorkOutcome",
    "open_backend",
    "run_early_completion",
]
