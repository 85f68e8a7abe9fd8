"""The graph rewrite: what it codes, what it leaves alone, and that results do not change."""

from __future__ import annotations

import logging
import time

import dask
import dask.array as da
import dask.array.optimization
import numpy as np
import pytest
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

import dask_polar
from dask_polar.array import make_code
from dask_polar.array.rewrite import optimize


@pytest.fixture(autouse=True)
def polar_code():
    """These tests are of the rewrite's coding: the polar code, not auto's choice (which
    codes nothing in a process that has seen no stragglers; see test_auto)."""
    with dask.config.set({"polar.code": "polar"}):
        yield


rng = np.random.default_rng(0)


def darr(shape, chunks, dtype=np.float64):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return da.from_array(x.astype(dtype), chunks=chunks)


def prefixes(x) -> set[str]:
    (opt,) = dask.optimize(x)
    return {dask.utils.key_split(key) for key in dict(opt.__dask_graph__())}


A = darr((48, 12), (8, 4))
B = darr((12, 10), (4, 5))
S = darr((12, 12), (6, 6))
A32, B32 = darr((40, 6), (10, 6), np.float32), darr((6, 4), (6, 2), np.float32)
AC = darr((24, 6), (6, 3), np.complex128)
A1 = darr((30, 5), (30, 5))  # one block: k = 1
Q = da.linalg.qr(darr((60, 4), (15, 4)))[0]  # tall-and-skinny QR's Q
Y = darr((60, 3), (15, 3))
V = darr((12,), (4,))  # a vector: matrix-vector products, as in gradient descent

EXPRESSIONS = [
    # (expression, rtol) -- every form of 2-D product, chained and transposed
    ("A @ B", 1e-9),
    ("da.matmul(A, B)", 1e-9),
    ("da.dot(A, B)", 1e-9),
    ("A.dot(B)", 1e-9),
    ("da.tensordot(A, B, axes=1)", 1e-9),
    ("da.tensordot(A, B, axes=([1], [0]))", 1e-9),
    ("A.T @ A", 1e-9),
    ("A @ S @ S.T", 1e-9),
    ("(A @ B).sum(axis=0) + 1", 1e-9),
    ("(A @ B)[::2, 1:]", 1e-9),
    ("A32 @ B32", 1e-4),
    ("AC @ B[:6].astype(complex)", 1e-9),
    ("A1 @ A1.T", 1e-9),
    ("Q.T @ Y", 1e-9),
    ("A @ V", 1e-9),
    ("A.dot(V)", 1e-9),
    ("da.dot(A, V)", 1e-9),
    ("da.tensordot(A, V, axes=1)", 1e-9),
    ("A.T @ (A @ V)", 1e-9),
    ("A @ V.compute()", 1e-9),
]


@pytest.mark.parametrize("expression, rtol", EXPRESSIONS)
def test_coded_results_equal_numpy(expression, rtol):
    expected = eval(expression).compute()  # noqa: S307 -- fixed test table
    with dask_polar.coded(min_size=0):
        x = eval(expression)  # noqa: S307
        # k = 1 has no encode additions, and Dask may fuse the decode with a lone output
        assert any(p.startswith("polar-decode") for p in prefixes(x))
        out = x.compute()
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize(
    "expression",
    [
        "(A + 1).sum(axis=1)",  # no product at all
        "darr((5,), (5,)) @ darr((5, 3), (5, 3))",  # a vector on the left: one row block
        "darr((2, 6, 4), (1, 3, 4)) @ darr((2, 4, 3), (1, 4, 3))",  # batched matmul
        "da.einsum('ij,jk->ik', A, B)",  # einsum
        "da.tensordot(A, A, axes=([0], [0]))",  # other axes
        "da.ones((6, 4), chunks=2, dtype=int) @ da.ones((4, 3), chunks=2, dtype=int)",  # ints
        "da.tensordot(darr((4, 6, 2), 2), darr((6, 2, 3), 2), axes=2)",  # double contraction
    ],
)
def test_graphs_it_does_not_understand_are_unchanged(expression):
    x = eval(expression)  # noqa: S307
    graph, keys = x.__dask_graph__(), x.__dask_keys__()
    with dask_polar.coded(min_size=0):
        ours = dict(optimize(graph, keys))
    theirs = dict(dask.array.optimization.optimize(graph, keys))
    assert ours.keys() == theirs.keys()
    assert all(repr(ours[key]) == repr(theirs[key]) for key in ours)
    expected = x.compute()
    with dask_polar.coded(min_size=0):
        np.testing.assert_allclose(x.compute(), expected)


def test_small_products_are_left_alone_and_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="dask_polar"), dask_polar.coded(min_size=10**9):
        assert not {"polar-decode"} & prefixes(A @ B)
    assert "below polar.min-size" in caplog.text


def test_a_matrix_vector_product_is_coded_by_row_blocks():
    # the seed papers' gradient descent: X @ beta, X's row blocks coded, the result 1-D
    with dask_polar.coded(min_size=0):
        x = A.dot(V)
        out = x.compute()
    record = dask_polar.last_job()
    assert out.shape == (48,) and record.k == A.numblocks[0]
    np.testing.assert_allclose(out, A.compute() @ V.compute(), rtol=1e-12)


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("darr((5,), (5,)) @ darr((5, 3), (5, 3))", "a vector left operand"),
        ("darr((2, 6, 4), (1, 3, 4)) @ darr((2, 4, 3), (1, 4, 3))", "a batched or 3-D x 3-D product"),
        ("da.tensordot(A, A, axes=([0], [0]))", "tensordot over axes ((0,), (0,))"),
    ],
)
def test_skip_reasons_name_the_cause(caplog, expression, reason):
    x = eval(expression)  # noqa: S307
    with caplog.at_level(logging.DEBUG, logger="dask_polar"), dask_polar.coded(min_size=0):
        x.compute()
    assert reason in caplog.text


def test_skips_are_logged_with_the_reason(caplog):
    x = da.ones((6, 4), chunks=2, dtype=int) @ da.ones((4, 3), chunks=2, dtype=int)
    with caplog.at_level(logging.DEBUG, logger="dask_polar"), dask_polar.coded(min_size=0):
        x.compute()
    assert "dtype int64 is not floating or complex" in caplog.text


def test_output_keeps_name_keys_and_chunks():
    x = A @ B
    with dask_polar.coded(min_size=0):
        (opt,) = dask.optimize(x)
    assert opt.name == x.name and opt.chunks == x.chunks and opt.dtype == x.dtype
    assert set(x.__dask_keys__()[0]) <= set(dict(opt.__dask_graph__()))


def test_enable_disable_and_config():
    assert not dask_polar.enabled()
    dask_polar.enable(code="mds", min_size=0)
    try:
        assert dask_polar.enabled()
        np.testing.assert_allclose((A @ B).compute(), A.compute() @ B.compute())
        assert dask_polar.last_job().code.startswith("<MDSCode")
    finally:
        dask_polar.disable()
    assert not dask_polar.enabled()
    with dask.config.set({"polar.redundancy": 4}), dask_polar.coded(min_size=0):
        (A @ B).compute()
    assert dask_polar.last_job().n == 32  # k = 6 blocks, next power of two >= 24
    # the environment reaches the same keys
    env = dask.config.collect(paths=[], env={"DASK_POLAR__REDUNDANCY": "3"})
    assert env["polar"]["redundancy"] == 3


@pytest.mark.parametrize(
    "options, error",
    [({"colour": "red"}, TypeError), ({"retries": -1}, ValueError), ({"min_size": -5}, ValueError),
     ({"backup": 0.5}, ValueError), ({"code": 3}, TypeError)],
)
def test_bad_options_fail_at_enable(options, error):
    with pytest.raises(error):
        dask_polar.enable(**options)
    assert not dask_polar.enabled()


def test_early_completion_through_plain_matmul():
    # the straggler holds a data block (a systematic code's parity position would simply
    # never be launched)
    straggler = int(make_code("polar", 8, n=16, systematic=True).info_set[1])
    delays = np.full(16, 0.05)
    delays[straggler] = 30.0
    x, y = darr((64, 8), (8, 8)), darr((8, 4), (8, 4))
    with dask_polar.coded(min_size=0, stragglers=delays):
        start = time.perf_counter()
        out = (x @ y).compute()
        assert time.perf_counter() - start < 10.0
    np.testing.assert_allclose(out, x.compute() @ y.compute(), atol=1e-10)
    record = dask_polar.last_job()
    assert record.backups == 1 and record.tasks[straggler].attempts == 2  # a copy stood in


def test_rewrite_failure_falls_back_to_dask(monkeypatch, caplog):
    import dask_polar.array.rewrite as module

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(module, "_coded_layer", broken)
    with caplog.at_level(logging.ERROR, logger="dask_polar"), dask_polar.coded(min_size=0):
        np.testing.assert_allclose((A @ B).compute(), A.compute() @ B.compute())
    assert "rewrite failed" in caplog.text


def test_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=8, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client, dask_polar.coded(min_size=0):
        x = A @ B @ S[:10, :10]
        np.testing.assert_allclose(
            client.compute(x).result(), A.compute() @ B.compute() @ S[:10, :10].compute()
        )
        assert dask_polar.last_job(client).backend == "distributed"


DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
          np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128]
# tolerance by the product's dtype: its rounding, amplified a little by encode and decode
RTOL = {"f": {2: 5e-2, 4: 1e-4, 8: 1e-9}, "c": {8: 1e-4, 16: 1e-9}}


def typed(shape, chunks, dtype, seed):
    """Values every dtype holds, large enough that integer sums in A's dtype would wrap."""
    gen = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "b":
        x = gen.random(shape) < 0.5
    elif kind in "iu":
        x = gen.integers(0 if kind == "u" else -60, 100, shape)
    else:
        x = gen.standard_normal(shape) * 4
    return da.from_array(x.astype(dtype), chunks=chunks)


@pytest.mark.parametrize("dtype_b", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype_a", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_pair_gives_numpys_product(dtype_a, dtype_b):
    # A's blocks are encoded in the product's dtype: adding bool blocks is an OR, adding
    # int8 blocks wraps, adding float32 blocks rounds a float64 product
    x, y = typed((64, 6), (8, 3), dtype_a, 1), typed((6, 5), (3, 5), dtype_b, 2)
    product = x @ y
    plain = product.compute(scheduler="sync")
    with dask_polar.coded(min_size=0):
        coded = any(p.startswith("polar-decode") for p in prefixes(product))
        out = product.compute(scheduler="sync")
    if not coded:  # integer products stay Dask's, which differs from numpy's on its own
        assert product.dtype.kind in "biu"
        assert out.dtype == plain.dtype
        np.testing.assert_array_equal(out, plain)
        return
    expected = x.compute() @ y.compute()
    assert out.dtype == expected.dtype and out.shape == expected.shape
    rtol = RTOL[expected.dtype.kind][expected.dtype.itemsize]
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


ANNOTATIONS = {"retries": 3, "priority": 7, "resources": {"polar-slot": 1}}
# Dask's low-level fusion (on by default) drops every layer's annotations; optimize keeps them
NO_FUSION = {"optimization.fuse.active": False}


def test_annotations_reach_the_coded_layer():
    with dask.annotate(**ANNOTATIONS):
        x = A @ B
    graph, keys = x.__dask_graph__(), x.__dask_keys__()
    with dask_polar.coded(min_size=0), dask.config.set(NO_FUSION):
        opt = optimize(graph, keys)
    (layer,) = [layer for layer in opt.layers.values() if keys[0][0] in layer]  # culled: renamed
    assert any(dask.utils.key_split(key) == "polar-decode" for key in layer)
    assert layer.annotations == ANNOTATIONS


def test_keep_annotations_puts_them_back_after_fusion():
    from dask_polar.array._annotations import keep_annotations

    with dask.annotate(retries=4, priority=2):
        x = (da.ones((4, 2), chunks=(1, 2)) + 1) * 2  # fused into one task per block
    keys = x.__dask_keys__()
    plain = dask.array.optimization.optimize(x.__dask_graph__(), keys)
    assert not isinstance(plain, HighLevelGraph)  # flattened: annotations lost
    kept = keep_annotations(dask.array.optimization.optimize, x.__dask_graph__(), keys)
    (layer,) = kept.layers.values()
    assert dict(layer) == dict(plain)
    assert [layer.annotations["retries"](key) for (key,) in keys] == [4] * 4
    assert [layer.annotations["priority"](key) for (key,) in keys] == [2] * 4


def test_keep_annotations_evaluates_per_key_annotations():
    # a coded product's placement: a callable per key, in a materialized layer
    from dask_polar.array._annotations import keep_annotations

    tasks = {("src", i, 0): (np.full, (1, 2), float(i)) for i in range(4)}
    placement = {("src", i, 0): f"w{i}" for i in range(1, 4)}
    layer = MaterializedLayer(tasks, annotations={"workers": placement.get, "retries": 1})
    graph = HighLevelGraph({"src": layer}, {"src": set()})
    x = da.Array(graph, "src", ((1,) * 4, (2,)), dtype=float)
    kept = keep_annotations(dask.array.optimization.optimize, x.__dask_graph__(), x.__dask_keys__())
    (out,) = kept.layers.values()
    assert [out.annotations["workers"](key) for key in tasks] == [None, "w1", "w2", "w3"]
    assert [out.annotations["retries"](key) for key in tasks] == [1] * 4
    np.testing.assert_array_equal(dask.compute(x)[0][:, 0], [0, 1, 2, 3])


@pytest.mark.parametrize("fusion", [True, False])
def test_annotations_reach_the_scheduler(fusion):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client, dask_polar.coded(min_size=0), \
            dask.config.set({} if fusion else NO_FUSION):
        with dask.annotate(retries=3, priority=7):
            x = A @ B
        persisted = client.persist(x)  # the output keys stay on the scheduler
        np.testing.assert_allclose(persisted.compute(), A.compute() @ B.compute())
        assert dask_polar.last_job(client) is not None  # it was coded
        state = cluster.scheduler.tasks[x.__dask_keys__()[0][0]]
        assert state.annotations == {"retries": 3, "priority": 7}
        assert state.retries == 3


@pytest.mark.parametrize(
    "expression",
    [
        # masked: Dask's own @ raises on the mask; the rewrite must not turn that into numbers
        "da.ma.masked_greater(A, 0.5) @ B",
        "A @ da.ma.masked_greater(B, 0.5)",
        "da.ma.masked_greater(A, 100.0) @ B",  # a mask with nothing masked
    ],
)
def test_masked_products_are_left_to_dask(expression):
    x = eval(expression)  # noqa: S307
    outcomes = []
    for rewrite in (dask.config.set({}), dask_polar.coded(min_size=0)):
        with rewrite:
            try:
                out = x.compute(scheduler="sync")
            except Exception as err:  # noqa: BLE001 -- compared below
                outcomes.append((type(err), str(err)))
            else:
                outcomes.append((type(out), out.tolist(), np.ma.getmaskarray(out).tolist()))
            assert not any(p.startswith("polar-decode") for p in prefixes(x))
    assert outcomes[0] == outcomes[1]
