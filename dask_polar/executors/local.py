"""Backends in this process: a thread pool, or any ``concurrent.futures.Executor``."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ThreadBackend", "ExecutorBackend", "open_backend"]


class ExecutorBackend:
    """Run coded tasks on a user's ``concurrent.futures.Executor``.

    If the executor has a ``cancel_flag()`` method (as the Lambda executor does), work tasks
    poll that flag; a thread pool gets a ``threading.Event``; any other executor (e.g. a
    process pool) a flag that never fires, so its stragglers run to the end and their
    results are ignored.
    """

    def __init__(self, executor: cf.Executor, name: str | None = None) -> None:
        self.executor = executor
        self.name = name or type(executor).__name__

    def submit(
        self, fn: Callable[..., Any], *args: Any, key: Any = None, background: bool = False
    ) -> cf.Future:
        """Run ``fn(*args)``. ``background`` (a low-priority task) changes nothing here: the
        loop submits such tasks after the others, all the priority an executor offers."""
        return self.executor.submit(fn, *args)

    def cancel(self, futures: list[cf.Future]) -> None:
        for future in futures:
            future.cancel()

    def cancel_flag(self) -> Any:
        make = getattr(self.executor, "cancel_flag", None)
        if make is not None:
            return make()
        if isinstance(self.executor, cf.ThreadPoolExecutor):
            return threading.Event()
        return _Unreachable()

    def wait_job(self, flag: Any) -> None:
        """The job of ``flag`` has decoded: wait for its cleanup if the executor waits for
        it (the Lambda executor's ``wait_for_cleanup``)."""
        wait = getattr(self.executor, "wait_job", None)
        if wait is not None:
            wait(flag)

    def reference(self, key: Any, value: Any) -> Any:
        """What a task receives for ``value``: the executor's own reference if it has one
        (the Lambda executor stores blocks in S3 once), else the value itself."""
        make = getattr(self.executor, "reference", None)
        return make(key, value) if make is not None else value

    def remote_results(
        self, code: Any, flag: Any, result_shape: tuple[int, ...], dtype: Any
    ) -> Any:
        """Where a job's results stay until decoded: the executor's own (the Lambda
        executor keeps them in S3 and decodes in its functions, unless ``decode="client"``),
        else None: they come back to this process (see `RemoteResults`)."""
        make = getattr(self.executor, "remote_results", None)
        return None if make is None else make(code, flag, result_shape, dtype)

    def close(self) -> None:
        """Nothing to release: the executor belongs to the caller."""


class _Unreachable:
    """The cancel flag of an executor in other processes that offers none: tasks cannot be
    told to stop (they run to the end and their results are ignored), but it pickles."""

    def set(self) -> None:
        """Nothing to tell: remote tasks cannot see this flag."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(timeout or 0.0)
        return False


def _idle_seconds() -> float:
    """Idle CPU seconds of the machine since boot, all cores (psutil, a distributed
    dependency: ``/proc/stat`` on Linux)."""
    import psutil

    times = psutil.cpu_times()
    return times.idle + getattr(times, "iowait", 0.0)


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


class _SingleThreadedBLAS:
    """Reference-counted ``threadpoolctl`` limit of BLAS to one thread per call.

    Dozens of task threads each running a multi-threaded BLAS on a few cores thrash (5x
    slower measured for 16 threads on 2 cores); one BLAS thread per task keeps the cores
    busy without oversubscription. The limit is process-wide, so it is taken by the first
    backend that needs it and given back by the last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limiter = threadpool_limits(limits=1, user_api="blas")
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


_BLAS = _SingleThreadedBLAS()


class ThreadBackend(ExecutorBackend):
    """A thread pool of ``max_workers`` threads, one per simulated worker.

    It measures its spare cores (`idle_cores`), so that a systematic code's parity is
    launched into the gaps that blocked or slow tasks leave. While a job runs, BLAS runs one
    thread per call in this process when the pool has at least as many threads as there
    are cores (see `_SingleThreadedBLAS`).
    """

    def __init__(self, max_workers: int) -> None:
        pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dask-polar")
        super().__init__(pool, name="threads")
        self._limits_blas = max_workers >= _cores()
        self._last = (time.monotonic(), _idle_seconds())

    def background_gate(self) -> threading.Semaphore:
        """Slots for background work, one per core: background tasks take one per row
        panel (`dask_polar.array._tasks.panel_product`), so a few run at a time."""
        return threading.Semaphore(self.cores)

    @property
    def cores(self) -> int:
        """The cores the pool's tasks share."""
        return _cores()

    def idle_cores(self, window: float = 0.02) -> float | None:
        """Cores the machine left idle over the current measuring window, once it has
        lasted ``window`` seconds (then a new one starts); None before that. The room for
        low-priority work: the whole machine counts (other processes' load is no room)."""
        now = (time.monotonic(), _idle_seconds())
        wall, idle = self._last
        elapsed = now[0] - wall
        if elapsed < window:
            return None
        self._last = now
        return max(0.0, (now[1] - idle) / elapsed)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The span of one job: single-threaded BLAS if the pool oversubscribes the cores."""
        if not self._limits_blas:
            yield
            return
        _BLAS.acquire()
        try:
            yield
        finally:
            _BLAS.release()

    def close(self) -> None:
        # stragglers see the cancel flag and return soon; don't wait for them
        self.executor.shutdown(wait=False, cancel_futures=True)


def default_client() -> Any:
    """The default dask.distributed client of this process, or None."""
    try:
        from distributed import default_client as distributed_default_client

        return distributed_default_client()
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def open_backend(
    executor: cf.Executor | None, local_workers: int, client: Any = None
) -> Iterator[Any]:
    """The backend for a job driven in this process.

    A given ``executor`` wins, then a given distributed ``client``; inside a
    dask.distributed task the cluster itself (through ``worker_client``); otherwise a thread
    pool of ``local_workers`` threads.
    """
    if client is not None and executor is None:
        from .distributed import DistributedBackend

        backend = DistributedBackend(client)
        try:
            yield backend
        finally:
            backend.close()
        return
    if executor is not None:
        yield ExecutorBackend(executor)
        return
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        backend = ThreadBackend(local_workers)
        try:
            yield backend
        finally:
            backend.close()
        return
    from .distributed import DistributedBackend

    with DistributedBackend.from_worker() as backend:
        yield backend
