"""The interface every code shares, checked against dense linear algebra."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dask_polar
from dask_polar.codes import (
    LocalProductCode,
    MDSCode,
    NotDecodableError,
    PolarCode,
    ReplicationCode,
    UncodedCode,
)

CODES = [
    # (id, factory) -- small codes so that erasure patterns are dense and varied
    ("polar-8-4", lambda: PolarCode(8, 4)),
    ("polar-16-11", lambda: PolarCode(16, 11)),
    ("polar-32-16", lambda: PolarCode(32, 16)),
    ("polar-sc-16-8", lambda: PolarCode(16, 8, decoder="sc")),
    ("polar-systematic-16-8", lambda: PolarCode(16, 8, systematic=True)),
    ("polar-systematic-32-20", lambda: PolarCode(32, 20, systematic=True)),
    ("polar-sc-systematic-16-11", lambda: PolarCode(16, 11, decoder="sc", systematic=True)),
    ("polar-1-1", lambda: PolarCode(1, 1)),
    ("mds-10-6", lambda: MDSCode(10, 6)),
    ("replication-5x2", lambda: ReplicationCode(5, 2)),
    ("uncoded-6", lambda: UncodedCode(6)),
    ("local-product-7-3", lambda: LocalProductCode(7, group_size=3)),
    ("local-product-4-2", lambda: LocalProductCode(4, group_size=2)),
]
code_params = pytest.mark.parametrize("make", [f for _, f in CODES], ids=[i for i, _ in CODES])


def masks(n: int):
    return st.lists(st.booleans(), min_size=n, max_size=n).map(lambda m: np.array(m))


def full_rank(code, mask) -> bool:
    """Slow reference: decodable iff the received rows of the generator have rank k."""
    rows = code.generator[mask]
    return rows.shape[0] >= code.k and np.linalg.matrix_rank(rows) == code.k


@code_params
def test_encode_matches_generator(make):
    code = make()
    data = np.random.default_rng(0).standard_normal((code.k, 3, 2))
    coded = code.encode(data)
    assert coded.shape == (code.n, 3, 2)
    expected = np.einsum("jk,k...->j...", code.generator, data)
    np.testing.assert_allclose(coded, expected, rtol=1e-12, atol=1e-12)


@code_params
@given(seed=st.integers(0, 2**32 - 1), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_encode_is_linear(make, seed, a, b):
    code = make()
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, code.k, 4))
    np.testing.assert_allclose(
        code.encode(a * x + b * y), a * code.encode(x) + b * code.encode(y), atol=1e-9
    )


@code_params
@given(data=st.data())
def test_decodable_exactly_when_decode_succeeds(make, data):
    code = make()
    mask = data.draw(masks(code.n))
    truth = np.random.default_rng(int(mask.sum())).standard_normal((code.k, 5))
    coded = code.encode(truth)
    results = {int(j): coded[j] for j in np.flatnonzero(mask)}
    if code.decodable(mask):
        np.testing.assert_allclose(code.decode(results), truth, rtol=1e-10, atol=1e-10)
        assert code.missing(mask) == ()
    else:
        with pytest.raises(NotDecodableError) as info:
            code.decode(results)
        assert info.value.received == mask.sum()
        assert info.value.needed == code.k
        assert info.value.missing == code.missing(mask) != ()


# peeling (local product) and plain SC decode only a subset of the full-rank patterns
FULL_RANK = [(i, f) for i, f in CODES if not i.startswith(("local-product", "polar-sc"))]


@pytest.mark.parametrize("make", [f for _, f in FULL_RANK], ids=[i for i, _ in FULL_RANK])
@given(data=st.data())
def test_decodable_agrees_with_full_rank_reference(make, data):
    code = make()
    mask = data.draw(masks(code.n))
    assert code.decodable(mask) == full_rank(code, mask)


@code_params
@given(data=st.data())
def test_decodability_is_monotone(make, data):
    # true of these small codes; PolarCode's conditioning guard breaks it near the threshold
    # at large n (test_polar.py::test_the_guard_makes_decodability_non_monotone)
    code = make()
    mask = data.draw(masks(code.n))
    more = mask | data.draw(masks(code.n))
    if code.decodable(mask):
        assert code.decodable(more)
    assert code.decodable(np.ones(code.n, dtype=bool))


@code_params
@pytest.mark.parametrize(
    "dtype, rtol",
    [(np.float32, 1e-4), (np.float64, 1e-10), (np.complex64, 1e-4), (np.complex128, 1e-10)],
)
def test_dtypes_round_trip(make, dtype, rtol):
    code = make()
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((code.k, 7)).astype(dtype)
    if np.iscomplexobj(truth):
        truth = truth + 1j * rng.standard_normal(truth.shape).astype(truth.real.dtype)
    coded = code.encode(truth)
    assert coded.dtype == dtype
    order = rng.permutation(code.n)
    decoder = code.decoder()
    for j in order:
        if decoder.add(int(j), coded[j]):
            break
    out = decoder.result()
    assert out.dtype == dtype
    np.testing.assert_allclose(out, truth, rtol=rtol, atol=rtol)


@code_params
def test_integer_data_is_rejected(make):
    code = make()
    with pytest.raises(TypeError, match="integer data is rejected"):
        code.encode(np.ones((code.k, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="floating or complex"):
        code.decode({0: np.ones(2, dtype=np.int32)})


@code_params
@given(seed=st.integers(0, 2**32 - 1))
def test_min_results_matches_streaming(make, seed):
    code = make()
    order = np.random.default_rng(seed).permutation(code.n)
    needed = code.min_results(order)
    decoder = code.decoder()
    flags = [decoder.add(int(j), np.zeros(1)) for j in order]
    assert flags.index(True) + 1 == needed
    # the streaming flag is True from the first prefix the batch check finds decodable on
    # (later prefixes may fail PolarCode's conditioning guard: the decoder keeps the first)
    decodable = np.logical_or.accumulate([code.decodable(order[: i + 1]) for i in range(code.n)])
    assert flags == decodable.tolist()


def test_mds_decodes_from_every_k_subset():
    code = MDSCode(8, 4)
    truth = np.random.default_rng(2).standard_normal((4, 3))
    coded = code.encode(truth)
    for subset in itertools.combinations(range(8), 4):
        assert code.decodable(subset)
        np.testing.assert_allclose(code.decode({j: coded[j] for j in subset}), truth, atol=1e-9)
    assert not code.decodable([0, 1, 7])


def test_replication_uses_any_copy():
    code = ReplicationCode(3, 2)
    truth = np.arange(6.0).reshape(3, 2)
    coded = code.encode(truth)
    np.testing.assert_array_equal(code.decode({3: coded[3], 1: coded[1], 5: coded[5]}), truth)
    assert code.missing([0, 3]) == (1, 2)


def test_local_product_peeling_stops_on_a_square():
    code = LocalProductCode(4, group_size=2)  # 2 x 2 data grid
    # blocks 0, 1, 2, 3 sit at (0,0) (0,1) (1,0) (1,1): losing a 2x2 square stalls peeling
    everything_but_square = [j for j in range(code.n) if j not in (0, 1, 2, 3)]
    assert not code.decodable(everything_but_square)
    assert code.missing(everything_but_square) == (0, 1, 2, 3)
    assert code.decodable([j for j in range(code.n) if j != 0])


class TestIncrementalDecoder:
    def test_duplicates_are_ignored_and_flags_are_monotone(self):
        code = PolarCode(16, 8)
        coded = code.encode(np.random.default_rng(3).standard_normal((8, 2)))
        decoder = code.decoder()
        assert decoder.add(5, coded[5]) is False
        assert decoder.add(5, coded[5] + 1) is False  # second delivery of a retried task
        assert decoder.received == 1
        for j in range(16):
            decoder.add(j, coded[j])
        assert decoder.decodable and decoder.received == 16

    def test_result_before_decodable_names_missing_blocks(self):
        code = UncodedCode(3)
        decoder = code.decoder()
        decoder.add(1, np.ones(2))
        with pytest.raises(NotDecodableError, match=r"from 1 results \(k=3\).*\[0, 2\]"):
            decoder.result()
        assert decoder.missing() == (0, 2)

    def test_shape_mismatch(self):
        decoder = PolarCode(4, 2).decoder()
        decoder.add(0, np.zeros((2, 3)))
        with pytest.raises(ValueError, match="shape"):
            decoder.add(1, np.zeros((3, 2)))

    @pytest.mark.parametrize("index, error", [(-1, ValueError), (4, ValueError), (1.5, TypeError)])
    def test_bad_index(self, index, error):
        with pytest.raises(error, match="index"):
            PolarCode(4, 2).decoder().add(index, np.zeros(2))


class TestBadInput:
    @pytest.mark.parametrize(
        "make, error, match",
        [
            (lambda: PolarCode(12, 4), ValueError, "n must be a power of two, got 12"),
            (lambda: PolarCode(8, 9), ValueError, "k must be <= n"),
            (lambda: PolarCode(8, 0), ValueError, "k must be >= 1"),
            (lambda: PolarCode(8, 2.0), TypeError, "k must be an integer"),
            (lambda: PolarCode(8, 4, straggler_prob=1.5), ValueError, "straggler_prob"),
            (lambda: PolarCode(8, 4, straggler_prob=0.1, runtimes=[1.0, 2.0]), ValueError, "at most one"),
            (lambda: PolarCode(8, 4, runtimes=[[1.0]]), ValueError, "runtimes"),
            (lambda: PolarCode(8, 4, decoder="ml"), ValueError, "decoder"),
            (lambda: MDSCode(3, 4), ValueError, "k must be <= n"),
            (lambda: ReplicationCode(4, 0), ValueError, "r must be >= 1"),
            (lambda: LocalProductCode(4, group_size=0), ValueError, "group_size"),
        ],
    )
    def test_constructor(self, make, error, match):
        with pytest.raises(error, match=match):
            make()

    def test_blocks(self):
        code = PolarCode(8, 4)
        with pytest.raises(ValueError, match="same shape"):
            code.encode([np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2)])
        with pytest.raises(ValueError, match="hold 4 blocks"):
            code.encode(np.zeros((3, 2)))
        with pytest.raises(TypeError, match="blocks must be an array"):
            code.encode(5.0)

    def test_masks_and_results(self):
        code = PolarCode(8, 4)
        with pytest.raises(ValueError, match=r"mask must have shape \(8,\)"):
            code.decodable(np.ones(7, dtype=bool))
        with pytest.raises(ValueError, match=r"index in received must be in \[0, 8\)"):
            code.decodable([0, 8])
        with pytest.raises(ValueError, match=r"index must be in \[0, 8\), got 9"):
            code.decode({9: np.zeros(2)})
        with pytest.raises(TypeError, match="mapping"):
            code.decode([np.zeros(2)])
        with pytest.raises(ValueError, match="repeat"):
            code.min_results([0, 0, 1])
        with pytest.raises(NotDecodableError):
            code.min_results([0, 1])


def test_not_decodable_error_is_exported_and_pickles():
    assert dask_polar.NotDecodableError is NotDecodableError
    assert issubclass(NotDecodableError, ValueError)
    err = pickle.loads(pickle.dumps(NotDecodableError(3, 4, [1, 2], "<PolarCode n=8 k=4>")))
    assert (err.received, err.needed, err.missing) == (3, 4, (1, 2))
    assert "3 results" in str(err) and "[1, 2]" in str(err)


@pytest.mark.parametrize("make", [f for _, f in CODES], ids=[i for i, _ in CODES])
def test_repr_is_short_and_exact(make):
    code = make()
    form = " systematic" if getattr(code, "systematic", False) else ""
    assert repr(code) == f"<{type(code).__name__} n={code.n} k={code.k}{form}>"


@code_params
def test_launch_order_starts_with_a_decodable_set(make):
    code = make()
    order = code.launch_order()
    assert sorted(order.tolist()) == list(range(code.n))
    assert code.decodable(order[: code.k])
    assert code.min_results(order) == code.k


@pytest.mark.parametrize("n, k", [(64, 32), (256, 200), (1024, 100)])
def test_polar_launch_order_is_decodable_at_k_for_larger_codes(n, k):
    code = PolarCode(n, k)
    assert code.min_results(code.launch_order()) == k


@code_params
def test_tracker_agrees_with_the_decoder(make):
    # the value-free tracker (results kept remotely) stops where the decoder stops, on the same set
    code = make()
    order = np.random.default_rng(1).permutation(code.n)
    tracker, decoder = code.tracker(), code.decoder()
    blocks = code.encode(np.ones((code.k, 2)))
    for count, j in enumerate(order.tolist(), start=1):
        assert tracker.update([j, j]) == decoder.add(j, blocks[j])
        if tracker.decodable:
            break
    assert count == code.min_results(order) and tracker.received == decoder.received == count
    np.testing.assert_array_equal(tracker.used, decoder.mask)
    tracker.update(order[count:].tolist())  # later arrivals do not change the decodable set
    assert tracker.used.sum() == count and tracker.missing() == ()
    with pytest.raises(ValueError, match=r"index must be in \[0, "):
        code.tracker().update([code.n])
    assert isinstance(code.tracker().not_decodable(), NotDecodableError)
