"""Coded GLM estimators: accuracy against numpy/scikit-learn, convergence, stragglers, errors."""

from __future__ import annotations

import concurrent.futures as cf
import time
import warnings

import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import CodedMatrix
from dask_polar.jobs import JobCallback, callback
from dask_polar.linear_model import (
    ConvergenceWarning,
    LeastSquares,
    LogisticRegression,
    PoissonRegression,
    _glm,
)
from dask_polar.stragglers import ShiftedExponential

rng = np.random.default_rng(0)
M, P = 400, 10
A = rng.standard_normal((M, P))
W = rng.standard_normal(P)
Y = A @ W + 0.5 + 0.1 * rng.standard_normal(M)
# tiny injected delays: the early-completion path runs, the tests stay fast
STRAGGLERS = ShiftedExponential(shift=0.0, scale=0.002)


def conditioned(kappa: float, m: int = M, p: int = P, seed: int = 1) -> np.ndarray:
    """An m x p matrix with singular values spread log-uniformly over a factor kappa."""
    g = np.random.default_rng(seed)
    U, _ = np.linalg.qr(g.standard_normal((m, p)))
    V, _ = np.linalg.qr(g.standard_normal((p, p)))
    return np.sqrt(m) * (U * np.logspace(0, -np.log10(kappa), p)) @ V.T


def lstsq(A: np.ndarray, y: np.ndarray, intercept: bool) -> np.ndarray:
    design = np.column_stack([A, np.ones(len(A))]) if intercept else A
    return np.linalg.lstsq(design, y, rcond=None)[0]


# -- least squares ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["newton", "gd"])
@pytest.mark.parametrize("code", ["polar", "mds", "uncoded"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_matches_lstsq(solver, code, fit_intercept):
    model = LeastSquares(
        solver=solver, code=code, fit_intercept=fit_intercept, tol=1e-10, k=8,
        stragglers=STRAGGLERS, seed=3,
    ).fit(A, Y)
    expected = lstsq(A, Y, fit_intercept)
    np.testing.assert_allclose(model.coef_, expected[:P], atol=1e-8)
    if fit_intercept:
        assert model.intercept_ == pytest.approx(expected[P], abs=1e-8)
    assert model.converged_ and model.n_iter_ == len(model.history_) >= 1
    np.testing.assert_allclose(model.predict(A), A @ model.coef_ + model.intercept_)
    assert model.score(A, Y) > (0.99 if fit_intercept else 0.9)  # Y has an offset of 0.5


@pytest.mark.parametrize(
    "solver, kappa",
    [
        # Newton solves the normal equations: accurate while kappa(A)**2 * eps is small
        ("newton", 1.0),
        ("newton", 1e4),
        # gradient descent needs ~ kappa(A)**2 iterations: moderate conditioning only
        ("gd", 1.0),
        ("gd", 30.0),
    ],
)
def test_least_squares_conditioning(solver, kappa):
    Ak = conditioned(kappa)
    y = Ak @ W + 0.1 * rng.standard_normal(M)
    model = LeastSquares(solver=solver, fit_intercept=False, tol=1e-11, max_iter=3000, k=8)
    model.fit(Ak, y)
    expected = lstsq(Ak, y, False)
    assert model.converged_
    relative = np.linalg.norm(model.coef_ - expected) / np.linalg.norm(expected)
    assert relative < 1e-6
    if solver == "newton":
        assert model.n_iter_ == 1  # least squares: the first Newton step is exact


def test_ridge_matches_closed_form():
    alpha = 0.3
    model = LeastSquares(alpha=alpha, fit_intercept=False, tol=1e-12).fit(A, Y)
    expected = np.linalg.solve(A.T @ A / M + alpha * np.eye(P), A.T @ Y / M)
    np.testing.assert_allclose(model.coef_, expected, atol=1e-10)


def test_fixed_step_gradient_descent():
    model = LeastSquares(solver="gd", step_size=0.5, tol=1e-9, max_iter=500).fit(A, Y)
    np.testing.assert_allclose(model.coef_, lstsq(A, Y, True)[:P], atol=1e-7)
    assert {h["step"] for h in model.history_} == {0.5}


def test_fixed_step_too_large_diverges_with_a_warning():
    with pytest.warns(ConvergenceWarning, match="step_size=1e\\+06 is too large"):
        LeastSquares(solver="gd", step_size=1e6, max_iter=500).fit(A, Y)


def test_history_and_attributes():
    model = LeastSquares(solver="gd", tol=1e-9).fit(A, Y)
    losses = [h["loss"] for h in model.history_]
    assert set(model.history_[0]) == {"iteration", "loss", "grad_norm", "step", "seconds", "products"}
    assert losses[-1] < losses[0]
    assert [h["iteration"] for h in model.history_] == list(range(1, model.n_iter_ + 1))
    # two coded jobs per gradient-descent iteration (plus the first gradient)
    assert model.history_[-1]["products"] == 2 * model.n_iter_ + 1
    assert model.n_features_in_ == P and model.encode_seconds_ > 0
    assert repr(LeastSquares(solver="gd", alpha=0.5)) == "LeastSquares(alpha=0.5, solver='gd')"


def test_max_iter_warns():
    with pytest.warns(ConvergenceWarning, match="stopped after 2 iteration"):
        model = LeastSquares(solver="gd", max_iter=2, tol=1e-12).fit(conditioned(100.0), Y)
    assert not model.converged_ and model.n_iter_ == 2


class Collect(JobCallback):
    def __init__(self):
        self.records = []

    def on_finish(self, record, **kwargs):
        self.records.append(record)


def test_stragglers_are_not_waited_for():
    delays = np.full(16, 0.001)
    delays[5] = 30.0  # one task of every coded job straggles for 30 s
    start = time.perf_counter()
    with callback(Collect()) as seen:
        model = LeastSquares(solver="gd", k=8, stragglers=delays, tol=1e-9).fit(A, Y)
    assert time.perf_counter() - start < 20.0
    np.testing.assert_allclose(model.coef_, lstsq(A, Y, True)[:P], atol=1e-7)
    assert len(seen.records) == model.history_[-1]["products"]
    assert all(5 in r.cancelled for r in seen.records)


def test_dask_input_and_shared_encoding():
    Ad = da.from_array(A, chunks=(50, P))
    with CodedMatrix(Ad, code="polar") as coded:  # encoded once, used by two fits
        assert coded.code.k == 8
        plain = LeastSquares(fit_intercept=False).fit(coded, Y)
        ridge = LeastSquares(fit_intercept=False, alpha=0.1, solver="gd", tol=1e-9).fit(coded, Y)
        assert plain.encode_seconds_ < 1.0  # nothing to encode but A.T, once
        np.testing.assert_allclose(coded @ np.ones(P), A @ np.ones(P))  # still open
    np.testing.assert_allclose(plain.coef_, lstsq(A, Y, False), atol=1e-9)
    np.testing.assert_allclose(
        ridge.coef_, np.linalg.solve(A.T @ A / M + 0.1 * np.eye(P), A.T @ Y / M), atol=1e-8
    )
    # a dask array, not a CodedMatrix: its row chunks are the data blocks
    model = LeastSquares().fit(Ad, da.from_array(Y, chunks=50))
    np.testing.assert_allclose(model.predict(Ad), A @ model.coef_ + model.intercept_)


def test_integer_features_are_converted():
    Ai = rng.integers(-5, 5, size=(200, 4))
    y = Ai @ np.array([1.0, 2.0, 3.0, 4.0])
    model = LeastSquares(fit_intercept=False).fit(Ai, y)
    np.testing.assert_allclose(model.coef_, [1, 2, 3, 4], atol=1e-9)


def test_user_executor():
    with cf.ThreadPoolExecutor(4) as pool:
        model = LeastSquares(executor=pool, options={"redundancy": 2}).fit(A, Y)
    np.testing.assert_allclose(model.coef_, lstsq(A, Y, True)[:P], atol=1e-9)


# -- logistic and Poisson regression --------------------------------------------------------


def logistic_data(m: int = 600, seed: int = 2):
    g = np.random.default_rng(seed)
    X = g.standard_normal((m, 5))
    eta = X @ np.array([1.0, -2.0, 0.5, 0.0, 1.5]) + 0.4
    return X, (g.random(m) < 1.0 / (1.0 + np.exp(-eta))).astype(int)


@pytest.mark.parametrize("solver", ["newton", "gd"])
@pytest.mark.parametrize("C", [np.inf, 0.5])
def test_logistic_matches_sklearn(solver, C):
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = logistic_data()
    reference = sklearn.LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    alpha = 0.0 if np.isinf(C) else 1.0 / (C * len(y))
    model = LogisticRegression(
        solver=solver, alpha=alpha, tol=1e-10, stragglers=STRAGGLERS, k=8
    ).fit(X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_[0], atol=1e-6)
    assert model.intercept_ == pytest.approx(reference.intercept_[0], abs=1e-6)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_logistic_ill_conditioned():
    sklearn = pytest.importorskip("sklearn.linear_model")
    X = conditioned(1e3, m=600, p=5)
    g = np.random.default_rng(5)
    y = (g.random(600) < 1 / (1 + np.exp(-(X @ np.array([1.0, -1.0, 2.0, 0.5, 0.0]))))).astype(int)
    reference = sklearn.LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(X, y)
    model = LogisticRegression(tol=1e-10).fit(X, y)
    assert model.converged_
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-5)


def test_logistic_labels():
    X, y = logistic_data()
    labels = np.where(y == 1, "spam", "ham")
    model = LogisticRegression().fit(X, labels)
    np.testing.assert_array_equal(model.classes_, ["ham", "spam"])
    assert set(model.predict(X)) <= {"ham", "spam"}
    numeric = LogisticRegression().fit(X, y.astype(bool))
    np.testing.assert_allclose(model.coef_, numeric.coef_)
    assert model.score(X, labels) > 0.8


def test_poisson_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, _ = logistic_data()
    g = np.random.default_rng(3)
    y = g.poisson(np.exp(X @ np.array([0.3, -0.2, 0.1, 0.0, 0.2]) + 0.5))
    reference = sklearn.PoissonRegressor(alpha=0.0, tol=1e-12, max_iter=10_000).fit(X, y)
    for solver in ("newton", "gd"):
        model = PoissonRegression(solver=solver, tol=1e-10, stragglers=STRAGGLERS).fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-6)
        np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-6)


def test_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    X, y = logistic_data(300)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=8, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client:
        model = LogisticRegression(client=client, tol=1e-9).fit(X, y)
        assert dask_polar.last_job(client).backend == "distributed"
    with cf.ThreadPoolExecutor(2) as pool:
        local = LogisticRegression(executor=pool, tol=1e-9).fit(X, y)
    np.testing.assert_allclose(model.coef_, local.coef_, atol=1e-7)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "estimator, A_, y_, error, match",
    [
        # shapes
        (LeastSquares(), np.ones(10), np.ones(10), ValueError, "A must be 2-D"),
        (LeastSquares(), np.ones((10, 2)), np.ones(9), ValueError, "y has 9 entries but A has 10 rows"),
        (LeastSquares(), np.ones((10, 2)), np.ones((10, 1)), ValueError, "y must be 1-D"),
        (LeastSquares(), np.ones((0, 2)), np.ones(0), ValueError, "at least one row"),
        # types
        (LeastSquares(), [["a", "b"]], ["x"], TypeError, "A must be a 2-D array of real numbers"),
        (LeastSquares(), np.ones((4, 2), complex), np.ones(4), TypeError, "complex"),
        (LeastSquares(), np.ones((4, 2)), np.array(list("abcd")), TypeError, "y must hold real"),
        # values
        (LeastSquares(), np.ones((4, 2)), [1.0, np.nan, 2.0, 3.0], ValueError, "y must not contain NaN"),
        (LeastSquares(), np.ones((4, 2)), [1.0, np.inf, 2.0, 3.0], ValueError, "infinity"),
        (LeastSquares(), [[1.0, np.nan]] * 4, np.ones(4), ValueError, "A must not contain NaN"),
        (LogisticRegression(), np.ones((4, 2)), [0, 1, 2, 1], ValueError, "exactly two classes"),
        (LogisticRegression(), np.ones((4, 2)), [1, 1, 1, 1], ValueError, "exactly two classes"),
        (LogisticRegression(), np.ones((4, 2)), [0.0, 1.0, np.nan, 1.0], ValueError, "NaN"),
        (PoissonRegression(), np.ones((4, 2)), [0, 1, -2, 1], ValueError, "y must be >= 0"),
        # parameters
        (LeastSquares(solver="lbfgs"), np.ones((4, 2)), np.ones(4), ValueError, "solver must be one of"),
        (LeastSquares(solver=1), np.ones((4, 2)), np.ones(4), TypeError, "solver must be one of"),
        (LeastSquares(alpha=-1), np.ones((4, 2)), np.ones(4), ValueError, "alpha must be >= 0"),
        (LeastSquares(alpha="1"), np.ones((4, 2)), np.ones(4), TypeError, "alpha must be a real"),
        (LeastSquares(max_iter=0), np.ones((4, 2)), np.ones(4), ValueError, "max_iter must be >= 1"),
        (LeastSquares(tol=0.0), np.ones((4, 2)), np.ones(4), ValueError, "tol must be > 0"),
        (LeastSquares(step_size=0.1), np.ones((4, 2)), np.ones(4), ValueError, "use solver='gd'"),
        (LeastSquares(fit_intercept=1), np.ones((4, 2)), np.ones(4), TypeError,
         "fit_intercept must be a bool"),
        (LeastSquares(k=0), np.ones((4, 2)), np.ones(4), ValueError, "k must be >= 1"),
        (LeastSquares(options=[1]), np.ones((4, 2)), np.ones(4), TypeError, "options must be a mapping"),
    ],
)
def test_bad_input_fails_before_any_work(monkeypatch, estimator, A_, y_, error, match):
    class NoEncoding(CodedMatrix):
        def __init__(self, *args, **kwargs):
            raise AssertionError("encoding started before the input was checked")

    monkeypatch.setattr(_glm, "CodedMatrix", NoEncoding)
    with pytest.raises(error, match=match):
        estimator.fit(A_, y_)


def test_bad_coded_options():
    with pytest.raises(TypeError, match="unexpected option"):
        LeastSquares(options={"colour": "red"}).fit(A, Y)
    with pytest.raises(ValueError, match="code must be one of"):
        LeastSquares(code="turbo").fit(A, Y)


def test_predict_errors():
    with pytest.raises(AttributeError, match="not fitted yet"):
        LeastSquares().predict(A)
    model = LeastSquares().fit(A, Y)
    with pytest.raises(ValueError, match="A has 3 features, but the model was fitted with 10"):
        model.predict(np.ones((2, 3)))


def test_no_warning_when_converged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LogisticRegression().fit(*logistic_data())
