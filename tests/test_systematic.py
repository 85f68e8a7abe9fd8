"""Systematic codes run their data blocks first and their parity in the gaps (issue 19)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import dask.array as da
import distributed
import numpy as np
import pytest

import dask_polar
from dask_polar import coded_matmul
from dask_polar.array._systematic import RowFactors, SystematicLayout
from dask_polar.codes import MDSCode, PolarCode, ReplicationCode, UncodedCode
from dask_polar.executors import ExecutorBackend, WorkOutcome, run_early_completion
from dask_polar.jobs import JobRecord
from dask_polar.stragglers import Faults

CODE = PolarCode(16, 8, systematic=True)
LAYOUT = SystematicLayout.of(CODE)
PARITY = LAYOUT.cheapest_parity()


def rand(shape, chunks, seed=0):
    return da.from_array(np.random.default_rng(seed).standard_normal(shape), chunks=chunks)


# -- the layout of a systematic code --------------------------------------------------------


def test_layout_finds_every_data_block_at_its_information_position():
    assert LAYOUT.plain == {int(p): i for i, p in enumerate(CODE.info_set)}
    assert set(LAYOUT.parity) | set(LAYOUT.zero) == set(range(16)) - set(LAYOUT.plain)
    weights = [len(LAYOUT.parity[j][1]) for j in PARITY]
    assert weights == sorted(weights)  # the cheapest encode first


def test_layout_of_the_baselines():
    assert SystematicLayout.of(UncodedCode(4)).parity == {}
    assert len(SystematicLayout.of(ReplicationCode(4)).plain) == 8  # every copy is plain
    assert len(SystematicLayout.of(MDSCode(8, 4)).parity) == 4
    assert SystematicLayout.of(PolarCode(16, 8)) is None  # the butterfly's blocks are sums


# -- the loop: background tasks only in the gaps --------------------------------------------


class ScriptedBackend(ExecutorBackend):
    """A thread pool whose idle cores follow a script (then stay at ``rest``); records
    what was submitted, in order, and whether as background."""

    def __init__(self, idle=(), rest=0.0, gaps=True):
        super().__init__(cf.ThreadPoolExecutor(max_workers=16), name="scripted")
        self.submitted: list[tuple[int, bool]] = []
        self._idle = iter(idle)
        self._rest = rest
        if not gaps:
            self.idle_cores = None  # no measurement: background goes at once

    cores = 2

    def idle_cores(self):
        return next(self._idle, self._rest)

    def submit(self, fn, *args, key=None, background=False):
        self.submitted.append((key[1], background))
        return self.executor.submit(fn, *args)


def _job(backend, *, slow=(), fail=(), gate=None):
    """A coded job of CODE whose data tasks ``slow`` wait for ``gate`` (a threading.Event)
    and ``fail`` raise; returns the decoded results, the record and numpy's answer."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((8, 3, 2))
    coded = CODE.encode(data)

    def task(j):
        if j in fail:
            raise RuntimeError(f"task {j} fails")
        if j in slow:
            gate.wait(10)
        return WorkOutcome(coded[j], time.time(), time.time())

    def make_task(j, attempt, flag):
        return task, (j,)

    record = JobRecord(token="t", code=repr(CODE), n=16, k=8, backend="scripted")
    try:
        out = run_early_completion(
            CODE, backend, make_task, record=record, result_shape=(3, 2),
            dtype=np.dtype(np.float64), retries=0, background=PARITY,
        )
    finally:
        if gate is not None:
            gate.set()
        backend.executor.shutdown(wait=True)
    return out, record, data


def test_no_gap_no_parity():
    backend = ScriptedBackend(idle=[None, 0.0, 0.1, 0.0], rest=0.0)
    out, record, data = _job(backend)
    np.testing.assert_allclose(out, data)
    assert not [j for j, background in backend.submitted if background]
    assert {record.tasks[j].status for j in PARITY} == {"skipped"}
    assert sorted(record.used) == sorted(LAYOUT.plain)


def test_once_the_gap_lasts_a_copy_then_the_fewest_parity_that_decode_run_in_it():
    straggler = int(CODE.info_set[0])
    block = LAYOUT.plain[straggler]
    gate = threading.Event()
    # idle windows: one gap window is not enough; from the second on, the straggler (late
    # once it runs for MIN_LATE) gets a copy, which waits for the same gate; once the copy
    # is late too, the parity that decodes without the straggler is released
    backend = ScriptedBackend(idle=[None, 0.8, 0.0, 0.8, 0.8], rest=0.8)
    out, record, data = _job(backend, slow={straggler}, gate=gate)
    np.testing.assert_allclose(out, data, atol=1e-12)
    background = [j for j, bg in backend.submitted if bg]
    involving = [j for j in PARITY if block in LAYOUT.parity[j][1]]
    assert background and background[0] == involving[0]  # the cheapest one that helps
    mask = np.zeros(CODE.n, bool)
    mask[[j for j in LAYOUT.plain if j != straggler]] = True
    mask[background] = True
    assert CODE.decodable(mask)
    mask[background[-1]] = False
    assert not CODE.decodable(mask)  # no more than it takes
    assert len(background) < len(PARITY)
    foreground = [j for j, bg in backend.submitted if not bg]
    assert sorted(foreground) == sorted([*LAYOUT.plain, straggler]) and record.backups == 1
    assert backend.submitted.index((background[0], True)) > len(foreground) - 1
    assert straggler in record.cancelled and straggler not in record.used


def test_a_failure_launches_enough_parity_to_decode_without_retries():
    failing = int(CODE.info_set[3])
    backend = ScriptedBackend(rest=0.0)  # never a gap
    out, record, data = _job(backend, fail={failing})
    np.testing.assert_allclose(out, data, atol=1e-12)
    assert record.retries == 0 and record.tasks[failing].status == "failed"
    assert [j for j, bg in backend.submitted if bg]


def test_without_gap_measurement_the_parity_goes_last_at_once():
    backend = ScriptedBackend(gaps=False)
    out, record, data = _job(backend)
    np.testing.assert_allclose(out, data, atol=1e-12)
    flags = [bg for _, bg in backend.submitted]
    assert flags == sorted(flags) and flags.count(True) == len(PARITY)


def test_the_thread_backend_measures_idle_cores():
    from dask_polar.executors.local import ThreadBackend

    backend = ThreadBackend(4)
    try:
        assert backend.idle_cores(window=0.05) is None  # the window has just started
        time.sleep(0.06)
        idle = backend.idle_cores(window=0.05)
        assert idle is not None and idle > 0.3  # this thread slept; the test machine idles
    finally:
        backend.close()


# -- products on threads ----------------------------------------------------------------------


def test_without_stragglers_the_graph_has_no_encode_and_every_block_matches():
    A, B = rand((128, 12), (16, 12)), rand((12, 5), (12, 5), seed=1)
    C = coded_matmul(A, B, n=16)
    names = {str(key[0] if isinstance(key, tuple) else key) for key in C.__dask_graph__()}
    assert not [name for name in names if name.startswith(("polar-encode", "polar-stats"))]
    out = C.compute()
    np.testing.assert_allclose(out, A.compute() @ B.compute(), rtol=1e-13, atol=1e-13)
    record = dask_polar.last_job()
    info = set(record.info_set)
    done_parity = [t.index for t in record.tasks if t.status == "done" and t.index not in info]
    if not done_parity:  # nothing to decode: every block is its own product
        assert set(record.used) == info


@pytest.mark.parametrize("mode", ["block", "slow"])
def test_a_real_straggler_on_a_data_block_is_replaced_by_a_copy(mode):
    A, B = rand((256, 64), (16, 64)), rand((64, 16), (64, 16), seed=1)
    code = PolarCode(32, 16, systematic=True)
    delays = np.zeros(32)
    straggler = int(code.info_set[4])
    # blocked for 4 s, or computing its product 10^5 times over (a slow node that keeps a
    # core busy: the gap shows once the other tasks are done)
    delays[straggler] = 4.0 if mode == "block" else 1e5
    start = time.perf_counter()
    faults = Faults(delays, mode=mode, base=1.0)
    out = coded_matmul(A, B, code=code, stragglers=faults).compute()
    assert time.perf_counter() - start < 3.0
    np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-10)
    record = dask_polar.last_job()
    # its copy (a re-run: neither blocked nor slow) stood in for it, no parity ran
    assert record.backups == 1 and record.tasks[straggler].attempts == 2
    assert set(record.used) == set(code.info_set.tolist())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("where", ["a", "b"])
def test_non_finite_data_whose_own_task_fails_is_computed_again(where):
    a = np.random.default_rng(0).standard_normal((128, 6))
    b = np.random.default_rng(1).standard_normal((6, 5))
    (a if where == "a" else b)[17 if where == "a" else 3, 2] = np.nan
    code = PolarCode(16, 8, systematic=True)
    failing = int(code.info_set[2])  # data block 2 holds row 17
    out = coded_matmul(
        da.from_array(a, chunks=(16, 6)), b, code=code, stragglers=Faults(fail=[failing]),
        retries=0,
    ).compute()
    np.testing.assert_allclose(out, a @ b, rtol=1e-10, atol=1e-10)  # NaN where numpy's are
    assert np.isnan(out).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_magnitudes_decoded_from_parity_keep_their_digits(dtype):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((128, 16)) * 10.0 ** rng.integers(-4, 5, (128, 1))).astype(dtype)
    b = rng.standard_normal((16, 4)).astype(dtype)
    code = PolarCode(16, 8, systematic=True)
    failing = [int(p) for p in code.info_set[[1, 5]]]
    out = coded_matmul(
        da.from_array(a, chunks=(16, 16)), b, code=code, stragglers=Faults(fail=failing),
        retries=0,
    ).compute()
    exact = a.astype(np.longdouble) @ b.astype(np.longdouble)
    uncoded = a @ b
    eps = np.finfo(dtype).eps
    for r in range(128):
        scale = np.linalg.norm(exact[r].astype(np.float64))
        err = np.linalg.norm((out[r] - exact[r]).astype(np.float64)) / scale
        base = np.linalg.norm((uncoded[r] - exact[r]).astype(np.float64)) / scale
        assert err <= 100 * max(base, eps), (r, err, base)


def test_row_factors_are_computed_once_and_not_pickled():
    import pickle

    factors = RowFactors(16, 12)
    block, b = np.ones((4, 12)) * 3.0, np.ones((12, 2))
    first = factors.get(0, block, b)
    assert factors.get(0, block * 0, b) is first  # cached: the block is not read again
    copy = pickle.loads(pickle.dumps(factors))
    assert copy.get(0, block * 0, b) is not first  # a copy starts empty
    target = factors.target(block.dtype, b)
    assert first[1]
    scaled = 3.0 * first[0]  # each row's largest magnitude, scaled
    assert np.all((2.0 ** (target - 1) <= scaled) & (scaled < 2.0**target))


# -- on a cluster: parity at low priority ---------------------------------------------------


def test_the_distributed_backend_submits_background_tasks_at_low_priority():
    from dask_polar.executors.distributed import DistributedBackend

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client:
        gate = distributed.Event("gate")
        blocker = client.submit(gate.wait, 10, key="blocker", pure=False)
        backend = DistributedBackend(client)
        try:
            low = backend.submit(int, 1, key="low", background=True)
            high = backend.submit(int, 2, key="high")

            def priorities(dask_scheduler):
                return {k: dask_scheduler.tasks[k].priority for k in ("low", "high")}

            deadline = time.monotonic() + 10
            while True:
                found = client.run_on_scheduler(priorities) if _known(client) else None
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert found["low"] > found["high"]  # the scheduler runs smaller tuples first
            gate.set()
            assert (low.result(10), high.result(10)) == (1, 2)
        finally:
            gate.set()
            blocker.cancel()
            backend.close()


def _known(client):
    return client.run_on_scheduler(
        lambda dask_scheduler: {"low", "high"} <= set(dask_scheduler.tasks)
    )


@pytest.mark.parametrize("code", ["polar", "mds", "uncoded"])
@pytest.mark.parametrize(
    "b", [np.array([[60000.0, 0.0151]], np.float16), np.array([[3e38, 1e-38]], np.float32)],
    ids=["float16", "float32"],
)
def test_b_is_never_scaled_in_its_own_dtype(code, b):
    # issue 21: scaling B in its own dtype lost its small entries (0.015625 for 0.0151,
    # 0.0 for 1e-38); the data tasks multiply B as it is, and the parity scales A's rows
    A = da.from_array(np.ones((64, 1)), chunks=(8, 1))
    failing = {"polar": [int(PolarCode(16, 8).info_set[2])], "mds": [2], "uncoded": []}[code]
    out = coded_matmul(
        A, b, code=code, systematic=True if code == "polar" else None,
        stragglers=Faults(fail=failing), retries=0,
    ).compute()
    np.testing.assert_allclose(out, np.ones((64, 1)) @ b, rtol=1e-12)  # decoded: rounding
