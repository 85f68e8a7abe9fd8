"""Exact coded products in floating point: scaling, non-finite values, float16 (issue 12)."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import coded_matmul
from dask_polar.array._scaling import Scales, block_stats, job_scales, work_dtype

CODES = ["polar", "mds", "local-product", "replication"]


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def coded(a, b, code="polar", rows=8):
    """``a @ b`` coded in k = 16 row blocks with a quarter of the n tasks straggling, so the
    decoder combines results (without stragglers it may need only plain subtractions)."""
    k = a.shape[0] // rows
    n = None if code == "local-product" else 2 * k
    the_code = dask_polar.array.matmul.make_code(code, k, n=n)
    delays = np.zeros(the_code.n)
    delays[np.random.default_rng(2).permutation(the_code.n)[: the_code.n // 4]] = 0.3
    A = da.from_array(a, chunks=(rows, a.shape[1]))
    return coded_matmul(A, b, code=code, n=n, stragglers=delays).compute()


# -- the pure functions ---------------------------------------------------------------------


def test_block_stats():
    assert block_stats(np.array([[0.75, -3.0]])) == (2, True)  # 3 = 0.75 * 2**2
    assert block_stats(np.zeros((2, 2))) == (None, True)
    assert block_stats(np.array([[1.0, np.nan]])) == (None, False)
    assert block_stats(np.array([[1.0, -np.inf]])) == (None, False)
    assert block_stats(np.empty((0, 3))) == (None, True)


def test_similar_blocks_are_left_alone():
    scales = job_scales(np.float64, 64, 100, [(2, True), (3, True), (0, True), (None, True)])
    np.testing.assert_array_equal(scales.a, 1.0)
    assert scales.b == 1.0 and scales.b_finite


def test_small_blocks_are_scaled_up_by_powers_of_two():
    scales = job_scales(np.float64, 64, 100, [(30, True), (3, True), (None, False)])
    assert scales.a[0] == 1.0 and scales.a[1] == 2.0**27 and scales.a[2] == 0.0
    assert not scales.coded(2) and scales.coded(1)


def test_sums_near_the_maximum_are_scaled_down():
    scales = job_scales(np.float64, 64, 1000, [(1023, True), (1020, True)])
    top = 1023 + math.log2(scales.a[0])
    assert top + 6 + 10 < 1024  # n terms of inner terms stay finite
    assert all(math.log2(f).is_integer() for f in scales.a)


def test_huge_b_is_scaled_and_non_finite_b_marks_every_block():
    scales = job_scales(np.float64, 8, 10, [(0, True)], (300, True))
    assert scales.b == 2.0**-300
    scales = job_scales(np.float64, 8, 10, [(0, True)], (None, False))
    assert not scales.coded(0)
    np.testing.assert_array_equal(scales.rhs(np.array([[np.inf, 1.0]])), [[0.0, 1.0]])


def test_unscale_is_exact():
    scales = Scales(np.array([2.0**-40]), 2.0**3)
    value = np.array([[1.0 + 2**-52]])
    assert scales.unscale(0, value * 2.0**-37, np.float64)[0, 0] == value[0, 0]


def test_work_dtype():
    assert work_dtype(np.float16) == np.float32
    assert work_dtype(np.complex64) == np.complex64


# -- coded products give numpy's answer -----------------------------------------------------


# numpy warns of inf * 0 and inf - inf; the direct products warn as numpy does
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_a_give_numpys_pattern(code, bad):
    a, b = rand((128, 6)), rand((6, 5), seed=1)
    a[17, 2] = bad  # row block 2 of 16
    expected = a @ b
    out = coded(a, b, code)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)  # NaN and inf where numpy's are
    assert np.isfinite(np.delete(out, 17, axis=0)).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_in_b_give_numpys_pattern(bad):
    a, b = rand((128, 6)), rand((6, 5), seed=1)
    b[3, 1] = bad
    a[5, 3] = 0.0  # 0 * inf = nan in numpy: the pattern must match exactly
    np.testing.assert_allclose(coded(a, b), a @ b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_values_near_the_dtype_maximum_do_not_overflow(dtype):
    big = np.finfo(dtype).max / 8
    a, b = rand((128, 6), dtype=dtype), rand((6, 5), seed=1, dtype=dtype) / 8
    a[:8] *= big / np.abs(a[:8]).max()
    expected = a @ b
    assert np.isfinite(expected).all()
    out = coded(a, b)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_float16_is_coded_in_float32():
    a, b = rand((128, 300), dtype=np.float16), rand((300, 5), seed=1, dtype=np.float16)
    expected = a.astype(np.float32) @ b.astype(np.float32)
    out = coded(a, b)
    assert out.dtype == np.float16 and np.isfinite(out).all()
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2e-2, atol=0.2)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("magnitude", [1e8, 1e16, 1e-12])
def test_mixed_magnitudes_keep_each_blocks_digits(code, magnitude):
    a, b = rand((128, 20)), rand((20, 4), seed=1)
    a[16:24] *= magnitude  # one row block of 16 far from the others
    exact = (a.astype(np.longdouble) @ b.astype(np.longdouble))
    out = coded(a, b, code)
    uncoded = a @ b
    for i in range(16):
        rows = slice(8 * i, 8 * (i + 1))
        scale = np.linalg.norm(exact[rows].astype(np.float64))
        err = np.linalg.norm((out[rows] - exact[rows]).astype(np.float64)) / scale
        base = np.linalg.norm((uncoded[rows] - exact[rows]).astype(np.float64)) / scale
        assert err <= 100 * max(base, np.finfo(np.float64).eps), (i, err, base)


def test_the_rewrite_gives_numpys_nan_pattern():
    a, b = rand((64, 6)), rand((6, 5), seed=1)
    a[40, 0] = np.nan
    with dask_polar.coded(min_size=0):
        out = (da.from_array(a, chunks=(8, 6)) @ da.from_array(b, chunks=(6, 5))).compute()
    np.testing.assert_allclose(out, a @ b, rtol=1e-10, atol=1e-10)


def test_coded_matrix_scales_and_rejects_non_finite():
    a = rand((64, 6))
    a[:8] *= 1e12
    with dask_polar.CodedMatrix(a, k=8) as coded:
        x = rand((6,), seed=3) * 1e200
        np.testing.assert_allclose(coded @ x, a @ x, rtol=1e-9)
        with pytest.raises(ValueError, match="x has NaN"):
            coded @ np.full(6, np.nan)
    a[3, 3] = np.inf
    with pytest.raises(ValueError, match=r"row block\(s\) \[0\]"):
        dask_polar.CodedMatrix(a, k=8)


@pytest.mark.parametrize("factors", [[1.0, 1.0, 1.0], [4.0, 1.0, 0.0], [1.0, 0.5, 2.0]])
def test_encode_sums_scaled_terms_and_leaves_the_inputs_alone(factors):
    from dask_polar.array._tasks import add, combine

    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((5, 3)) for _ in range(3)]
    copies = [b.copy() for b in blocks]
    scales = Scales(np.array(factors))
    coefficients = np.array([2.0, -1.0, 0.5])
    expected = sum(f * b for f, b in zip(factors, blocks))
    np.testing.assert_allclose(add(scales, (0, 1, 2), *blocks), expected)
    np.testing.assert_allclose(
        combine(coefficients, scales, (0, 1, 2), *blocks),
        sum(c * f * b for c, f, b in zip(coefficients, factors, blocks)),
    )
    np.testing.assert_array_equal(add(scales, (-1,), blocks[0]), blocks[0])
    for block, copy in zip(blocks, copies):  # inputs are shared graph data
        np.testing.assert_array_equal(block, copy)
    np.testing.assert_array_equal(add(Scales(np.zeros(3)), (0, 1, 2), *blocks), 0.0)
