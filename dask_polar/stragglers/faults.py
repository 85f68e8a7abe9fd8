"""Injected faults: how a coded task straggles (politely or not) and which tasks fail.

A real straggler polls nothing: it is a worker stuck in a long C call, a slow node, a task
that raises, a paused process. `Faults` injects each kind into the work tasks of a coded
product, so that tests, benchmarks and users can check that early completion does not rely
on the straggler's cooperation. `Faults.plan` turns it into a `FaultPlan` for one job: the
seeded per-task delays and the failing indices, which the tasks carry and act on.

Pure numpy, no Dask import.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .models import RuntimeModel, draw_delays

__all__ = ["FAULT_MODES", "Faults", "FaultPlan", "InjectedFailure", "as_faults", "fault_plan"]

FaultMode = Literal["cooperative", "block", "slow"]
#: How an injected delay is spent inside a task (see `Faults`).
FAULT_MODES: tuple[str, ...] = ("cooperative", "block", "slow")


class InjectedFailure(RuntimeError):
    """Raised by a work task listed in ``Faults(fail=...)``, on every attempt."""

    def __reduce__(self) -> tuple[Any, tuple]:
        return type(self), self.args


@dataclass(frozen=True)
class Faults:
    """Faults to inject into the work tasks of a coded product (testing and benchmarks).

    Accepted wherever ``stragglers=`` is: `dask_polar.coded_matmul`, `dask_polar.enable`,
    `dask_polar.CodedMatrix`, the estimators. A plain runtime model or array of delays
    there means ``Faults(delays)``.

    Parameters
    ----------
    delays : RuntimeModel or array of shape (n,), optional
        Each task's delay in seconds: a model from `dask_polar.stragglers` drawn with the
        job's seed (re-runs and backup copies get fresh draws), or the delays themselves
        (re-runs get none). None: no delays.
    mode : {"cooperative", "block", "slow"}
        How a task spends its delay.

        - ``"cooperative"``: waiting on the job's cancel flag, so it returns as soon as
          the job is decodable (a polite straggler);
        - ``"block"``: in ``time.sleep``, looking at no flag (a task stuck in C, a blocking
          read): only a design that does not wait for the task finishes early;
        - ``"slow"``: repeating its own product in row panels until its work took
          ``1 + delay / base`` times as long (a slow node); it checks the flag between
          panels like any work task.
    fail : iterable of int
        Coded task indices that raise `InjectedFailure` (a `RuntimeError`) on every
        attempt, retries included.
    base : float, optional
        The delay that doubles a ``"slow"`` task's work. Default: the median of the model
        (or of the given delays' positive entries).

    Examples
    --------
    >>> from dask_polar.stragglers import Bimodal
    >>> faults = Faults(Bimodal(0.1, 0.01, 10), mode="block", fail=[3])
    >>> plan = faults.plan(8, seed=0)
    >>> plan.mode, plan.fails(3), plan.fails(2), plan.first.shape
    ('block', True, False, (8,))
    """

    delays: Any = None
    mode: FaultMode = "cooperative"
    fail: frozenset[int] = field(default_factory=frozenset)
    base: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, got {self.mode!r}")
        _check_delays(self.delays, "delays", "a RuntimeModel or an array of delays in seconds")
        fail = self.fail
        if isinstance(fail, (int, np.integer)) or not isinstance(fail, Iterable):
            raise TypeError(f"fail must be an iterable of task indices, got {fail!r}")
        indices = []
        for j in fail:
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or j < 0:
                raise ValueError(f"fail must hold non-negative task indices, got {j!r}")
            indices.append(int(j))
        object.__setattr__(self, "fail", frozenset(indices))
        if self.base is not None and not (np.isfinite(self.base) and self.base > 0):
            raise ValueError(f"base must be a positive number of seconds, got {self.base!r}")

    def plan(self, n: int, seed: int) -> FaultPlan:
        """The faults of one job of ``n`` coded tasks, drawn with ``seed``.

        Raises
        ------
        ValueError
            If the delays are not ``n`` non-negative finite seconds, or a ``fail`` index is
            not below ``n``.
        """
        if any(j >= n for j in self.fail):
            raise ValueError(
                f"fail indices must be below the {n} coded tasks, got {sorted(self.fail)}"
            )
        if self.delays is None:
            delays = np.zeros((2, n))
            base = self.base or 1.0
        elif isinstance(self.delays, RuntimeModel):
            first = draw_delays(self.delays, n, seed=seed)
            delays = np.stack([first, draw_delays(self.delays, n, seed=seed + 1)])
            base = self.base or float(self.delays.ppf(0.5)) or 1.0
        else:
            given = np.asarray(self.delays, dtype=np.float64)  # convertible: __post_init__
            if given.shape != (n,) or np.any(given < 0) or not np.all(np.isfinite(given)):
                raise ValueError(
                    f"stragglers must be a runtime model or {n} non-negative delays in "
                    f"seconds, got shape {given.shape}"
                )
            delays = np.stack([given, np.zeros(n)])
            positive = given[given > 0]
            base = self.base or (float(np.median(positive)) if positive.size else 1.0)
        return FaultPlan(delays.astype(np.float64), self.mode, self.fail, base)


@dataclass(frozen=True, eq=False)
class FaultPlan:
    """The injected faults of one job: what each work task does (picklable, shipped in tasks).

    ``delays`` has shape ``(2, n)``: first attempts, then re-runs and backup copies.
    """

    delays: np.ndarray
    mode: FaultMode = "cooperative"
    fail: frozenset[int] = frozenset()
    base: float = 1.0

    @property
    def first(self) -> np.ndarray:
        """The first attempts' delays, shape ``(n,)``."""
        return self.delays[0]

    def delay(self, index: int, attempt: int = 0) -> float:
        """Task ``index``'s delay at ``attempt`` (0 first, then re-runs and copies)."""
        return float(self.delays[min(attempt, 1), index])

    def fails(self, index: int) -> bool:
        """Whether task ``index`` fails on every attempt."""
        return index in self.fail

    def strike(self, index: int, attempt: int, flag: Any) -> tuple[bool, float]:
        """Inject task ``index``'s fault before its work, as its ``mode`` says.

        Returns ``(cancelled, slowdown)``: whether the job was cancelled while the task
        waited, and the factor by which its product must be stretched (``"slow"`` mode).

        Raises
        ------
        InjectedFailure
            If the task is listed in ``fail``.
        """
        if self.fails(index):
            raise InjectedFailure(f"injected failure of coded task {index} (attempt {attempt})")
        delay = self.delay(index, attempt)
        if delay <= 0:
            return False, 1.0
        if self.mode == "block":
            time.sleep(delay)  # looks at nothing, like a long C call
            return False, 1.0
        if self.mode == "slow":
            return False, 1.0 + delay / self.base
        return bool(flag.wait(delay)), 1.0


def as_faults(stragglers: Any) -> Faults | None:
    """``stragglers`` (a `Faults`, a runtime model, delays in seconds, or None) as `Faults`.

    Raises
    ------
    TypeError
        If ``stragglers`` is none of these (a string, say), naming the argument.
    """
    if stragglers is None or isinstance(stragglers, Faults):
        return stragglers
    what = "a Faults, a RuntimeModel or an array of delays in seconds"
    _check_delays(stragglers, "stragglers", what)
    return Faults(stragglers)


def _check_delays(delays: Any, name: str, what: str) -> None:
    """A TypeError naming argument ``name`` unless ``delays`` is None, a `RuntimeModel` or
    real numbers (a string is not, though numpy would convert ``"1.5"``)."""
    if delays is None or isinstance(delays, RuntimeModel):
        return
    try:
        if isinstance(delays, str):
            raise TypeError
        np.asarray(delays, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {delays!r:.80}") from None


def fault_plan(stragglers: Any, n: int, seed: int) -> FaultPlan | None:
    """The `FaultPlan` of ``stragglers`` (a `Faults`, a runtime model or delays) for one job."""
    faults = as_faults(stragglers)
    return None if faults is None else faults.plan(n, seed)
