"""Certified decoding (`dask_polar.codes.certify`): the decode's weights, the floor of
``|A| @ |B|``, and which entries are computed again (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_polar.codes import LocalProductCode, MDSCode, PolarCode
from dask_polar.codes.certify import (
    FLOOR_COLUMNS, Suspects, Uncertain, abs_product_floor, certified_decode, certify,
    decode_weights,
)

CODES = [
    PolarCode(16, 8), PolarCode(16, 8, systematic=True), MDSCode(12, 6), LocalProductCode(6),
]


def mixed(rng, shape):
    return rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 5, shape)


def arrived(code, seed):
    """A decodable set of results: every coded index but a few data blocks' own."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        mask = np.ones(code.n, dtype=bool)
        mask[rng.choice(code.n, size=code.n - code.k - 1, replace=False)] = False
        if code.decodable(mask):
            return np.flatnonzero(mask)
    raise AssertionError("no decodable set drawn")


@pytest.mark.parametrize("code", CODES, ids=repr)
def test_the_weights_are_the_decoders_combination(code):
    used = arrived(code, 0)
    results = np.random.default_rng(1).standard_normal((code.n, 5, 3))
    weights = decode_weights(code, used)
    assert weights.shape == (code.k, used.size)
    expected = code.decode({int(j): results[j] for j in used})
    np.testing.assert_allclose(np.tensordot(weights, results[used], axes=1), expected, atol=1e-9)


@settings(max_examples=40)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.booleans())
def test_the_floor_is_below_the_absolute_product(rows, p, q, seed, complex_values):
    rng = np.random.default_rng(seed)
    a, b = mixed(rng, (rows, p)), mixed(rng, (p, q))
    if complex_values:
        a = a + 1j * mixed(rng, (rows, p))
    floor = abs_product_floor(a, b)
    exact = np.abs(a).astype(np.longdouble) @ np.abs(b).astype(np.longdouble)
    assert floor.shape == (rows, q) and (floor <= exact * (1 + 1e-12)).all()


def test_the_floor_is_close_on_ordinary_data():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 256)), rng.standard_normal((256, 64))
    ratio = (np.abs(a) @ np.abs(b)) / abs_product_floor(a, b, group=4)
    assert 1 <= ratio.min() and np.median(ratio) < 4 and ratio.max() < 8
    np.testing.assert_allclose(abs_product_floor(a, b, group=1), np.abs(a) @ np.abs(b))


def product(code, data, rhs):
    """The coded results of ``data`` (k, rows, p) times ``rhs``, as a job computes them."""
    return {j: y for j, y in enumerate(code.encode(data) @ rhs)}


@pytest.mark.parametrize("code", CODES, ids=repr)
def test_ordinary_data_has_few_suspects_and_with_a_wide_b_none_to_compute(code):
    rng = np.random.default_rng(2)
    data, rhs = rng.standard_normal((code.k, 20, 256)), rng.standard_normal((256, FLOOR_COLUMNS))
    results = product(code, data, rhs)
    decoded = certified_decode(code, {int(j): results[j] for j in arrived(code, 3)}, 256)
    suspects = sum(len(found) for found in decoded.suspects)
    assert suspects <= 0.1 * decoded.values.size  # where a decoded entry is near zero
    for i in range(code.k):  # the floor of |A_i| @ |B| certifies them
        value = decoded.values[i]
        assert certify(value, decoded.suspects[i], data[i], rhs) is value


def test_a_decoded_block_far_below_the_others_is_computed_again():
    # block 1's products are 1e-8 of the others': decoded from parity that sums them, it
    # carries their rounding errors, which are all its digits
    code = PolarCode(8, 4, systematic=True)
    rng = np.random.default_rng(4)
    data, rhs = rng.standard_normal((4, 6, 16)), rng.standard_normal((16, 3))
    data[1] *= 1e-8
    results = product(code, data, rhs)
    own = int(code.info_set[1])  # block 1's own position: its result did not arrive
    used = {j: y for j, y in results.items() if j != own}
    decoded = certified_decode(code, used, 16)
    exact = data[1] @ rhs
    bound = 16 * np.finfo(float).eps * (np.abs(data[1]) @ np.abs(rhs))
    assert (np.abs(decoded.values[1] - exact) > 1e4 * bound).any()
    assert len(decoded.suspects[1]) == exact.size and not len(decoded.suspects[0])
    fixed = Uncertain(decoded.values[1], decoded.suspects[1]).settle(data[1], rhs)
    np.testing.assert_array_equal(fixed, exact)  # as numpy computes them


def test_suspects_are_cut_by_columns_and_joined_by_rows():
    need = np.array([[3.0, 0.0, 5.0], [0.0, 0.0, 2.0]])
    found = Suspects.of(need, np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    assert found.rows.tolist() == [0, 0, 1] and found.cols.tolist() == [0, 2, 2]
    assert found.ratio.tolist() == [3.0, np.inf, 2.0]
    cut = found.columns(1, 3)
    assert cut.rows.tolist() == [0, 1] and cut.cols.tolist() == [1, 1]
    joined = Suspects.joined([found, Suspects.none(), cut.shifted(4)])
    assert joined.rows.tolist() == [0, 0, 1, 4, 5] and len(Suspects.none()) == 0


def test_a_decoded_zero_with_combined_magnitude_is_computed_again():
    a, b = np.array([[1e-3, 2.0]] * 20), np.array([[1.0] * 20, [-4e-4] + [1.0] * 19])
    value = a @ b
    value[3, 0] = 0.0
    suspects = Suspects(np.array([3]), np.array([0]), np.array([np.inf]))
    out = certify(value, suspects, a, b)
    np.testing.assert_array_equal(out, a @ b)  # one entry of 20: a dot product
    assert value[3, 0] == 0.0  # a new array: the decode may be shared


def test_a_dense_decode_is_bounded_by_norms_above_its_terms(monkeypatch):
    import dask_polar.codes.certify as certify_module

    rng = np.random.default_rng(5)
    weights = rng.standard_normal((3, 24)) * (rng.random((3, 24)) < 0.9)  # terms: 32 at most
    results = list(mixed(rng, (24, 7, 5)))
    terms = np.tensordot(np.abs(weights), np.abs(np.array(results)), axes=1)
    exact = certify_module.required(weights, results, 16, 64)
    scale = certify_module.spread(16, 64) / (16 * 16)
    np.testing.assert_allclose(exact, scale * terms, rtol=1e-12)
    monkeypatch.setattr(certify_module, "DENSE_TERMS", 0)
    bounded = certify_module.required(weights, results, 16, 64)
    assert (bounded >= exact * (1 - 1e-12)).all()
