"""CodedMatrix: encode once, many coded products (threads and a LocalCluster)."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import CodedMatrix

rng = np.random.default_rng(0)
A = rng.standard_normal((300, 40))


@pytest.mark.parametrize("code", ["polar", "mds", "replication", "uncoded", "local-product"])
@pytest.mark.parametrize("k", [5, 8])
def test_products_match_numpy(code, k):
    with CodedMatrix(A, k=k, code=code) as coded:
        for _ in range(3):  # repeated products reuse the one encoding
            x = rng.standard_normal(40)
            np.testing.assert_allclose(coded @ x, A @ x, atol=1e-10)
        X = rng.standard_normal((40, 3))
        np.testing.assert_allclose(coded.matmul(X), A @ X, atol=1e-10)
        r = rng.standard_normal(300)
        np.testing.assert_allclose(coded.T @ r, A.T @ r, atol=1e-10)
        assert coded.last_record.k == k


def test_dask_input_and_complex_rhs():
    Ad = da.from_array(A, chunks=(50, 20))
    with CodedMatrix(Ad) as coded:
        assert coded.code.k == 6 and coded.shape == (300, 40)
        z = rng.standard_normal(40) + 1j * rng.standard_normal(40)
        np.testing.assert_allclose(coded @ z, A @ z, atol=1e-10)


def test_stragglers_are_fresh_each_product_and_do_not_wait():
    delays = np.full(16, 0.02)
    delays[4] = 30.0
    with CodedMatrix(A, k=8, stragglers=delays) as coded:
        start = time.perf_counter()
        for _ in range(3):
            np.testing.assert_allclose(coded @ np.ones(40), A @ np.ones(40), atol=1e-10)
        assert time.perf_counter() - start < 10.0
        assert 4 in coded.last_record.cancelled


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones(39), ValueError, r"x must have shape \(40,\)"),
        (np.ones((40, 2, 2)), ValueError, "x must have shape"),
        (np.ones(40, dtype=int), TypeError, "floating or complex"),
    ],
)
def test_bad_rhs(x, error, match):
    with CodedMatrix(A, k=4) as coded, pytest.raises(error, match=match):
        coded @ x


def test_bad_construction():
    with pytest.raises(ValueError, match="k must be <="):
        CodedMatrix(np.ones((3, 3)), k=4)
    with pytest.raises(TypeError, match="A must have a floating or complex dtype, got int64"):
        CodedMatrix(np.ones((3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="unexpected option"):
        CodedMatrix(A, colour="red")


def test_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=8, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client:
        with CodedMatrix(A, k=8, client=client) as coded:
            x = rng.standard_normal(40)
            np.testing.assert_allclose(coded @ x, A @ x, atol=1e-10)
            np.testing.assert_allclose(coded.T @ (A @ x), A.T @ (A @ x), atol=1e-9)
            assert coded.last_record.backend == "distributed"
            assert "distributed" in repr(coded)
