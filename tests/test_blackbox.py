"""Coded gradient estimators, the zeroth-order optimiser and the adversarial demo."""

from __future__ import annotations

import concurrent.futures as cf
import time

import numpy as np
import pytest

from dask_polar import CodedJobError
from dask_polar.blackbox import (
    CodedGradient,
    FiniteDifferenceGradient,
    RandomSearchGradient,
    projected_gradient_descent,
)
from dask_polar.blackbox._estimators import _FirstArrivals
from dask_polar.codes import MDSCode, PolarCode
from dask_polar.stragglers import ShiftedExponential

rng = np.random.default_rng(0)
D = 16
_M = rng.standard_normal((D, D))
Q = _M @ _M.T / D + np.eye(D)
C = rng.standard_normal(D)
X = rng.standard_normal(D)
STRAGGLERS = ShiftedExponential(shift=0.0, scale=0.002)  # tiny: the tests stay fast


def quadratic(x):
    return 0.5 * x @ Q @ x + C @ x


def quadratic_gradient(x):
    return Q @ x + C


_FEATURES = rng.standard_normal((100, D))
_LABELS = (rng.random(100) < 0.5).astype(float)


def logistic_loss(w):
    eta = _FEATURES @ w
    return float(np.mean(np.logaddexp(0.0, eta) - _LABELS * eta))


def logistic_gradient(w):
    eta = _FEATURES @ w
    return _FEATURES.T @ (1.0 / (1.0 + np.exp(-eta)) - _LABELS) / len(eta)


def smooth(x):
    return float(np.sum(x**3) + np.sin(x).sum() + 0.5 * np.sum(x) ** 2)


def smooth_gradient(x):
    return 3 * x**2 + np.cos(x) + np.sum(x)


def batched_quadratic(points):
    return 0.5 * np.einsum("ri,ij,rj->r", points, Q, points) + points @ C


# -- gradients decoded from coded evaluations ----------------------------------------------


@pytest.mark.parametrize("code", ["polar", "mds", "replication", "local-product", "uncoded"])
@pytest.mark.parametrize("k", [D, 5])  # one direction per task (scalar values), or groups
def test_quadratic_gradient_is_exact(code, k):
    # central differences are exact for quadratics: only rounding, eps * |f| / h, remains
    with CodedGradient(quadratic, D, k=k, code=code, h=1e-3, stragglers=STRAGGLERS) as g:
        for _ in range(2):  # fresh straggler draws per estimate
            np.testing.assert_allclose(g(X), quadratic_gradient(X), atol=1e-8)
        record = g.last_record
        assert record.k == k and record.n == g.n
        assert len(record.used) <= g.n


@pytest.mark.parametrize("f, gradient, x", [
    (logistic_loss, logistic_gradient, 0.1 * X),
    (smooth, smooth_gradient, X),
])
@pytest.mark.parametrize("code, factor", [
    # decoding by additions amplifies the finite-difference error little: up to 2.7x over
    # 30 arrival orders (which results decode depends on the machine's timing)
    ("polar", 4.0),
    ("mds", 20.0),   # a dense solve does, a little
])
def test_gradient_within_finite_difference_error(f, gradient, x, code, factor):
    true = gradient(x)
    for h in (1e-1, 1e-2):
        with FiniteDifferenceGradient(f, D, h=h) as fd:
            fd_error = np.abs(fd(x) - true).max()
        with CodedGradient(f, D, code=code, h=h, stragglers=STRAGGLERS, seed=7) as coded:
            error = np.abs(coded(x) - true).max()
        assert error <= factor * fd_error + 1e-9
    assert fd_error < 1e-2  # O(h**2): the bound above is not vacuous


def test_stragglers_are_not_waited_for():
    code = PolarCode(32, 16)
    delays = np.full(32, 0.001)
    slow = int(code.info_set[0])  # even a systematic position: others replace it
    delays[slow] = 30.0
    start = time.perf_counter()
    with CodedGradient(quadratic, D, code=code, stragglers=delays) as g:
        estimate = g(X)
        record = g.last_record
    assert time.perf_counter() - start < 20.0
    np.testing.assert_allclose(estimate, quadratic_gradient(X), atol=1e-7)
    assert slow in record.cancelled and slow not in record.used


def test_batch_mode_and_evaluation_count():
    with CodedGradient(batched_quadratic, D, batch=True, code="uncoded") as g:
        np.testing.assert_allclose(g(X), quadratic_gradient(X), atol=1e-7)
        assert g.evaluations == 2 * D  # two per direction, all tasks finished
    with CodedGradient(batched_quadratic, D, k=4, batch=True, code="uncoded") as g:
        g(X)
        assert g.evaluations == 2 * D  # four directions per task


def test_user_executor_and_local_cluster():
    with cf.ThreadPoolExecutor(4) as pool, CodedGradient(quadratic, D, executor=pool) as g:
        np.testing.assert_allclose(g(X), quadratic_gradient(X), atol=1e-8)
        assert g.last_record.backend == "ThreadPoolExecutor"
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=16, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client:
        with CodedGradient(quadratic, D, client=client, stragglers=STRAGGLERS) as g:
            np.testing.assert_allclose(g(X), quadratic_gradient(X), atol=1e-8)
            assert g.last_record.backend == "distributed"


def test_failing_function_is_a_coded_job_error():
    def broken(x):
        raise RuntimeError("model server down")

    with CodedGradient(broken, 4, retries=0) as g, pytest.raises(CodedJobError, match="model server down"):
        g(np.zeros(4))


# -- random search --------------------------------------------------------------------------


def test_random_search_is_unbiased():
    with RandomSearchGradient(quadratic, D, samples=4000, h=1e-3, seed=1) as rs:
        estimate = rs(X)
        assert rs.code.n == rs.code.k == 4000 and rs.evaluations == 8000
    true = quadratic_gradient(X)
    # relative standard error about sqrt(D / samples) = 0.06
    assert np.linalg.norm(estimate - true) / np.linalg.norm(true) < 0.25


def test_random_search_first_arrivals():
    delays = np.full(64, 0.001)
    delays[:8] = 30.0
    with RandomSearchGradient(quadratic, D, samples=64, use=32, stragglers=delays) as rs:
        start = time.perf_counter()
        estimate = rs(X)
        assert time.perf_counter() - start < 20.0
        record = rs.last_record
    assert set(range(8)) <= set(record.cancelled)
    true = quadratic_gradient(X)
    assert estimate @ true > 0  # 32 samples in 16 dimensions: noisy, but pointing uphill


def test_first_arrivals_code():
    code = _FirstArrivals(5, 3)
    assert not code.decodable([0, 4]) and code.decodable([0, 2, 4])
    values = {4: np.array([4.0]), 0: np.array([0.0]), 2: np.array([2.0])}
    np.testing.assert_array_equal(code.decode(values), [[0.0], [2.0], [4.0]])
    assert code.missing([1]) == (1, 2)


# -- the optimiser ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda f: CodedGradient(f, D, stragglers=STRAGGLERS),
    lambda f: FiniteDifferenceGradient(f, D),
    lambda f: CodedGradient(f, D, code=MDSCode(24, D)),
])
def test_projected_gradient_descent_converges(make):
    # minimiser of the quadratic, clipped to a box that cuts it off
    lower, upper = -0.5, 0.5
    with make(quadratic) as gradient:
        result = projected_gradient_descent(
            gradient, np.zeros(D), step_size=0.2, max_iter=150, bounds=(lower, upper),
        )
    # optimality of a box-constrained convex problem: the projected gradient step is a fixed point
    g = quadratic_gradient(result.x)
    np.testing.assert_allclose(np.clip(result.x - g, lower, upper), result.x, atol=1e-6)
    assert result.fun <= quadratic(np.zeros(D))
    assert result.n_iter == len(result.history) == 150 and not result.success


def test_projected_gradient_descent_stops():
    with CodedGradient(quadratic, D) as gradient:
        unconstrained = np.linalg.solve(Q, -C)
        result = projected_gradient_descent(gradient, np.zeros(D), step_size=0.3, max_iter=2000, gtol=1e-7)
        assert result.success and result.message == "gradient below gtol"
        np.testing.assert_allclose(result.x, unconstrained, atol=1e-6)
        target = quadratic(unconstrained) + 1.0
        stopped = projected_gradient_descent(
            gradient, np.zeros(D), step_size=0.3, stop=lambda x, fun: fun < target, normalize=True,
            project=lambda x: x,
        )
        assert stopped.success and stopped.fun < target and stopped.n_iter < 100
        # evaluations: two per finished task per step, one per iterate in the driver
        assert stopped.evaluations >= 2 * D * stopped.n_iter + stopped.n_iter + 1
        at_start = projected_gradient_descent(gradient, np.zeros(D), stop=lambda x, fun: True)
        assert at_start.success and at_start.n_iter == 0 and at_start.evaluations == 1


def test_random_search_optimises_too():
    with RandomSearchGradient(quadratic, D, samples=64, seed=3) as gradient:
        result = projected_gradient_descent(gradient, np.zeros(D), step_size=0.1, max_iter=60)
    assert result.fun < quadratic(np.zeros(D)) - 0.5 * abs(quadratic(np.linalg.solve(Q, -C)))


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: CodedGradient("f", 3), TypeError, "f must be callable"),
        (lambda: CodedGradient(quadratic, 0), ValueError, "dim must be >= 1"),
        (lambda: CodedGradient(quadratic, 2.5), TypeError, "dim must be an integer"),
        (lambda: CodedGradient(quadratic, 3, k=4), ValueError, r"k must be <= dim \(3\)"),
        (lambda: CodedGradient(quadratic, 3, h=0.0), ValueError, "h must be > 0"),
        (lambda: CodedGradient(quadratic, 3, batch="yes"), TypeError, "batch must be a bool"),
        (lambda: CodedGradient(quadratic, 3, code="turbo"), ValueError, "code must be one of"),
        (lambda: CodedGradient(quadratic, 3, colour="red"), TypeError, "unexpected option"),
        (lambda: FiniteDifferenceGradient(quadratic, 3, code="mds"), TypeError, "uncoded"),
        (lambda: RandomSearchGradient(quadratic, 3, samples=4, use=5), ValueError,
         r"use must be <= samples \(4\)"),
        (lambda: RandomSearchGradient(quadratic, 3, code="polar"), TypeError, "not a code"),
    ],
)
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros(3), ValueError, r"x must have shape \(16,\)"),
        (np.zeros((16, 1)), ValueError, "x must have shape"),
        (np.zeros(16, complex), TypeError, "x must hold real numbers"),
        (np.full(16, np.nan), ValueError, "x must be finite"),
    ],
)
def test_bad_point(x, error, match):
    with CodedGradient(quadratic, D) as g, pytest.raises(error, match=match):
        g(x)


def test_batch_function_of_the_wrong_shape():
    with CodedGradient(lambda points: 0.0, 4, batch=True, retries=0) as g:
        with pytest.raises(CodedJobError, match="one value per row"):
            g(np.zeros(4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gradient": 3}, TypeError, "gradient must be callable"),
        ({"x0": np.zeros((2, 2))}, TypeError, "x0 must be a 1-D array"),
        ({"step_size": -1.0}, ValueError, "step_size must be > 0"),
        ({"max_iter": -1}, ValueError, "max_iter must be >= 0"),
        ({"bounds": (0.0,)}, TypeError, "bounds must be a"),
        ({"bounds": (1.0, 0.0)}, ValueError, "lower <= upper"),
        ({"stop": 1}, TypeError, "stop must be callable"),
        ({"gtol": -1.0}, ValueError, "gtol must be >= 0"),
    ],
)
def test_bad_optimiser_input(kwargs, error, match):
    arguments = {"gradient": quadratic_gradient, "x0": np.zeros(D), "f": quadratic, **kwargs}
    with pytest.raises(error, match=match):
        projected_gradient_descent(arguments.pop("gradient"), arguments.pop("x0"), **arguments)


# -- the demo --------------------------------------------------------------------------------


def test_adversarial_demo(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from dask_polar.__main__ import main
    from dask_polar.blackbox import adversarial

    network, images, labels, accuracy = adversarial.train_digit_network(seed=0)
    assert accuracy > 0.9
    margin = adversarial.MarginLoss(network, int(labels[0]))
    assert margin(images[0]) == pytest.approx(margin(images[:1])[0])

    path = tmp_path / "attack.png"
    assert main(["demo", "adversarial", "--trials", "1", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "coded (polar n=128)" in out and "finite diff." in out and "random search" in out
    assert path.stat().st_size > 1000
    with pytest.raises(SystemExit):
        main(["demo", "adversarial", "--k", "3"])
