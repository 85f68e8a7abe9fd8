"""coded_matmul: correctness on every scheduler, early completion, faults, bad input."""

from __future__ import annotations

import concurrent.futures as cf
import time

import dask
import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import CodedJobError, CodedJobTimeout, coded_matmul
from dask_polar.codes import MDSCode, PolarCode

CODES = ["polar", "mds", "replication", "uncoded", "local-product"]


def rand(shape, chunks, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return da.from_array(x.astype(dtype), chunks=chunks)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize(
    "a_shape, a_chunks, b_shape, b_chunks, k",
    [
        ((64, 10), (8, 10), (10, 7), (10, 7), None),  # k = 8, square-ish blocks
        ((50, 12), (10, 4), (12, 9), (5, 3), None),  # chunked inner and column axes
        ((37, 5), (37, 5), (5, 4), (5, 4), 5),  # one block, k given, m not divisible by k
        ((30, 40), (7, 40), (40, 3), (40, 3), None),  # wide A, uneven row chunks
        ((200, 3), (50, 3), (3, 200), (3, 50), 3),  # tall; k not a power of two
        ((9, 9), (9, 9), (9, 9), (9, 9), None),  # k = 1
    ],
)
def test_matches_numpy(code, scheduler, a_shape, a_chunks, b_shape, b_chunks, k):
    A, B = rand(a_shape, a_chunks), rand(b_shape, b_chunks, seed=1)
    C = coded_matmul(A, B, code=code, k=k)
    assert C.shape == (a_shape[0], b_shape[1])
    assert C.chunks == (A.chunks[0], B.chunks[1])
    out = C.compute(scheduler=scheduler)
    np.testing.assert_allclose(out, A.compute() @ B.compute(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "dtype_a, dtype_b, rtol",
    [
        (np.float32, np.float32, 1e-4),
        (np.float64, np.float32, 1e-9),
        (np.complex128, np.float64, 1e-9),
        (np.complex64, np.complex64, 1e-4),
        # A's blocks are encoded in the product's dtype, not rounded to A's
        (np.float32, np.float64, 1e-9),
        (np.complex64, np.float64, 1e-9),
        (np.float32, np.complex128, 1e-9),
        (np.float16, np.float32, 1e-4),
    ],
)
def test_dtypes(dtype_a, dtype_b, rtol):
    A, B = rand((48, 6), (6, 6), dtype_a), rand((6, 5), (6, 5), dtype_b, seed=2)
    C = coded_matmul(A, B)
    expected = A.compute() @ B.compute()
    assert C.dtype == expected.dtype
    out = C.compute()
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)


def test_integer_products_are_rejected():
    with pytest.raises(TypeError, match=r"A @ B \(A int64, B int32\) must have a floating .* got int64"):
        coded_matmul(np.ones((4, 4), dtype=np.int64), np.ones((4, 2), dtype=np.int32))
    with pytest.raises(TypeError, match=r"A @ B \(A bool, B bool\) .* got bool"):
        coded_matmul(np.ones((4, 4), dtype=bool), np.ones((4, 2), dtype=bool))
    with pytest.raises(TypeError, match="A must have a numeric dtype, got <U1"):
        coded_matmul(np.array([["a"]]), np.ones((1, 1)))


@pytest.mark.parametrize("dtype_a, dtype_b", [
    (np.int64, np.float64), (np.bool_, np.float64), (np.uint8, np.float32),
    (np.float64, np.int64), (np.float32, np.bool_), (np.int32, np.complex128),
])
def test_integer_or_boolean_operands_of_a_floating_product_give_numpys_answer(dtype_a, dtype_b):
    # as in the drop-in: A's blocks are encoded in the product's dtype (summed as bool they
    # would be ORed, as integers they could wrap)
    rng = np.random.default_rng(0)
    a = (rng.integers(0, 2, (64, 6)) if dtype_a == np.bool_ else rng.integers(0, 200, (64, 6)))
    b = (rng.integers(0, 2, (6, 5)) if dtype_b == np.bool_ else rng.integers(0, 200, (6, 5)))
    a, b = a.astype(dtype_a), (b - 100 * (dtype_b != np.bool_)).astype(dtype_b)
    delays = np.zeros(16)
    delays[[1, 4, 9, 12]] = 0.3  # stragglers, so the decoder combines results
    C = coded_matmul(da.from_array(a, chunks=(8, 6)), b, n=16, stragglers=delays)
    expected = a @ b
    assert C.dtype == expected.dtype
    np.testing.assert_allclose(C.compute(), expected, rtol=1e-6 if dtype_b == np.float32 else 1e-12)


def test_numpy_and_list_inputs_compose_downstream():
    A = np.arange(24.0).reshape(6, 4)
    B = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
    C = coded_matmul(A, B, k=3)
    total = (C + 1).sum(axis=0)
    np.testing.assert_allclose(total.compute(), (A @ np.array(B) + 1).sum(axis=0))
    (c_persisted,) = dask.persist(C)
    np.testing.assert_allclose(c_persisted.compute(), A @ np.array(B))


def test_task_keys_show_the_structure():
    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    prefixes = {dask.utils.key_split(key) for key in coded_matmul(A, B, code="polar").__dask_graph__()}
    # systematic by default in the driver layout: the parity tasks encode their own blocks
    assert {"polar-decode", "coded-matmul"} <= prefixes and "polar-encode" not in prefixes
    graph = coded_matmul(A, B, code="polar", systematic=False).__dask_graph__()
    prefixes = {dask.utils.key_split(key) for key in graph}
    assert {"polar-encode", "polar-decode", "coded-matmul"} <= prefixes


def test_same_inputs_give_same_keys():
    A, B = rand((32, 4), (8, 4)), rand((4, 4), (4, 4))
    assert coded_matmul(A, B).name == coded_matmul(A, B).name
    assert coded_matmul(A, B).name != coded_matmul(A, B, code="mds").name


def test_job_record():
    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    coded_matmul(A, B, n=16).compute()
    record = dask_polar.last_job()
    assert record.n == 16 and record.k == 8 and record.backend == "threads"
    assert record.code == "<PolarCode n=16 k=8 systematic>" and len(record.info_set) == 8
    assert record.decodable_at <= record.decoded_at
    assert PolarCode(16, 8, systematic=True).decodable(record.used)
    done = {t.index for t in record.tasks if t.status in ("done", "zero")}
    assert set(record.used) <= done
    assert all(t.finished >= t.started >= 0 for t in record.tasks if t.status == "done")


class TestEarlyCompletion:
    def test_coded_job_does_not_wait_for_a_straggler(self):
        A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
        delays = np.full(16, 0.05)
        straggler = int(PolarCode(16, 8).info_set[2])  # a data block's own task
        delays[straggler] = 30.0
        start = time.perf_counter()
        out = coded_matmul(A, B, n=16, stragglers=delays).compute()
        elapsed = time.perf_counter() - start
        np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-10)
        assert elapsed < 10.0  # the straggler would take 30 s
        record = dask_polar.last_job()
        # a copy of the straggler's product stood in for it (its own attempt was cancelled)
        assert record.backups == 1 and straggler in record.used
        assert record.tasks[straggler].status == "done" and record.tasks[straggler].attempts == 2
        # the cancelled straggler stops waiting: a second job is not held up by it
        start = time.perf_counter()
        coded_matmul(A, B, n=16, stragglers=np.full(16, 0.05)).compute()
        assert time.perf_counter() - start < 10.0

    def test_uncoded_waits_for_the_straggler(self):
        A, B = rand((32, 4), (8, 4)), rand((4, 4), (4, 4))
        delays = np.array([0.01, 0.01, 1.5, 0.01])
        start = time.perf_counter()
        coded_matmul(A, B, code="uncoded", stragglers=delays).compute()
        assert time.perf_counter() - start >= 1.5
        assert dask_polar.last_job().cancelled == []


def _raise(message: str):
    raise RuntimeError(message)


class FailingExecutor(cf.ThreadPoolExecutor):
    """A thread pool whose submissions number ``i`` in ``fail`` raise (``fail=None``: all).

    The first ``n`` submissions of a job are the first attempts of its tasks; retries come
    after them, so ``fail=range(n)`` fails every task once.
    """

    def __init__(self, fail=None) -> None:
        super().__init__(max_workers=32)
        self.fail = None if fail is None else set(fail)
        self.submitted = 0

    def submit(self, fn, *args, **kwargs):
        i, self.submitted = self.submitted, self.submitted + 1
        if self.fail is None or i in self.fail:
            return super().submit(_raise, f"injected failure of submission {i}")
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("code", ["polar", "mds", "uncoded"])
def test_failed_tasks_are_erasures_then_retried(code):
    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    with FailingExecutor(fail={0, 2, 4, 6}) as executor:  # four first attempts fail
        out = coded_matmul(A, B, code=code, executor=executor).compute()
    np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-10)
    record = dask_polar.last_job()
    assert record.backend == "FailingExecutor"
    if code == "uncoded":  # nothing to decode around: the failed half had to be re-run
        assert record.retries == 4


def test_persistent_failures_raise_naming_the_tasks():
    A, B = rand((32, 4), (8, 4)), rand((4, 4), (4, 4))
    with FailingExecutor() as executor, pytest.raises(
        CodedJobError, match=r"0 results are not decodable \(k=4\).*task 0: RuntimeError: injected"
    ) as info:
        coded_matmul(A, B, code="mds", n=6, executor=executor, retries=1).compute()
    assert sorted(info.value.failures) == list(range(6))


@pytest.mark.parametrize("configured", [False, True])
def test_timeout_cancels_the_job_and_names_the_pending_tasks(configured):
    A, B = rand((32, 4), (8, 4)), rand((4, 4), (4, 4))
    delays = np.array([0.0, 30.0, 0.0, 30.0])  # two stragglers an uncoded job must wait for
    options = {} if configured else {"timeout": 0.5}
    start = time.perf_counter()
    with dask.config.set({"polar.timeout": 0.5} if configured else {}), pytest.raises(
        CodedJobTimeout,
        match=r"2 results, not decodable \(k=4\); 2 task\(s\) still pending: \[1, 3\]",
    ):
        coded_matmul(A, B, code="uncoded", stragglers=delays, **options).compute()
    assert time.perf_counter() - start < 10.0  # the stragglers would take 30 s
    assert dask_polar.last_job().cancelled == [1, 3]


class TestBadInput:
    @pytest.mark.parametrize(
        "a, b, kwargs, error, match",
        [
            (np.ones(4), np.ones((4, 2)), {}, ValueError, "A must be 2-D, got 1-D"),
            (np.ones((4, 3)), np.ones((4, 2)), {}, ValueError, r"A and B do not align.*3 != 4"),
            (np.ones((4, 4)), np.ones((4, 2, 1)), {}, ValueError, "B must be 1-D or 2-D"),
            (np.ones((4, 4)), np.ones((4, 2)), {"k": 5}, ValueError, "k must be <= the number of rows"),
            (np.ones((4, 4)), np.ones((4, 2)), {"k": 0}, ValueError, "k must be >= 1"),
            (np.ones((4, 4)), np.ones((4, 2)), {"code": "lt"}, ValueError, "code must be one of"),
            (np.ones((4, 4)), np.ones((4, 2)), {"code": 3}, TypeError, "code must be one of"),
            (np.ones((4, 4)), np.ones((4, 2)), {"k": 2, "n": 3}, ValueError, "n must be a power of two"),
            (np.ones((4, 4)), np.ones((4, 2)), {"code": MDSCode(6, 3)}, ValueError, "k=3 data blocks"),
            (np.ones((4, 4)), np.ones((4, 2)), {"redundancy": 0.5}, ValueError, "redundancy must be between 1 and 64"),
            (np.ones((4, 4)), np.ones((4, 2)), {"code": "mds", "straggler_prob": 0.1}, ValueError, "polar codes only"),
            (np.ones((4, 4)), np.ones((4, 2)), {"stragglers": [1.0]}, ValueError, "stragglers must be"),
            ("abc", np.ones((4, 2)), {}, TypeError, "A must"),
            (np.ones((4, 4)), np.ones((4, 2)), {"timeout": 0}, ValueError, "timeout must be > 0"),
            (np.ones((4, 4)), np.ones((4, 2)), {"timeout": "1"}, TypeError, "timeout must be a real"),
        ],
    )
    def test_rejected_before_any_work(self, a, b, kwargs, error, match):
        with pytest.raises(error, match=match):
            coded_matmul(a, b, **kwargs)

    @pytest.mark.parametrize(
        "make, chunk_type",
        [
            # a coded product would silently drop the mask (numpy's and Dask's @ raise)
            (lambda x: np.ma.masked_array(x, mask=x > 1.5), "numpy.ma.MaskedArray"),
            (lambda x: da.ma.masked_greater(da.from_array(x, chunks=2), 1.5), "numpy.ma.MaskedArray"),
            (lambda x: pytest.importorskip("scipy.sparse").csr_matrix(x), "csr_matrix"),
            (lambda x: da.from_array(pytest.importorskip("scipy.sparse").csr_array(x)), "csr_array"),
        ],
    )
    @pytest.mark.parametrize("position", ["A", "B"])
    def test_masked_and_sparse_inputs_are_rejected(self, make, chunk_type, position):
        dense = np.arange(16.0).reshape(4, 4) % 3
        a, b = (make(dense), dense) if position == "A" else (dense, make(dense))
        with pytest.raises(TypeError, match=f"{position} must be a dense array.*{chunk_type}"):
            coded_matmul(a, b)

    def test_unknown_chunks(self):
        x = da.ones((10, 3), chunks=(5, 3))
        x = x[x[:, 0] > 0]
        with pytest.raises(ValueError, match="unknown chunk sizes.*compute_chunk_sizes"):
            coded_matmul(x, np.ones((3, 2)))


def test_backup_copies_rescue_an_uncoded_job():
    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    delays = np.full(8, 0.05)
    delays[3] = 30.0  # the backup copy of task 3 gets no delay
    start = time.perf_counter()
    out = coded_matmul(A, B, code="uncoded", stragglers=delays, backup=3.0).compute()
    assert time.perf_counter() - start < 10.0
    np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-10)
    record = dask_polar.last_job()
    assert record.backups == 1 and record.tasks[3].attempts == 2
    # its backup copy won: task 3 is done (the sleeping first copy is stopped, not counted)
    assert record.tasks[3].status == "done" and record.cancelled == []


def test_a_process_pool_executor_works():
    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    with cf.ProcessPoolExecutor(max_workers=2) as executor:
        out = coded_matmul(A, B, n=16, executor=executor).compute()
    np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-10)
    assert dask_polar.last_job().backend == "ProcessPoolExecutor"


def test_blas_is_limited_during_a_threaded_job_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from dask_polar.executors.local import _BLAS
    from dask_polar.jobs import JobCallback, callback

    def blas_threads():
        return [info["num_threads"] for info in threadpoolctl.threadpool_info()]

    before = blas_threads()
    seen = []

    class Watch(JobCallback):
        def on_result(self, record, task, **kwargs):
            # (threadpool_info read from another thread can be stale after an earlier
            # limit: OpenBLAS applies it, as timings show, but may report the old count)
            seen.append(_BLAS._limiter is not None)

    A, B = rand((64, 8), (8, 8)), rand((8, 4), (8, 4))
    with callback(Watch()):
        coded_matmul(A, B, n=16).compute()  # 16 threads >= the cores here
    assert seen and all(seen)
    assert _BLAS._limiter is None and _BLAS._users == 0
    assert blas_threads() == before


class TestSystematic:
    def test_data_tasks_read_a_directly_and_every_result_matches_numpy(self):
        A, B = rand((256, 12), (16, 12)), rand((12, 5), (12, 5), seed=1)
        C = coded_matmul(A, B, n=32, systematic=True)
        graph = dict(C.__dask_graph__())
        names = {str(key[0] if isinstance(key, tuple) else key) for key in graph}
        # no encode and no statistics pass: the parity tasks encode their own blocks
        assert not [name for name in names if name.startswith(("polar-encode", "polar-stats"))]
        drive = next(task for key, task in graph.items() if str(key).startswith("polar-decode"))
        assert set(A.__dask_keys__()[i][0] for i in range(16)) <= set(drive.dependencies)
        np.testing.assert_allclose(C.compute(), A.compute() @ B.compute(), atol=1e-10)
        record = dask_polar.last_job()
        assert record.code == "<PolarCode n=32 k=16 systematic>"

    @pytest.mark.parametrize("mode", ["cooperative", "block"])
    def test_stragglers_on_data_positions_are_replaced_by_copies(self, mode):
        A, B = rand((256, 12), (16, 12)), rand((12, 5), (12, 5), seed=1)
        code = PolarCode(32, 16, systematic=True)
        delays = np.zeros(32)
        delays[code.info_set[[0, 5, 9]]] = 3.0  # three data tasks straggle
        start = time.perf_counter()
        out = coded_matmul(
            A, B, code=code, stragglers=dask_polar.stragglers.Faults(delays, mode=mode)
        ).compute()
        assert time.perf_counter() - start < 2.5
        np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-9)
        record = dask_polar.last_job()
        # a copy of each (a re-run: not delayed) costs one product, where parity would
        # encode the late block with others
        assert record.backups == 3 and set(record.used) == set(code.info_set.tolist())

    def test_a_failing_data_task_is_an_erasure(self):
        A, B = rand((256, 12), (16, 12)), rand((12, 5), (12, 5), seed=1)
        code = PolarCode(32, 16, systematic=True)
        faults = dask_polar.stragglers.Faults(fail=[int(code.info_set[3])])
        out = coded_matmul(A, B, code=code, stragglers=faults, retries=0).compute()
        np.testing.assert_allclose(out, A.compute() @ B.compute(), atol=1e-9)

    def test_systematic_must_be_a_bool(self):
        with pytest.raises(TypeError, match="systematic"):
            coded_matmul(np.ones((4, 2)), np.ones((2, 2)), systematic="yes")


@pytest.mark.parametrize("code", ["polar", "mds", "uncoded"])
@pytest.mark.parametrize("as_dask", [False, True])
def test_a_vector_gives_numpys_one_dimensional_product(code, as_dask):
    # A @ x with a 1-D x (the gradient steps of least squares): was "B must be 2-D"
    rng = np.random.default_rng(5)
    a, x = rng.standard_normal((96, 7)), rng.standard_normal(7)
    delays = np.zeros(16 if code != "uncoded" else 12)
    delays[3] = 30.0
    C = coded_matmul(
        da.from_array(a, chunks=(8, 7)), da.from_array(x, chunks=3) if as_dask else x,
        code=code, n=None if code == "uncoded" else 16,
        stragglers=None if code == "uncoded" else dask_polar.stragglers.Faults(delays, mode="block"),
    )
    assert C.shape == (96,)
    np.testing.assert_allclose(C.compute(), a @ x, atol=1e-12)
