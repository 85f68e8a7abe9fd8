"""Plain Dask's product with injected stragglers (`dask_polar.array.baselines`)."""

from __future__ import annotations

import time

import dask
import dask.array as da
import numpy as np
import pytest

from dask_polar.array.baselines import plain_matmul
from dask_polar.stragglers import ShiftedExponential, draw_delays


def operands():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 6)), rng.standard_normal((6, 3))
    return a, b, da.from_array(a, chunks=(10, 3)), da.from_array(b, chunks=(3, 3))


def test_each_row_block_waits_its_delay_and_the_product_is_numpys():
    a, b, A, B = operands()
    delays = np.array([0.0, 0.0, 0.4, 0.0])
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=4):
        out = plain_matmul(A, B, delays).compute()
    assert 0.4 <= time.perf_counter() - start < 3.0  # the slow block holds the job
    np.testing.assert_allclose(out, a @ b)


def test_a_model_draws_the_first_k_delays_of_the_seed():
    a, b, A, B = operands()
    model = ShiftedExponential(shift=0.2, scale=0.1)
    slowest = draw_delays(model, 4, seed=3).max()
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=4):
        out = plain_matmul(A, B, model, seed=3).compute()
    assert time.perf_counter() - start >= slowest
    np.testing.assert_allclose(out, a @ b)


def test_without_stragglers_it_is_a_at_b_and_bad_delays_are_named():
    _, _, A, B = operands()
    assert plain_matmul(A, B).name == (A @ B).name
    with pytest.raises(ValueError, match="one delay per row block"):
        plain_matmul(A, B, [0.1, 0.2])
