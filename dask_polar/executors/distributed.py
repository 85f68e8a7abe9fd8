"""The dask.distributed backend: coded tasks become cluster tasks, driven from a worker."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from distributed import Event, Future, as_completed, worker_client

__all__ = ["DistributedBackend"]

#: Arguments at least this large are scattered to the workers instead of sent inline.
SCATTER_BYTES = 1 << 20


class DistributedBackend:
    """Submit coded tasks to the cluster from inside a running task.

    The driving task secedes from its worker's thread pool (``worker_client``), refers to
    blocks the cluster already holds by key (no data through the scheduler), and bridges
    distributed futures to ``concurrent.futures`` ones for the shared loop. The cancel flag is
    a ``distributed.Event`` that work tasks poll between row panels.
    """

    name = "distributed"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._futures: dict[cf.Future, Future] = {}
        self._local: dict[Any, cf.Future] = {}  # remote key -> local future
        self._lock = threading.Lock()
        self._completed: as_completed | None = None
        self._pump: threading.Thread | None = None

    @classmethod
    @contextlib.contextmanager
    def from_worker(cls) -> Iterator[DistributedBackend]:
        with worker_client(separate_thread=True) as client:
            backend = cls(client)
            try:
                yield backend
            finally:
                backend.close()

    def submit(
        self, fn: Callable[..., Any], *args: Any, key: Any = None, background: bool = False
    ) -> cf.Future:
        """Submit ``fn(*args)`` as a cluster task; ``background`` tasks (parity) get a lower
        scheduler priority, so workers run them only when nothing else is ready."""
        priority = -1 if background else 0
        remote = self.client.submit(fn, *args, pure=False, key=key, priority=priority)
        local: cf.Future = cf.Future()
        local.set_running_or_notify_cancel()
        with self._lock:
            self._futures[local] = remote
            self._local[remote.key] = local
            if self._pump is None or not self._pump.is_alive():
                # results arrive through one as_completed that fetches them concurrently;
                # a done-callback per future would fetch them one at a time in one thread
                self._completed = as_completed([remote], with_results=True, raise_errors=False)
                self._pump = threading.Thread(
                    target=self._deliver, args=(self._completed,), daemon=True,
                    name="dask-polar-results",
                )
                self._pump.start()
            else:
                self._completed.add(remote)
        return local

    def _deliver(self, completed: as_completed) -> None:
        for remote, result in completed:
            with self._lock:
                local = self._local.pop(remote.key, None)
            if local is None or local.done():
                continue
            if remote.status == "finished":
                local.set_result(result)
            else:  # erred (result is the exception), cancelled, or lost with its worker
                local.set_exception(
                    result if isinstance(result, BaseException)
                    else cf.CancelledError(f"{remote.key} {remote.status}")
                )

    def cancel(self, futures: list[cf.Future]) -> None:
        remote = [self._futures[f] for f in futures if f in self._futures]
        for local in futures:
            local.cancel() or local.done() or local.set_exception(cf.CancelledError("cancelled"))
        # a finished one is left to its gather (cancelling it mid-gather makes the scheduler
        # log "Couldn't gather keys"); it is released with its last reference
        running = [future for future in remote if future.status != "finished"]
        if running:
            self.client.cancel(running)

    def cancel_flag(self) -> Event:
        return Event(f"polar-cancel-{uuid.uuid4().hex}", client=self.client)

    def reference(self, key: Any, value: Any) -> Any:
        """What a task receives for ``value``, without sending data through the scheduler.

        A graph key the driving task depends on (so the cluster holds it while we run)
        becomes a future of that key; a future stays itself; a large array is scattered to
        the workers once; a small one travels inline with each task.
        """
        if key is not None:
            return Future(key, self.client)
        if isinstance(value, Future) or getattr(value, "nbytes", 0) < SCATTER_BYTES:
            return value
        return self.client.scatter(value, hash=False)

    def close(self) -> None:
        # The events stay set: a straggler that polls late must still see its job cancelled.
        # Each is a few bytes of scheduler state.
        self._futures.clear()
