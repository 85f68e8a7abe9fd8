"""Tests for dask_polar.stragglers: runtime models, seeded delays, polar design, plots."""

from __future__ import annotations

import pickle
import sys

import cloudpickle
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_polar.codes import PolarCode, polarize, polarized_cdfs
from dask_polar.stragglers import (
    Bimodal,
    Empirical,
    NoStragglers,
    Pareto,
    RuntimeModel,
    ShiftedExponential,
    draw_delays,
    plot_cdf,
    plot_polarized_cdfs,
)

MEASURED = np.random.default_rng(2024).lognormal(mean=-2.0, sigma=0.6, size=2000)

# (model, continuous CDF?) -- one of each shape, plus edge cases of Bimodal
MODELS = [
    (ShiftedExponential(shift=0.1, scale=0.05), True),
    (ShiftedExponential(shift=0.0, scale=2.0), True),
    (Bimodal(base=1.0, slow_prob=0.1, slowdown=5.0), False),  # step CDF
    (Bimodal(base=1.0, slow_prob=0.3, slowdown=4.0, jitter=0.5), True),
    (Bimodal(base=0.5, slow_prob=0.4, slowdown=1.2, jitter=0.5), True),  # overlapping modes
    (Bimodal(base=1.0, slow_prob=0.0, slowdown=3.0, jitter=0.2), True),  # never slow
    (Bimodal(base=1.0, slow_prob=1.0, slowdown=3.0), False),  # always slow
    (Pareto(shift=0.1, scale=0.05, alpha=2.5), True),
    (Pareto(shift=0.0, scale=1.0, alpha=0.7), True),  # infinite mean
    (Empirical(MEASURED), False),
    (Empirical([0.25]), False),
    (NoStragglers(), False),
]
MODEL_IDS = [repr(model) for model, _ in MODELS]
ALL_MODELS = [model for model, _ in MODELS]
CONTINUOUS = [model for model, continuous in MODELS if continuous]

probabilities = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=30
)


# -- construction, repr, pickling --------------------------------------------------------------


@pytest.mark.parametrize(
    "model, expected",
    [
        (ShiftedExponential(shift=0.1, scale=0.05), "ShiftedExponential(shift=0.1, scale=0.05)"),
        (ShiftedExponential(np.float32(0.5), 2), "ShiftedExponential(shift=0.5, scale=2.0)"),
        (Bimodal(1, 0.25, 4), "Bimodal(base=1.0, slow_prob=0.25, slowdown=4.0, jitter=0.0)"),
        (
            Bimodal(base=2.0, slow_prob=0.1, slowdown=10.0, jitter=0.2),
            "Bimodal(base=2.0, slow_prob=0.1, slowdown=10.0, jitter=0.2)",
        ),
        (Pareto(shift=0.1, scale=0.05, alpha=1.5), "Pareto(shift=0.1, scale=0.05, alpha=1.5)"),
        (Empirical([3, 1, 2]), "Empirical(samples=<3 values in [1, 3]>)"),
        (NoStragglers(), "NoStragglers()"),
    ],
)
def test_repr(model, expected):
    assert repr(model) == expected


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads),
                                          (cloudpickle.dumps, cloudpickle.loads)])
@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_picklable(model, dumps, loads):
    clone = loads(dumps(model))
    assert type(clone) is type(model)
    assert repr(clone) == repr(model)
    np.testing.assert_array_equal(clone.sample(50, seed=3), model.sample(50, seed=3))
    q = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(clone.ppf(q), model.ppf(q))


def test_runtime_model_is_abstract():
    with pytest.raises(TypeError):
        RuntimeModel()


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_sample_is_seeded(model):
    first = model.sample((3, 64), seed=7)
    assert first.shape == (3, 64)
    assert first.dtype == np.float64
    assert (first >= 0).all() and np.isfinite(first).all()
    np.testing.assert_array_equal(first, model.sample((3, 64), seed=7))
    # a Generator gives the same stream as its integer seed, and advances
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(model.sample((3, 64), seed=rng), first)
    if model.ppf(0.0) != model.ppf(1.0):  # not a point mass
        assert not np.array_equal(model.sample(64, seed=rng), first[0])
        assert not np.array_equal(model.sample(64, seed=8), model.sample(64, seed=7))


@pytest.mark.parametrize("size, shape", [(0, (0,)), (5, (5,)), ((), ()), ((2, 0, 3), (2, 0, 3)),
                                         (np.int64(4), (4,))])
def test_sample_shapes(size, shape):
    assert ShiftedExponential(0.1, 0.1).sample(size, seed=0).shape == shape


@pytest.mark.parametrize(
    "model",
    [
        ShiftedExponential(shift=0.1, scale=0.05),
        Bimodal(base=1.0, slow_prob=0.1, slowdown=5.0),
        Bimodal(base=1.0, slow_prob=0.3, slowdown=4.0, jitter=0.5),
        Pareto(shift=0.1, scale=0.05, alpha=4.5),  # finite variance
        Empirical(MEASURED),
        NoStragglers(),
    ],
    ids=repr,
)
def test_sample_mean_matches_mean(model):
    draws = model.sample(200_000, seed=11)
    tolerance = 6 * draws.std() / np.sqrt(draws.size) + 1e-12
    assert abs(draws.mean() - model.mean) <= tolerance


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_samples_follow_cdf(model):
    # Dvoretzky-Kiefer-Wolfowitz: sup |ECDF - F| <= 0.0061 with probability 1 - 1e-6
    draws = np.sort(model.sample(200_000, seed=5))
    ecdf_right = np.arange(1, draws.size + 1) / draws.size
    ecdf_left = np.arange(draws.size) / draws.size
    cdf = model.cdf(draws)
    assert np.max(np.abs(cdf - ecdf_right)[np.append(draws[1:] != draws[:-1], True)]) < 0.0061
    assert np.all(cdf >= ecdf_left - 0.0061)


def test_mean_values():
    assert ShiftedExponential(0.1, 0.05).mean == pytest.approx(0.15)
    assert Bimodal(2.0, 0.25, 5.0, jitter=0.5).mean == pytest.approx(2.0 * 1.25 * 2.0)
    assert Pareto(0.1, 0.05, 3.0).mean == pytest.approx(0.125)
    assert Pareto(0.1, 0.05, 1.0).mean == np.inf
    assert Empirical([1.0, 2.0, 6.0]).mean == pytest.approx(3.0)
    assert NoStragglers().mean == 0.0


# -- cdf and ppf -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
@given(q=probabilities)
def test_ppf_is_a_generalised_inverse(model, q):
    q = np.sort(np.asarray(q))
    t = model.ppf(q)
    assert t.shape == q.shape
    assert np.all(t[1:] >= t[:-1])  # monotone (inf at q = 1 allowed)
    assert np.all(t >= 0)
    finite = np.isfinite(t)
    # F(ppf(q)) >= q, and nothing below ppf(q) reaches q
    assert np.all(model.cdf(t[finite]) >= q[finite] - 1e-12)
    below = np.nextafter(t[finite], -np.inf) * (1 - 1e-9) - 1e-12
    assert np.all(model.cdf(below) <= q[finite] + 1e-9)


@pytest.mark.parametrize("model", CONTINUOUS, ids=repr)
@given(q=probabilities)
def test_cdf_of_ppf_is_identity_for_continuous_models(model, q):
    q = np.asarray(q)
    t = model.ppf(q)
    finite = np.isfinite(t)
    np.testing.assert_allclose(model.cdf(t[finite]), q[finite], atol=1e-9)
    assert np.all(finite | (q == 1.0))


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
@given(t=st.lists(st.floats(min_value=-10.0, max_value=1e6, allow_nan=False), max_size=30))
def test_cdf_is_monotone_and_bounded(model, t):
    t = np.sort(np.asarray(t, dtype=np.float64))
    f = model.cdf(t)
    assert f.shape == t.shape
    assert np.all((f >= 0) & (f <= 1))
    assert np.all(np.diff(f) >= 0)
    # ppf(F(t)) <= t inside the support (away from F = 1, where F rounds to 1.0)
    inside = (f > 0) & (f < 1 - 1e-6)
    assert np.all(model.ppf(f[inside]) <= t[inside] * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_cdf_ppf_edges_and_scalars(model):
    assert model.cdf(-np.inf) == 0.0
    assert model.cdf(np.inf) == 1.0
    assert model.cdf(-1e300) == 0.0 and model.cdf(1e300) == 1.0  # no overflow warnings
    assert model.cdf(-0.5) == 0.0  # task times are non-negative
    assert np.ndim(model.cdf(0.3)) == 0 and np.ndim(model.ppf(0.3)) == 0
    assert isinstance(model.cdf(0.3), np.floating)
    assert model.cdf(np.zeros((2, 3))).shape == (2, 3)
    assert model.ppf(np.full((4, 1), 0.5)).shape == (4, 1)
    # ppf(0) and ppf(1) are the ends of the support
    draws = model.sample(10_000, seed=0)
    assert model.ppf(0.0) <= draws.min() and draws.max() <= model.ppf(1.0)


def test_against_scipy():
    t = np.linspace(-1.0, 5.0, 301)
    q = np.linspace(0.0, 0.999, 301)
    expo, expo_ref = ShiftedExponential(0.3, 0.7), scipy.stats.expon(loc=0.3, scale=0.7)
    np.testing.assert_allclose(expo.cdf(t), expo_ref.cdf(t), atol=1e-14)
    np.testing.assert_allclose(expo.ppf(q), expo_ref.ppf(q), rtol=1e-12)
    pareto, pareto_ref = Pareto(0.3, 0.7, 1.7), scipy.stats.lomax(c=1.7, loc=0.3, scale=0.7)
    np.testing.assert_allclose(pareto.cdf(t), pareto_ref.cdf(t), atol=1e-14)
    np.testing.assert_allclose(pareto.ppf(q), pareto_ref.ppf(q), rtol=1e-12)
    assert pareto.mean == pytest.approx(pareto_ref.mean())
    assert expo.ppf(1.0) == np.inf and pareto.ppf(1.0) == np.inf


# -- Bimodal: exact mixture --------------------------------------------------------------------


def _mixture_cdf(t, base, p, slowdown, jitter):
    """Reference mixture CDF from scipy's uniform distribution (or a step for jitter=0)."""
    cdf = np.zeros_like(t)
    for weight, start in [(1 - p, base), (p, base * slowdown)]:
        if jitter == 0:
            cdf += weight * (t >= start)
        else:
            cdf += weight * scipy.stats.uniform(loc=start, scale=start * jitter).cdf(t)
    return cdf


@given(
    base=st.floats(0.01, 10.0),
    p=st.floats(0.0, 1.0),
    slowdown=st.floats(1.0, 20.0),
    jitter=st.one_of(st.just(0.0), st.floats(0.01, 3.0)),
)
@settings(max_examples=200)
def test_bimodal_cdf_is_the_exact_mixture(base, p, slowdown, jitter):
    model = Bimodal(base, p, slowdown, jitter)
    top = base * slowdown * (1 + jitter)
    t = np.concatenate([np.linspace(0, 1.2 * top, 97), [base, base * slowdown, top]])
    np.testing.assert_allclose(model.cdf(t), _mixture_cdf(t, base, p, slowdown, jitter),
                               atol=1e-12)
    q = np.linspace(0, 1, 41)
    x = model.ppf(q)
    assert np.all(np.diff(x) >= 0)
    assert x[0] == (base if p < 1 else base * slowdown)  # lower end of the support
    assert x[-1] == pytest.approx(top if p > 0 else base * (1 + jitter))  # upper end
    assert np.all(model.cdf(x) >= q - 1e-12)
    if jitter > 0:
        np.testing.assert_allclose(model.cdf(x), q, atol=1e-9)


def test_bimodal_step_cdf():
    model = Bimodal(base=2.0, slow_prob=0.25, slowdown=3.0)
    np.testing.assert_array_equal(model.cdf([1.99, 2.0, 5.99, 6.0, 7.0]),
                                  [0.0, 0.75, 0.75, 1.0, 1.0])
    # generalised inverse: the atom where F first reaches q
    np.testing.assert_array_equal(model.ppf([0.0, 0.5, 0.75, 0.7500001, 1.0]),
                                  [2.0, 2.0, 2.0, 6.0, 6.0])
    draws = model.sample(10_000, seed=1)
    assert set(np.unique(draws)) == {2.0, 6.0}
    assert Bimodal(1.0, 0.5, 1.0).ppf(0.9) == 1.0  # slowdown 1: a single atom


def test_bimodal_gap_between_modes():
    model = Bimodal(base=1.0, slow_prob=0.2, slowdown=10.0, jitter=0.5)
    assert model.cdf(1.5) == pytest.approx(0.8) and model.cdf(9.99) == pytest.approx(0.8)
    assert model.ppf(0.8) == pytest.approx(1.5)  # left end of the flat part
    assert model.ppf(0.9) == pytest.approx(12.5)
    draws = model.sample(10_000, seed=2)
    assert not np.any((draws > 1.5) & (draws < 10.0))


# -- Empirical ---------------------------------------------------------------------------------


@given(
    samples=st.lists(st.floats(0.0, 1e3, allow_nan=False), min_size=1, max_size=50),
    q=probabilities,
)
def test_empirical_round_trips(samples, q):
    model = Empirical(samples)
    x = np.asarray(samples)
    ranks = (x[:, None] >= x[None, :]).sum(axis=1) / x.size
    np.testing.assert_array_equal(model.cdf(x), ranks)  # ECDF
    np.testing.assert_array_equal(model.ppf(model.cdf(x)), x)  # every sample comes back
    q = np.asarray(q)
    np.testing.assert_array_equal(model.ppf(q), np.quantile(x, q, method="inverted_cdf"))
    assert np.isin(model.sample(20, seed=0), x).all()
    assert model.mean == pytest.approx(x.mean())


def test_empirical_copies_its_input():
    data = np.array([0.3, 0.1, 0.2])
    model = Empirical(data)
    data[:] = 100.0
    assert model.ppf(1.0) == 0.3
    assert not model.samples.flags.writeable


def test_empirical_resamples_uniformly():
    model = Empirical([1.0, 2.0, 3.0, 4.0])
    counts = np.unique(model.sample(40_000, seed=9), return_counts=True)[1]
    assert np.all(np.abs(counts / 40_000 - 0.25) < 0.01)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, error, match",
    [
        # ShiftedExponential
        (lambda: ShiftedExponential(0.1, -0.05), ValueError, "scale"),
        (lambda: ShiftedExponential(0.1, 0.0), ValueError, "scale"),
        (lambda: ShiftedExponential(-0.1, 0.05), ValueError, "shift"),
        (lambda: ShiftedExponential(np.inf, 0.05), ValueError, "shift"),
        (lambda: ShiftedExponential(0.1, np.nan), ValueError, "scale"),
        (lambda: ShiftedExponential("0.1", 0.05), TypeError, "shift"),
        (lambda: ShiftedExponential(0.1, None), TypeError, "scale"),
        (lambda: ShiftedExponential(True, 0.05), TypeError, "shift"),
        # Bimodal
        (lambda: Bimodal(0.0, 0.1, 5.0), ValueError, "base"),
        (lambda: Bimodal(1.0, -0.1, 5.0), ValueError, "slow_prob"),
        (lambda: Bimodal(1.0, 1.5, 5.0), ValueError, "slow_prob"),
        (lambda: Bimodal(1.0, "half", 5.0), TypeError, "slow_prob"),
        (lambda: Bimodal(1.0, 0.1, 0.5), ValueError, "slowdown"),
        (lambda: Bimodal(1.0, 0.1, -2.0), ValueError, "slowdown"),
        (lambda: Bimodal(1.0, 0.1, 5.0, jitter=-0.1), ValueError, "jitter"),
        (lambda: Bimodal(1.0, 0.1, 5.0, jitter=[0.1]), TypeError, "jitter"),
        # Pareto
        (lambda: Pareto(0.1, 0.05, 0.0), ValueError, "alpha"),
        (lambda: Pareto(0.1, 0.05, -1.0), ValueError, "alpha"),
        (lambda: Pareto(0.1, -0.05, 2.0), ValueError, "scale"),
        (lambda: Pareto(-0.1, 0.05, 2.0), ValueError, "shift"),
        (lambda: Pareto(0.1, 0.05, "2"), TypeError, "alpha"),
        # Empirical
        (lambda: Empirical([]), ValueError, "samples"),
        (lambda: Empirical(np.empty(0)), ValueError, "samples"),
        (lambda: Empirical([[0.1, 0.2]]), ValueError, "samples"),
        (lambda: Empirical([0.1, -0.2]), ValueError, "samples"),
        (lambda: Empirical([0.1, np.nan]), ValueError, "samples"),
        (lambda: Empirical([0.1, np.inf]), ValueError, "samples"),
        (lambda: Empirical(["a", "b"]), TypeError, "samples"),
        (lambda: Empirical(None), TypeError, "samples"),
        (lambda: Empirical([0.1, [0.2, 0.3]]), TypeError, "samples"),
        (lambda: Empirical([True, False]), TypeError, "samples"),
        # sample()
        (lambda: NoStragglers().sample(-1), ValueError, "size"),
        (lambda: NoStragglers().sample(2.5), TypeError, "size"),
        (lambda: NoStragglers().sample((2, "3")), TypeError, "size"),
        (lambda: NoStragglers().sample([2, 3]), TypeError, "size"),
        (lambda: NoStragglers().sample(3, seed=-1), ValueError, "seed"),
        (lambda: NoStragglers().sample(3, seed=1.5), TypeError, "seed"),
        (lambda: NoStragglers().sample(3, seed="abc"), TypeError, "seed"),
        # cdf() and ppf()
        (lambda: ShiftedExponential(0.1, 0.1).cdf("1.0"), TypeError, "t"),
        (lambda: ShiftedExponential(0.1, 0.1).cdf([1.0, np.nan]), ValueError, "t"),
        (lambda: ShiftedExponential(0.1, 0.1).cdf(1 + 2j), TypeError, "t"),
        (lambda: ShiftedExponential(0.1, 0.1).ppf(1.5), ValueError, r"q must be .*got 1.5"),
        (lambda: ShiftedExponential(0.1, 0.1).ppf([0.5, -0.1]), ValueError, "q"),
        (lambda: ShiftedExponential(0.1, 0.1).ppf(np.nan), ValueError, "q"),
        (lambda: ShiftedExponential(0.1, 0.1).ppf(None), TypeError, "q"),
        # draw_delays()
        (lambda: draw_delays(scipy.stats.expon(), 4, seed=0), TypeError, "model"),
        (lambda: draw_delays(NoStragglers(), 0, seed=0), ValueError, "n"),
        (lambda: draw_delays(NoStragglers(), 4.0, seed=0), TypeError, "n"),
        (lambda: draw_delays(NoStragglers(), 4, seed=0, trials=0), ValueError, "trials"),
        (lambda: draw_delays(NoStragglers(), 4, seed=0, trials="5"), TypeError, "trials"),
    ],
)
def test_bad_arguments_raise(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_draw_delays_needs_a_seed_keyword():
    with pytest.raises(TypeError):
        draw_delays(NoStragglers(), 4)  # seed is required: comparisons share draws
    with pytest.raises(TypeError):
        draw_delays(NoStragglers(), 4, 0)


# -- draw_delays -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_draw_delays(model):
    one = draw_delays(model, 16, seed=123)
    assert one.shape == (16,)
    many = draw_delays(model, 16, seed=123, trials=50)
    assert many.shape == (50, 16)
    np.testing.assert_array_equal(many, draw_delays(model, 16, seed=123, trials=50))
    np.testing.assert_array_equal(one, model.sample(16, seed=123))
    np.testing.assert_array_equal(many, model.sample((50, 16), seed=123))


# -- polar code design from a runtime model ----------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_polar_code_design_from_model(model):
    code = PolarCode(256, 128, runtimes=model)
    assert code.info_set.shape == (128,)
    assert np.all(np.diff(code.info_set) > 0)
    assert code.info_set.min() >= 0 and code.info_set.max() < 256
    data = np.random.default_rng(0).standard_normal((128, 3))
    np.testing.assert_allclose(code.decode(dict(enumerate(code.encode(data)))), data,
                               atol=1e-9)


@pytest.mark.parametrize("slow_prob", [0.05, 0.2, 0.5])
def test_step_bimodal_design_is_the_erasure_design(slow_prob):
    # with jitter 0 the expected virtual finish time is base + base (s - 1) * erasure prob
    runtimes = PolarCode(256, 128, runtimes=Bimodal(1.0, slow_prob, 10.0))
    erasure = PolarCode(256, 128, straggler_prob=slow_prob)
    np.testing.assert_array_equal(runtimes.info_set, erasure.info_set)


def test_very_different_runtime_shapes_give_different_designs():
    rare = PolarCode(256, 128, runtimes=Bimodal(1.0, 0.02, 10.0)).info_set
    common = PolarCode(256, 128, runtimes=Bimodal(1.0, 0.6, 10.0)).info_set
    assert not np.array_equal(rare, common)


# -- computational polarization: the functional martingale -------------------------------------


def _one_level(cdfs):
    """Children (worse, better) of every CDF, interleaved: 2j and 2j+1 come from j."""
    children = np.stack([cdfs**2, 1 - (1 - cdfs) ** 2], axis=1)
    return children.reshape(-1, cdfs.shape[-1])


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
@pytest.mark.parametrize("depth", [1, 3, 6])
def test_polarized_cdfs_are_a_martingale(model, depth):
    grid = np.linspace(float(model.ppf(0.0)) - 0.1, float(model.ppf(0.99)) + 0.1, 200)
    parent = np.asarray(model.cdf(grid))[None, :]
    for level in range(1, depth + 1):
        virtual = polarized_cdfs(parent[0] if level == 1 else np.asarray(model.cdf(grid)),
                                 1 << level)
        np.testing.assert_allclose(virtual, _one_level(parent), atol=1e-12)
        # the two children of each virtual worker average to their parent ...
        np.testing.assert_allclose(virtual.reshape(-1, 2, grid.size).mean(axis=1), parent,
                                   atol=1e-12)
        # ... so every level averages to F
        np.testing.assert_allclose(virtual.mean(axis=0), model.cdf(grid), atol=1e-12)
        parent = virtual


@given(f=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_martingale_with_polarize(f):
    cdf = np.sort(np.asarray(f))
    pair = polarize(np.stack([cdf, cdf]), lambda a, b: a * b, lambda a, b: a + b - a * b)
    np.testing.assert_allclose(pair.mean(axis=0), cdf, atol=1e-12)
    np.testing.assert_allclose(polarized_cdfs(cdf, 2), pair)


def test_polarization_converges_to_steps():
    model = ShiftedExponential(0.1, 0.05)
    grid = np.linspace(0.0, float(model.ppf(0.999)), 400)
    cdf = model.cdf(grid)

    def spread(n):  # mean of F_i (1 - F_i): zero exactly for step functions
        virtual = polarized_cdfs(cdf, n)
        return float((virtual * (1 - virtual)).mean())

    spreads = [spread(1 << level) for level in range(0, 11, 2)]
    assert all(later < earlier for earlier, later in zip(spreads, spreads[1:]))
    assert spreads[-1] < 0.5 * spreads[0]


# -- plots -------------------------------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_plot_cdf_renders(plt, tmp_path, model):
    ax = plot_cdf(model)
    assert ax.get_title() == repr(model)
    (line,) = ax.get_lines()
    x, y = line.get_data()
    np.testing.assert_allclose(y, model.cdf(x))
    ax.figure.savefig(tmp_path / "cdf.png")
    _assert_png(tmp_path / "cdf.png")


def test_plot_cdf_on_given_axes(plt):
    fig, ax = plt.subplots()
    assert plot_cdf(Pareto(0.1, 0.05, 1.5), ax=ax, points=50) is ax


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_plot_polarized_cdfs_renders(plt, tmp_path, model):
    fig = plot_polarized_cdfs(model, 64)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == [
        "level 0", "level 2", "level 3", "level 4", "level 6"
    ]
    assert len(fig.axes[-1].get_lines()) == 64 + 1  # the virtual workers and F
    fig.savefig(tmp_path / "polarized.png")
    _assert_png(tmp_path / "polarized.png")


def test_plot_polarized_cdfs_levels_and_axes(plt):
    model = Bimodal(1.0, 0.2, 4.0, jitter=0.3)
    fig = plot_polarized_cdfs(model, 8)
    assert len(fig.axes) == 4  # every level 0..3
    fig = plot_polarized_cdfs(model, 256, levels=[1, 8])
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 257]
    fig, axes = plt.subplots(1, 2)
    assert plot_polarized_cdfs(model, 16, ax=axes, levels=(0, 4)) is fig
    fig, ax = plt.subplots()
    assert plot_polarized_cdfs(model, 16, ax=ax) is fig
    assert ax.get_title() == "level 4: 16 virtual workers"
    # the curves drawn are the polarized CDFs
    x, y = ax.get_lines()[-1].get_data()
    np.testing.assert_allclose(y, model.cdf(x))
    np.testing.assert_allclose(ax.get_lines()[0].get_data()[1], model.cdf(x) ** 16)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 48}, ValueError, "n"),
        ({"n": 16, "levels": [5]}, ValueError, "level"),
        ({"n": 16, "levels": []}, ValueError, "levels"),
        ({"n": 16, "levels": 2}, TypeError, "levels"),
        ({"n": 16, "levels": [1.5]}, TypeError, "level"),
        ({"n": 16, "points": 1}, ValueError, "points"),
    ],
)
def test_plot_polarized_cdfs_bad_arguments(plt, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_polarized_cdfs(NoStragglers(), **kwargs)


def test_plot_bad_arguments(plt):
    with pytest.raises(TypeError, match="model"):
        plot_cdf([0.1, 0.2])
    with pytest.raises(TypeError, match="model"):
        plot_polarized_cdfs(scipy.stats.expon(), 8)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="ax"):
        plot_polarized_cdfs(NoStragglers(), 8, ax=ax, levels=[1, 2])


def test_plot_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install dask_polar\[plot\]"):
        plot_cdf(NoStragglers())
    with pytest.raises(ImportError, match=r"pip install dask_polar\[plot\]"):
        plot_polarized_cdfs(NoStragglers(), 4)


# -- packaging ---------------------------------------------------------------------------------


def test_pure_numpy_modules():
    # dask_polar/__init__ may import the Dask layer; the stragglers modules themselves must
    # import only numpy and dask_polar's pure-numpy parts, and matplotlib only inside functions
    import ast
    import pathlib

    import dask_polar.stragglers as stragglers

    for path in pathlib.Path(stragglers.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("dask", "distributed"), (path.name, name)
                assert not name.startswith(("..array", "..executors")), (path.name, name)
                if node in tree.body:
                    top_level.add(name)
        assert not any(name.startswith("matplotlib") for name in top_level), path.name


def test_public_names():
    import dask_polar.stragglers as stragglers

    assert sorted(stragglers.__all__) == sorted(
        ["Bimodal", "Empirical", "FaultPlan", "Faults", "InjectedFailure", "LearnedRuntimes", "NoStragglers",
         "Pareto", "RuntimeModel", "ShiftedExponential", "draw_delays", "plot_cdf", "plot_polarized_cdfs"]
    )
    for name in stragglers.__all__:
        assert getattr(stragglers, name).__doc__


@pytest.mark.parametrize(
    "model",
    [ShiftedExponential(0.1, 0.05), Bimodal(0.2, 0.1, 5.0, jitter=0.3), Pareto(0.1, 0.05, 1.5)],
    ids=repr,
)
def test_draws_of_common_tasks_do_not_depend_on_n(model):
    # coded_matmul compares uncoded (k tasks) and coded (n tasks) jobs on the same draws
    np.testing.assert_array_equal(draw_delays(model, 8, seed=3), draw_delays(model, 32, seed=3)[:8])
