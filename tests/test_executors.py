"""The early-completion loop: malformed results, hanging tasks, retries and the job timeout.

The faults are injected by one backend, `FaultyBackend`, keyed by ``(index, attempt)`` of
each coded task (the loop names every submission ``(polar-work-<token>, index, attempt)``).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import pickle
import time

import numpy as np
import pytest

import dask_polar
from dask_polar import CodedJobError, CodedJobTimeout
from dask_polar.array._tasks import run_coded_product
from dask_polar.stragglers import FaultPlan
from dask_polar.codes import MDSCode, PolarCode, UncodedCode
from dask_polar.executors import ExecutorBackend, WorkOutcome

ROWS, P, Q = 6, 5, 3


def _short(value: np.ndarray) -> np.ndarray:
    return value[:-1]  # one row short


def _single(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float32)


def _complex(value: np.ndarray) -> np.ndarray:
    return value + 0j


def _transposed(value: np.ndarray) -> np.ndarray:
    return value.T


def _raise() -> WorkOutcome:
    raise RuntimeError("injected failure")


def _garbage() -> str:
    return "garbage"  # not a WorkOutcome at all


def _corrupted(fn, corrupt, *args) -> WorkOutcome:
    outcome = fn(*args)
    return dataclasses.replace(outcome, value=corrupt(outcome.value))


class FaultyBackend(ExecutorBackend):
    """A thread pool whose coded task ``(index, attempt)`` misbehaves as ``faults`` says.

    ``faults[(j, a)]`` is ``"fail"`` (raises), ``"hang"`` (a future that never completes
    until cancelled), ``"garbage"`` (returns a string instead of a `WorkOutcome`) or a
    function applied to the task's result value; ``(j, None)`` matches every attempt of
    task ``j``.
    """

    def __init__(self, faults: dict) -> None:
        super().__init__(cf.ThreadPoolExecutor(max_workers=16), name="faulty")
        self.faults = faults
        self.hanging: list[cf.Future] = []
        self.cancelled: list[cf.Future] = []  # what the job cancelled
        self.flag = None

    def cancel_flag(self):
        self.flag = super().cancel_flag()
        return self.flag

    def cancel(self, futures):
        self.cancelled.extend(futures)
        super().cancel(futures)

    def submit(self, fn, *args, key=None):
        _, j, attempt = key
        fault = self.faults.get((j, attempt), self.faults.get((j, None)))
        if fault == "hang":
            future: cf.Future = cf.Future()
            self.hanging.append(future)
            return future
        if fault in ("fail", "garbage"):
            return self.executor.submit(_raise if fault == "fail" else _garbage)
        if fault is not None:
            return self.executor.submit(_corrupted, fn, fault, *args)
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def run(code, faults, *, delays=None, backend=None, **options):
    """Run ``data @ rhs`` as a coded job on a `FaultyBackend`; return it and numpy's answer."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((code.k, ROWS, P))
    rhs = rng.standard_normal((P, Q))
    coded = code.encode(data)
    backend = backend or FaultyBackend(faults)
    options = {"retries": 2, "backup": None, "timeout": None, **options}
    try:
        out = run_coded_product(
            code, backend, dict(enumerate(coded)), rhs, result_shape=(ROWS, Q),
            dtype=np.dtype(np.float64), token="test", panel_rows=None, **options,
            faults=None if delays is None else FaultPlan(delays),
        )
    finally:
        for future in backend.hanging:  # never leave a caller waiting on them
            future.cancel()
        backend.close()
    return out, data @ rhs


class TestMalformedResults:
    @pytest.mark.parametrize("corrupt", [_short, _single, _complex, _transposed])
    @pytest.mark.parametrize(
        "code",
        [
            PolarCode(8, 4),  # decodes from the others
            UncodedCode(4),  # must re-run the malformed task
        ],
    )
    def test_a_malformed_result_is_an_erasure(self, code, corrupt):
        # the malformed result arrives first, so the healthy ones must not be blamed for it
        delays = np.full((2, code.n), 0.05)
        delays[:, 1] = 0.0
        out, expected = run(code, {(1, 0): corrupt}, delays=delays)
        assert out.shape == expected.shape and out.dtype == np.float64
        np.testing.assert_allclose(out, expected, atol=1e-10)

    def test_always_malformed_raises_naming_the_task(self):
        with pytest.raises(
            CodedJobError,
            match=r"task 2: malformed result: shape \(5, 3\), expected \(6, 3\)",
        ) as info:
            run(UncodedCode(4), {(2, None): _short}, retries=1)
        assert list(info.value.failures) == [2]
        assert info.value.received == 3 and info.value.needed == 4

    @pytest.mark.parametrize(
        "fault, match",
        [
            (lambda value: "text", r"task 0: malformed result: a str, expected an array of shape"),
            ("garbage", r"task 0: malformed result: a str, expected a WorkOutcome"),
        ],
    )
    def test_no_array_is_malformed(self, fault, match):
        with pytest.raises(CodedJobError, match=match) as info:
            run(MDSCode(4, 3), {(0, None): fault, (1, None): "fail"}, retries=0)
        assert sorted(info.value.failures) == [0, 1]


class TestTimeout:
    def test_names_the_pending_tasks_and_cancels_them(self):
        backend = FaultyBackend({(j, None): "hang" for j in (0, 1, 2)})
        start = time.perf_counter()
        with pytest.raises(
            CodedJobTimeout,
            match=r"timed out after 0.5 s with 2 results, not decodable \(k=3\); "
            r"3 task\(s\) still pending: \[0, 1, 2\]",
        ) as info:
            run(MDSCode(5, 3), {}, backend=backend, timeout=0.5)
        assert time.perf_counter() - start < 10.0  # generous: the machine is noisy
        error = info.value
        assert isinstance(error, CodedJobError)
        assert (error.pending, error.received, error.needed) == ((0, 1, 2), 2, 3)
        assert error.timeout == 0.5
        # everything still pending was cancelled before the exception reached the caller
        assert backend.flag.is_set()
        assert set(backend.hanging) <= set(backend.cancelled)
        assert all(future.cancelled() for future in backend.hanging)
        record = dask_polar.last_job()
        assert record.cancelled == [0, 1, 2] and record.decoded_at is None

    def test_lists_failed_tasks_too(self):
        with pytest.raises(CodedJobTimeout, match=r"pending: \[1\]; 1 task\(s\) failed: task 0: "):
            run(UncodedCode(2), {(0, None): "fail", (1, None): "hang"}, timeout=0.5, retries=0)

    def test_pickles(self):
        error = CodedJobTimeout("job", 1.5, [3, 1], {2: "RuntimeError: x"}, 4, 8)
        again = pickle.loads(pickle.dumps(error))
        assert str(again) == str(error) and again.pending == (1, 3)
        assert again.failures == {2: "RuntimeError: x"}


class TestRetries:
    def test_a_failed_task_is_retried_while_another_hangs(self):
        # without tasks 0 and 1 the results (2, 3 and the hung 4) can never decode: re-run
        # them now, not once every task has ended (the hung one never does)
        faults = {(4, None): "hang", (0, 0): "fail", (1, 0): "fail"}
        start = time.perf_counter()
        out, expected = run(MDSCode(5, 4), faults, timeout=15.0)  # the timeout only guards
        assert time.perf_counter() - start < 10.0
        np.testing.assert_allclose(out, expected, atol=1e-10)
        record = dask_polar.last_job()
        assert record.retries == 2 and record.cancelled == [4]
        assert [record.tasks[j].attempts for j in (0, 1)] == [2, 2]

    def test_no_retry_while_the_pending_tasks_can_still_decode(self):
        out, expected = run(MDSCode(5, 4), {(0, 0): "fail"})
        np.testing.assert_allclose(out, expected, atol=1e-10)
        record = dask_polar.last_job()
        assert record.retries == 0 and record.tasks[0].status == "failed"


@dataclasses.dataclass(frozen=True)
class _Receipt:
    key: int
    shape: tuple
    dtype: np.dtype


def _keep(store, fn, *args):
    outcome = fn(*args)
    value = outcome.value
    if not isinstance(value, np.ndarray):
        return outcome
    key = len(store)
    store[key] = value
    return dataclasses.replace(outcome, value=_Receipt(key, value.shape, value.dtype))


class _MemoryResults:
    """A `RemoteResults` keeping values in a dict (as the Lambda executor keeps them in S3)."""

    receipt_type = _Receipt

    def __init__(self):
        self.store, self.decoded_from, self.closed = {}, None, 0

    def task(self, fn, args, key):
        return _keep, (self.store, fn, *args)

    def decode(self, code, results):
        self.decoded_from = sorted(results)
        values = {j: self.store[r.key] if isinstance(r, _Receipt) else r for j, r in results.items()}
        return code.decode(values)

    def close(self):
        self.closed += 1


class KeepingBackend(FaultyBackend):
    def __init__(self, faults):
        super().__init__(faults)
        self.kept = _MemoryResults()

    def remote_results(self, code, flag, result_shape, dtype):
        assert flag is self.flag and result_shape == (ROWS, Q)
        return self.kept


class TestRemoteResults:
    """Backends that keep results where they ran: the same loop, decode by the backend."""

    def test_decodes_remotely_from_the_set_that_was_decodable(self):
        code = PolarCode(8, 4)
        # a receipt of another shape is an erasure, as a value would be
        backend = KeepingBackend({(1, 0): lambda r: dataclasses.replace(r, shape=(5, 3))})
        out, expected = run(code, {}, backend=backend)
        np.testing.assert_allclose(out, expected, atol=1e-10)
        record = dask_polar.last_job()
        assert backend.kept.decoded_from == record.used and 1 not in record.used
        assert "malformed result: shape (5, 3)" in record.tasks[1].error
        assert backend.kept.closed == 1

    def test_released_when_the_job_fails(self):
        backend = KeepingBackend({(0, None): "fail"})
        with pytest.raises(CodedJobError):
            run(UncodedCode(4), {}, backend=backend, retries=0)
        assert backend.kept.closed == 1 and backend.kept.decoded_from is None

    def test_a_value_where_a_receipt_is_expected_is_malformed(self):
        backend = KeepingBackend({})
        backend.kept.task = lambda fn, args, key: (
            (fn, args) if key[1] == 2 else (_keep, (backend.kept.store, fn, *args))
        )
        with pytest.raises(CodedJobError, match=r"task 2: malformed result: a ndarray, expected "
                           r"a _Receipt of shape \(6, 3\)"):
            run(UncodedCode(4), {}, backend=backend, retries=0)
