"""What a coded job's run keeps on the scheduler: its start, and a watch that does not let
it wait on a worker that stopped answering.

The run's start (`begin_run`) names its cancel flag and starts its ``timeout``. It is kept on
the scheduler, so a start task run again (its result was lost with a worker) gives the same
run, not a new one with a fresh flag and deadline.

A worker process that is paused (SIGSTOP, a frozen VM) keeps its tasks "processing" and its
data unreachable, and Dask drops it only after ``distributed.scheduler.worker-ttl`` (5
minutes by default). A coded job would not need its work (the other results decode), but
the graph does: the decode tasks depend on every work task, and a task whose input lives
only on that worker cannot even start. So while a coded job runs, `watch_job` runs on the
scheduler (started with the run) and looks at the job's pending tasks. A worker
that processes one of them, or alone holds an input of one, and that has neither sent a
heartbeat for ``polar.unresponsive`` seconds nor answers a ping, is removed from the
scheduler (its nanny restarts its process). Dask's own rules then do the rest, exactly as
for a worker that died: its tasks run elsewhere and its data is recomputed, and a work
task re-run after the decodable moment returns at once, cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RunState", "begin_run", "run_started", "watch_job"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the job's tasks (a few dict lookups per task on the
#: scheduler's event loop).
WATCH_SECONDS = 0.25
#: Task states in which a task of the job is still to finish ("released" is one only for an
#: instant on its way to "waiting", or for good once its result is no longer wanted).
PENDING = frozenset({"waiting", "queued", "no-worker", "processing"})
#: The start of each live run, by its start task's key: its scheduler state (a start task
#: run again keeps it; a new compute of the graph makes a new one, equal to the old by key
#: only, unless the last compute's tasks are not forgotten yet) and the run's start.
_STARTS: dict[Any, tuple[weakref.ref, float]] = {}
#: The stimulus with which the watch removes a silent worker.
_REMOVED_UNRESPONSIVE = "polar-unresponsive"
#: States of a run's task that has begun (`_under_way`).
_BEGUN = frozenset({"processing", "memory", "erred"})
_WATCHES: set[asyncio.Future] = set()  # the watches and restarts under way (asyncio keeps weak refs)


@dataclass(frozen=True)
class RunState:
    """What a run keeps on the scheduler besides its watch, deleted when the run ends.

    Attributes
    ----------
    hold : tuple
        Keys the scheduler keeps in memory for the run (tasks that may need them start only
        when the job finds it late), as wanted by a client of the run's own.
    flag : str, optional
        The prefix of the run's cancel flag; the ``distributed.Event`` ``f"{flag}-{start!r}"``.
    topic : str, optional
        The prefix of the run's event topic, ``f"{topic}-{start!r}"`` (`log_event`).
    """

    hold: tuple[Any, ...] = ()
    flag: str | None = None
    topic: str | None = None


def begin_run(
    start_key: Any, now: float, keys: list[Any], outputs: list[Any],
    unresponsive: float | None, state: RunState = RunState(), dask_scheduler: Any = None,
) -> float:
    """The start of the run whose start task is ``start_key``: ``now`` for a new run, which
    also starts its `watch_job` (and holds ``state.hold``), or the first start of a run
    whose start task runs again.

    Runs on the scheduler (``Client.run_on_scheduler``).
    """
    ts = dask_scheduler.tasks.get(start_key)
    if ts is None:  # not a task of this scheduler (should not happen): a run of its own
        return now
    known = _STARTS.get(start_key)
    if known is not None and known[0]() is ts and (
        _under_way(dask_scheduler, keys) or _lost(dask_scheduler, start_key)
    ):
        return known[1]
    _STARTS[start_key] = (weakref.ref(ts), now)
    if state.hold:
        dask_scheduler.client_desires_keys(keys=list(state.hold), client=_holder(start_key, now))
    _keep(watch_job(ts, now, keys, outputs, unresponsive, dask_scheduler, state))
    return now


def _under_way(scheduler: Any, keys: list[Any]) -> bool:
    """Whether a run's tasks ``keys`` have begun: one has a result or runs. A start task run
    again (its result lost with a worker) finds its run under way; the start of a new
    compute of the same graph, whose tasks all wait for it, does not (its scheduler state
    may be the last compute's, kept while the last run's tasks are forgotten)."""
    tasks = scheduler.tasks
    return any((ts := tasks.get(key)) is not None and ts.state in _BEGUN for key in keys)


def _lost(scheduler: Any, key: Any) -> bool:
    """Whether ``key``'s result was last let go because a worker was removed (its start
    runs again within its run, even if none of the run's tasks had begun: they were
    waiting for that result), not because its compute released it."""
    for transition in reversed(scheduler.story(key)):
        _, start, finish, _, stimulus, *_ = transition
        if start == "memory":
            return str(stimulus).startswith(
                ("handle-worker-cleanup", "remove-worker", _REMOVED_UNRESPONSIVE)
            )
    return False


def _holder(start_key: Any, started: float) -> str:
    """The name of the client that holds a run's keys on the scheduler."""
    return f"polar-hold-{start_key}-{started!r}"


def _end_run(scheduler: Any, start_key: Any, started: float, state: RunState) -> None:
    """Delete what the run kept on the scheduler: its held keys, its flag, its topic."""
    holder = _holder(start_key, started)
    if holder in scheduler.clients:
        held = [ts.key for ts in scheduler.clients[holder].wants_what]
        scheduler.client_releases_keys(keys=held, client=holder)
        del scheduler.clients[holder]
    if state.flag is not None:
        events = scheduler.extensions.get("events")
        if events is not None:
            events.event_clear(f"{state.flag}-{started!r}")
    if state.topic is not None:
        scheduler._broker.truncate(f"{state.topic}-{started!r}")


def run_started(
    start_key: Any, keys: list[Any], outputs: list[Any], unresponsive: float | None,
    state: RunState = RunState(),
) -> float:
    """The start of this run of a coded job, from the start task ``start_key`` (see
    `begin_run`); where the scheduler cannot run dask_polar's code, the time now and no
    watch (Dask's ``worker-ttl`` then applies)."""
    now = time.time()
    try:
        from distributed import get_client

        return get_client().run_on_scheduler(
            begin_run, start_key, now, keys, outputs, unresponsive, state
        )
    except Exception as error:  # e.g. a scheduler without dask_polar
        logger.info("polar job %s: started without the scheduler's watch (%r)", start_key, error)
        return now


def _keep(coroutine: Any) -> None:
    task = asyncio.ensure_future(coroutine)
    _WATCHES.add(task)
    task.add_done_callback(_WATCHES.discard)


async def watch_job(
    start: Any, started: float, keys: list[Any], outputs: list[Any],
    unresponsive: float | None, scheduler: Any, state: RunState = RunState(),
) -> None:
    """Watch the tasks ``keys`` of the run that ``start`` (its start task's state) began at
    ``started``, until its ``outputs`` have all finished (or are forgotten): then the run
    ends (its ``state`` is deleted), and a later compute of the same graph is a new run.
    Meanwhile remove each worker that holds the run up and stays silent for
    ``unresponsive`` seconds (`silent_holders`, and no answer to a ping); None: only watch
    for the end."""
    run = f"{start.key}-{started!r}"
    # outputs fused into later tasks by an optimization are not the scheduler's keys: then
    # the run lasts while any of its tasks is pending
    ends = [key for key in outputs if key in scheduler.tasks] or keys
    try:
        while any(_pending(scheduler, key) for key in ends):
            await asyncio.sleep(WATCH_SECONDS)
            if unresponsive is None:
                continue
            suspects = silent_holders(scheduler, keys, unresponsive, time.time())
            if not suspects:
                continue
            answers = await asyncio.gather(
                *(_answers(scheduler, ws.address, unresponsive / 4) for ws in suspects)
            )
            for ws, answered in zip(suspects, answers):
                if not answered and ws.address in scheduler.workers:
                    await _remove(scheduler, ws, run, unresponsive)
    finally:
        _end_run(scheduler, start.key, started, state)
        if _STARTS.get(start.key, (None, None))[1] == started:
            del _STARTS[start.key]


def _pending(scheduler: Any, key: Any) -> bool:
    ts = scheduler.tasks.get(key)
    return ts is not None and ts.state in PENDING


def silent_holders(
    scheduler: Any, keys: Iterable[Any], unresponsive: float, now: float
) -> list[Any]:
    """The workers (``WorkerState``) that hold up one of the pending tasks ``keys`` and have
    not sent a heartbeat for ``unresponsive`` seconds: the worker a task is processing on,
    and the holders of a finished input when all its holders are silent (a fetch from a
    silent worker hangs; one from another holder does not)."""
    silent: dict[str, Any] = {}

    def quiet(ws: Any) -> bool:
        return now - ws.last_seen > unresponsive

    for key in keys:
        ts = scheduler.tasks.get(key)
        if ts is None or ts.state not in PENDING:
            continue
        if ts.processing_on is not None and quiet(ts.processing_on):
            silent[ts.processing_on.address] = ts.processing_on
        for dep in ts.dependencies:
            holders = dep.who_has or ()
            if holders and all(quiet(ws) for ws in holders):
                silent.update((ws.address, ws) for ws in holders)
    return list(silent.values())


async def _answers(scheduler: Any, address: str, timeout: float) -> bool:
    """Whether the worker at ``address`` answers a ping within ``timeout`` seconds (a
    busy worker does: its event loop runs beside the task threads)."""
    try:
        await asyncio.wait_for(scheduler.rpc(address).identity(), timeout)
    except (asyncio.TimeoutError, OSError):
        return False
    return True


async def _remove(scheduler: Any, ws: Any, run: str, unresponsive: float) -> None:
    """Remove the silent worker ``ws`` from the scheduler now (its tasks and data become
    Dask's to re-run) and have its nanny, if any, kill and restart its process."""
    silent_for = time.time() - ws.last_seen
    logger.warning(
        "polar job %s: worker %s has sent no heartbeat for %.1f s (polar.unresponsive: %g) "
        "and does not answer; removing it so the job's tasks run elsewhere%s",
        run, ws.address, silent_for, unresponsive,
        " (its nanny restarts it)" if ws.nanny else "",
    )
    scheduler.log_event(
        "polar", {"action": "remove-unresponsive", "worker": ws.address, "job": run,
                  "silent_for": silent_for},
    )
    nanny = ws.nanny
    await scheduler.remove_worker(
        ws.address, stimulus_id=f"{_REMOVED_UNRESPONSIVE}-{time.time()}", close=nanny is None
    )
    if nanny:
        # waiting for the kill (0.8 s, then SIGKILL, which a stopped process also obeys)
        # would hold up this watch: let it run beside
        _keep(_restart(scheduler, nanny, run))


async def _restart(scheduler: Any, nanny: str, run: str) -> None:
    from distributed.core import rpc

    try:
        async with rpc(nanny, connection_args=scheduler.connection_args) as remote:
            await remote.kill(timeout=1.0, reason=f"polar-unresponsive-{run}")
    except Exception as error:  # the nanny is gone too: nothing to restart
        logger.info("polar job %s: could not restart the worker of nanny %s (%r)", run, nanny, error)
