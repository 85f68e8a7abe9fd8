"""Tests for dask_polar.simulate: the straggler simulator, its decodability, costs and plots."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import scipy.stats

from dask_polar.__main__ import main
from dask_polar.codes import (
    LocalProductCode,
    MDSCode,
    PolarCode,
    ReplicationCode,
    UncodedCode,
)
from dask_polar.executors.policy import backup_candidates
from dask_polar.simulate import (
    METHODS,
    Affine,
    CostModel,
    Heterogeneity,
    LambdaLike,
    decodable_masks,
    draw_finish_times,
    plot_polarization,
    polarization,
    results_needed,
    simulate,
)
from dask_polar.stragglers import Bimodal, Pareto, ShiftedExponential

MODEL = ShiftedExponential(shift=1.0, scale=0.2)
FREE = CostModel.free()

# codes small enough for the slow reference (code.decodable / code.min_results per pattern)
CODES = [
    PolarCode(16, 8),
    PolarCode(64, 32),
    PolarCode(64, 48),
    PolarCode(128, 64),
    PolarCode(64, 32, decoder="sc"),
    PolarCode(128, 40, straggler_prob=0.5),
    MDSCode(24, 10),
    ReplicationCode(10, 3),
    UncodedCode(7),
    LocalProductCode(12),
    LocalProductCode(10, group_size=3),  # a padded last row
]
CODE_IDS = [
    repr(code) + (" sc" if getattr(code, "decoder_kind", "") == "sc" else "") for code in CODES
]


def stable_orders(times: np.ndarray) -> np.ndarray:
    return np.argsort(times, axis=1, kind="stable")


# -- the simulator against closed forms --------------------------------------------------------


def test_deterministic_under_a_seed():
    one = simulate(MODEL, workers=64, trials=12, seed=7)
    two = simulate(MODEL, workers=64, trials=12, seed=7)
    other = simulate(MODEL, workers=64, trials=12, seed=8)
    for method in METHODS:
        np.testing.assert_array_equal(one.latency[method], two.latency[method])
        np.testing.assert_array_equal(one.needed[method], two.needed[method])
    assert not np.array_equal(one.latency["polar"], other.latency["polar"])


def test_model_draws_equal_given_times():
    times, backups = draw_finish_times(MODEL, 64, trials=10, seed=3, backups=True)
    drawn = simulate(MODEL, workers=64, trials=10, seed=3)
    given = simulate(times=times, backup_times=np.roll(backups, -32, axis=1))
    for method in METHODS:
        np.testing.assert_array_equal(drawn.latency[method], given.latency[method])


@pytest.mark.parametrize(
    "model",
    [MODEL, Pareto(shift=0.5, scale=0.1, alpha=1.2), Bimodal(base=1.0, slow_prob=0.2, slowdown=4.0)],
    ids=["shifted-exponential", "pareto", "bimodal-with-ties"],
)
def test_mds_is_the_kth_order_statistic_and_uncoded_the_max(model):
    times = draw_finish_times(model, 128, trials=30, seed=1)
    k = 50
    result = simulate(times=times, k=k, cost=FREE, methods=["uncoded", "mds", "replication"])
    kth = np.sort(times, axis=1)[:, k - 1]
    np.testing.assert_array_equal(result.arrival["mds"], kth)
    np.testing.assert_array_equal(result.latency["mds"], kth)
    np.testing.assert_array_equal(result.floor, kth)
    np.testing.assert_array_equal(result.latency["uncoded"], times[:, :k].max(axis=1))
    # replicas = 128 // 50 = 2 copies of each block
    copies = times[:, : 2 * k].reshape(30, 2, k).min(axis=1).max(axis=1)
    np.testing.assert_array_equal(result.latency["replication"], copies)
    assert (result.needed["mds"] == k).all() and (result.needed["uncoded"] == k).all()


def test_every_method_is_at_least_the_floor_and_costs_add_up():
    result = simulate(Pareto(shift=1.0, scale=0.1, alpha=1.5), workers=128, trials=20, seed=2)
    for method in METHODS:
        assert (result.arrival[method] >= result.floor).all(), method
        np.testing.assert_allclose(
            result.latency[method],
            result.encode[method] + result.arrival[method] + result.decode[method],
        )
    assert result.encode["polar"] > 0 and (result.decode["mds"] > 0).all()
    assert result.encode["uncoded"] == 0 and (result.decode["replication"] == 0).all()


def test_polar_and_local_product_agree_with_the_codes_min_results():
    times = draw_finish_times(MODEL, 64, trials=15, seed=4)
    result = simulate(times=times, cost=FREE, methods=["polar", "polar-sc", "local-product"])
    orders = stable_orders(times)
    sorted_times = np.sort(times, axis=1)
    codes = [("polar", PolarCode(64, 32)), ("polar-sc", PolarCode(64, 32, decoder="sc"))]
    for method, code in codes:
        expected = [code.min_results(order) for order in orders]
        np.testing.assert_array_equal(result.needed[method], expected)
        np.testing.assert_array_equal(
            result.arrival[method], sorted_times[np.arange(15), np.array(expected) - 1]
        )
    local = LocalProductCode(32)
    sub_orders = stable_orders(times[:, : local.n])
    expected = np.array([local.min_results(order) for order in sub_orders])
    np.testing.assert_array_equal(result.needed["local-product"], expected)
    decisive = sub_orders[np.arange(15), expected - 1]
    np.testing.assert_array_equal(result.arrival["local-product"], times[np.arange(15), decisive])


def test_exact_trials_runs_polar_on_a_subset():
    result = simulate(MODEL, workers=64, trials=10, exact_trials=4)
    assert not np.isnan(result.latency["polar"][:4]).any()
    assert np.isnan(result.latency["polar"][4:]).all()
    rows = {row["method"]: row for row in result.summary()}
    assert rows["polar"]["trials"] == 4 and rows["uncoded"]["trials"] == 10
    assert math.isfinite(rows["polar"]["median_vs_uncoded"])


def _backup_reference(first: np.ndarray, copies: np.ndarray, factor: float, tick: float) -> float:
    """The real policy (`backup_candidates`) on a fake clock that ticks every ``tick`` s."""
    k = first.size
    launched: dict[int, float] = {}
    now = 0.0
    while True:
        copy_done = [launched[i] + copies[i] if i in launched else np.inf for i in range(k)]
        done = np.minimum(first, copy_done)
        running = {i: 0.0 for i in range(k) if done[i] > now and i not in launched}
        if not running:  # nothing left that could get a copy: the finish times are fixed
            return float(done.max())
        durations = [float(t) for t in first if t <= now]
        for i in backup_candidates(now, running, durations, total=k, factor=factor,
                                   backed_up=launched.keys()):
            launched[i] = now
        now += tick


def test_backup_rule_matches_the_real_policy_on_a_fake_clock():
    model = Bimodal(base=1.0, slow_prob=0.15, slowdown=6.0, jitter=0.2)
    times, backups = draw_finish_times(model, 24, trials=8, seed=5, backups=True)
    result = simulate(times=times, backup_times=backups, k=12, cost=FREE, methods=["backup"])
    tick = 1e-3
    for t in range(8):
        expected = _backup_reference(times[t, :12], backups[t, :12], 3.0, tick)
        # the fake clock launches up to one tick late
        assert result.latency["backup"][t] == pytest.approx(expected, abs=2 * tick)
    assert (result.launched["backup"] >= 12).all()
    assert (result.launched["backup"] > 12).any()  # the slow mode did trigger copies
    assert (result.latency["backup"] < times[:, :12].max(axis=1)).any()


# -- decodability against the real decoders -----------------------------------------------------


@pytest.mark.parametrize("code", CODES, ids=CODE_IDS)
def test_decodable_masks_agree_with_the_code(code):
    rng = np.random.default_rng(11)
    masks = np.zeros((120, code.n), dtype=bool)
    # sizes from just below k to n: both answers occur, many near the threshold
    sizes = rng.integers(max(code.k - 2, 0), code.n + 1, size=120)
    for mask, size in zip(masks, sizes):
        mask[rng.permutation(code.n)[:size]] = True
    expected = [code.decodable(mask) for mask in masks]
    np.testing.assert_array_equal(decodable_masks(code, masks), expected)
    assert any(expected) and not all(expected)


@pytest.mark.parametrize("code", CODES, ids=CODE_IDS)
def test_results_needed_agrees_with_min_results(code):
    rng = np.random.default_rng(12)
    orders = np.array([rng.permutation(code.n) for _ in range(25)])
    expected = [code.min_results(order) for order in orders]
    np.testing.assert_array_equal(results_needed(code, orders), expected)


# -- polarization ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [MODEL, LambdaLike(), Bimodal(base=1.0, slow_prob=0.3, slowdown=3.0, jitter=0.2)],
    ids=["shifted-exponential", "lambda", "bimodal"],
)
def test_polarized_cdfs_are_a_martingale(model):
    pol = polarization(model, 64, levels=range(7), points=200)
    for level in range(6):
        parent, children = pol.cdfs[level], pol.cdfs[level + 1]
        # children of position s at length 2**level: 2s (worse) and 2s + 1 (better)
        mean = children.reshape(parent.shape[0], 2, -1).mean(axis=1)
        np.testing.assert_allclose(mean, parent, atol=1e-12)
        assert (children[0::2] <= parent + 1e-15).all() and (children[1::2] >= parent - 1e-15).all()
    np.testing.assert_allclose(pol.cdfs[0][0], pol.cdf)
    assert pol.spread[0] == 1.0 and (np.diff(pol.spread) <= 1e-12).all() and pol.spread[-1] < 0.7


def test_plot_polarization_writes_a_file(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "polarization.png"
    fig = plot_polarization(MODEL, 32, path=str(path))
    plt.close(fig)
    assert path.stat().st_size > 1000


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"dask_polar\[plot\]"):
        plot_polarization(MODEL, 8)


# -- models, heterogeneity, costs -------------------------------------------------------------------


def test_lambda_like_cdf_ppf_and_samples_agree():
    model = LambdaLike(median=2.0, tail_prob=0.05)
    q = np.linspace(0.0, 0.999, 301)
    np.testing.assert_allclose(model.cdf(model.ppf(q)), q, atol=1e-9)
    samples = model.sample(4000, seed=0)
    assert scipy.stats.kstest(samples, model.cdf).pvalue > 1e-3
    assert float(model.ppf(0.0)) == 0.0 and math.isinf(float(model.ppf(1.0)))
    assert LambdaLike(tail_prob=0.0).ppf(0.5) == pytest.approx(1.0)


def test_heterogeneity_groups_and_speeds():
    base = draw_finish_times(MODEL, 16, trials=50, seed=9)
    het = Heterogeneity(group_size=4, group_slow_prob=0.5, group_slowdown=3.0)
    slow = draw_finish_times(MODEL, 16, trials=50, seed=9, heterogeneity=het)
    factor = np.round(slow / base, 12)
    assert set(np.unique(factor)) == {1.0, 3.0}
    # contiguous groups: four workers in a row share their factor in every trial
    assert (factor.reshape(50, 4, 4) == factor.reshape(50, 4, 4)[:, :, :1]).all()
    strided = Heterogeneity(group_size=4, group_slow_prob=0.5, group_slowdown=3.0, layout="strided")
    np.testing.assert_array_equal(strided.group_of(8), [0, 1, 0, 1, 0, 1, 0, 1])
    speeds = Heterogeneity(speed_factors=np.arange(1.0, 17.0))
    np.testing.assert_allclose(
        draw_finish_times(MODEL, 16, trials=50, seed=9, heterogeneity=speeds),
        base * np.arange(1.0, 17.0),
    )


def test_cost_model_shapes():
    cost = CostModel()
    assert cost.mds_decode(1000, 0, 8192) == 0.0
    assert cost.mds_decode(1000, 400, 8192) > cost.mds_decode(1000, 100, 8192) > 0
    assert cost.polar_encode(1024, 8192) < cost.polar_encode(4096, 8192)
    assert float(cost.polar_decode(1024, 512, 8192, 10)) > float(cost.polar_decode(1024, 512, 8192))
    assert CostModel.free().polar_encode(1024, 8192) == 0.0
    assert Affine(1.0, 2.0)(3.0) == 7.0
    assert json.loads(json.dumps(cost.to_dict()))["add"] == list(cost.add)


# -- command line -------------------------------------------------------------------------------


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    code = main(["simulate", "--workers", "64", "--trials", "5", "--model", "lambda",
                 "--param", "tail_prob=0.1", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    for method in METHODS:
        assert method in out
    assert "med/unc" in out and "needed/k" in out
    record = json.loads(path.read_text())
    assert record["workers"] == 64 and len(record["summary"]) == len(METHODS)
    assert len(record["per_trial"]["polar"]["latency"]) == 5


def test_cli_reports_bad_arguments(capsys):
    assert main(["simulate", "--workers", "1000", "--trials", "2"]) == 2
    assert "workers must be a power of two" in capsys.readouterr().err
    assert main(["simulate", "--trials", "2", "--param", "colour=1"]) == 2
    assert "colour" in capsys.readouterr().err


# -- bad input ----------------------------------------------------------------------------------

TIMES = np.ones((3, 16))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        # (simulate keywords, exception, message names the argument)
        ({"model": "exp"}, TypeError, "model"),
        ({"model": None}, ValueError, "model and times"),
        ({"model": MODEL, "times": TIMES}, ValueError, "model and times"),
        ({"model": MODEL, "workers": 100}, ValueError, "workers must be a power of two"),
        ({"model": MODEL, "workers": 16.0}, TypeError, "workers"),
        ({"model": MODEL, "workers": 16, "k": 17}, ValueError, "k must be <= workers"),
        ({"model": MODEL, "workers": 16, "k": 0}, ValueError, "k must be >= 1"),
        ({"model": MODEL, "trials": 0}, ValueError, "trials"),
        ({"model": MODEL, "methods": "polar"}, TypeError, "methods"),
        ({"model": MODEL, "methods": ["turbo"]}, ValueError, "methods"),
        ({"model": MODEL, "methods": []}, ValueError, "methods"),
        ({"model": MODEL, "methods": ["mds", "mds"]}, ValueError, "methods"),
        ({"model": MODEL, "block_bytes": "8k"}, TypeError, "block_bytes"),
        ({"model": MODEL, "block_bytes": -1}, ValueError, "block_bytes"),
        ({"model": MODEL, "cost": {"add": 1}}, TypeError, "cost"),
        ({"model": MODEL, "exact_trials": -1}, ValueError, "exact_trials"),
        ({"model": MODEL, "replicas": 0}, ValueError, "replicas"),
        ({"model": MODEL, "workers": 16, "replicas": 3}, ValueError, "replicas"),
        ({"model": MODEL, "workers": 16, "k": 16, "methods": ["local-product"]},
         ValueError, "local product"),
        ({"model": MODEL, "backup_factor": 1.0}, ValueError, "backup_factor"),
        ({"model": MODEL, "design": "magic"}, ValueError, "design"),
        ({"model": MODEL, "design": 1}, TypeError, "design"),
        ({"model": MODEL, "straggler_prob": 1.5}, ValueError, "straggler_prob"),
        ({"model": MODEL, "heterogeneity": {"group_size": 4}}, TypeError, "heterogeneity"),
        ({"model": MODEL, "seed": -1}, ValueError, "seed"),
        ({"times": TIMES}, ValueError, "backup_times"),
        ({"times": TIMES, "methods": ["mds"], "workers": 8}, ValueError, "workers"),
        ({"times": -TIMES, "methods": ["mds"]}, ValueError, "times"),
        ({"times": np.ones(16), "methods": ["mds"]}, ValueError, "times"),
        ({"times": np.full((3, 16), "a"), "methods": ["mds"]}, TypeError, "times"),
        ({"times": TIMES, "backup_times": np.ones((3, 8))}, ValueError, "backup_times"),
        ({"model": MODEL, "backup_times": TIMES}, ValueError, "backup_times"),
    ],
)
def test_simulate_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate(**kwargs)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: LambdaLike(spread=1.0), ValueError, "spread"),
        (lambda: LambdaLike(tail_prob=1.5), ValueError, "tail_prob"),
        (lambda: LambdaLike(median="1"), TypeError, "median"),
        (lambda: Heterogeneity(group_size=0), ValueError, "group_size"),
        (lambda: Heterogeneity(layout="random"), ValueError, "layout"),
        (lambda: Heterogeneity(group_slowdown=0.5), ValueError, "group_slowdown"),
        (lambda: Heterogeneity(speed_factors=[1.0, -1.0]), ValueError, "speed_factors"),
        (lambda: Heterogeneity(speed_factors=[1.0], speed_spread=0.1), ValueError, "speed_spread"),
        (lambda: draw_finish_times(MODEL, 4, trials=2, seed=0,
                                   heterogeneity=Heterogeneity(speed_factors=[1.0, 2.0])),
         ValueError, "speed_factors"),
        (lambda: draw_finish_times("exp", 4, trials=2, seed=0), TypeError, "model"),
        (lambda: draw_finish_times(MODEL, 4, trials=2, seed=0, backups=1), TypeError, "backups"),
        (lambda: polarization(MODEL, 12), ValueError, "n must be a power of two"),
        (lambda: polarization(1.0, 16), TypeError, "model"),
        (lambda: polarization(MODEL, 16, levels=[5]), ValueError, "level"),
        (lambda: polarization(MODEL, 16, levels="all"), TypeError, "levels"),
        (lambda: polarization(MODEL, 16, points=1), ValueError, "points"),
        (lambda: decodable_masks(MDSCode(4, 2), np.ones((2, 4), dtype=int)), TypeError, "masks"),
        (lambda: decodable_masks(MDSCode(4, 2), np.ones((2, 5), dtype=bool)), ValueError, "masks"),
        (lambda: decodable_masks("mds", np.ones((2, 4), dtype=bool)), TypeError, "code"),
        (lambda: results_needed(MDSCode(4, 2), np.array([[0, 0, 1, 2]])), ValueError, "orders"),
        (lambda: results_needed(MDSCode(4, 2), np.array([[0.0, 1, 2, 3]])), TypeError, "orders"),
        (lambda: CostModel(add=(1.0,)), TypeError, "add"),
        (lambda: CostModel(sc=Affine(-1.0, 0.0)), ValueError, "sc.intercept"),
    ],
)
def test_helpers_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_inactivation_check_agrees_at_the_threshold():
    # the simulator's check skips the full SVD's left factor; the answers must not move,
    # least of all where the conditioning guard decides (just around min_results)
    from dask_polar.simulate.decodability import inactivation_check

    code = PolarCode(512, 256)
    rng = np.random.default_rng(13)
    for _ in range(4):
        order = rng.permutation(code.n)
        threshold = code.min_results(order)
        for count in range(threshold - 3, threshold + 3):
            mask = np.zeros(code.n, dtype=bool)
            mask[order[:count]] = True
            assert inactivation_check(code, mask)[0] == code.decodable(mask) == (count >= threshold)


@pytest.mark.parametrize("n, model", [(64, MODEL), (256, Bimodal(1.0, 0.2, 10.0)), (1024, MODEL)])
def test_one_symbol_answers_are_the_checks(n, model):
    # the search answers its one-symbol probes (and those below the first arrival the
    # undetermined direction shows in) from one pass: every answer must be the check's
    from dask_polar.simulate.decodability import _one_symbol_answers, inactivation_check

    code = PolarCode(n, n // 2)
    orders = stable_orders(draw_finish_times(model, n, trials=12, seed=3))
    answered = 0
    for order in orders:
        shortcut = _one_symbol_answers(code, order)
        if shortcut is None:
            continue
        low, high, threshold = shortcut
        mask = np.zeros(n, dtype=bool)
        for count in range(code.k, high + 1):
            mask[:] = False
            mask[order[:count]] = True
            ok, symbols = inactivation_check(code, mask)
            if count <= threshold:
                assert not ok
            elif count >= low:
                assert ok and symbols == 1
            answered += count <= threshold or count >= low
    assert answered
