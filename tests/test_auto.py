"""code="auto": learned straggler statistics, the planner, and the products it chooses."""

from __future__ import annotations

import json
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest

import dask_polar
from dask_polar import jobs
from dask_polar.array import _auto
from dask_polar.simulate.planning import METHOD_NAMES, candidates_for, plan
from dask_polar.stragglers import Bimodal, Empirical, Faults
from dask_polar.stragglers.learned import LearnedRuntimes


@pytest.fixture(autouse=True)
def fresh_statistics():
    """Every test starts from the prior: statistics are per process."""
    _auto._STATS.clear()
    yield
    _auto._STATS.clear()


def rand(shape, chunks, seed=0):
    return da.from_array(np.random.default_rng(seed).standard_normal(shape), chunks=chunks)


# -- learned statistics -----------------------------------------------------------------------

def test_learned_runtimes_are_relative_to_each_jobs_median():
    learned = LearnedRuntimes(window=10, prior=[1.0, 1.0])
    learned.add_job([2.0, 2.0, 2.0, 6.0])     # seconds: the 6 s task is 3x its job's median
    learned.add_job([0.1, 0.1, 0.1, 0.3])     # a job 20x smaller, the same stragglers
    np.testing.assert_allclose(np.sort(learned.samples()), [1.0] * 8 + [3.0, 3.0])
    assert learned.jobs == 2 and learned.generation == 2


def test_learned_runtimes_keep_a_window_and_drop_the_prior():
    learned = LearnedRuntimes(window=4, prior=[1.0] * 4)
    learned.add_job([1.0, 1.0, 10.0, 10.0, 10.0])  # median 10: relative 0.1, 0.1, 1, 1, 1
    assert sorted(learned.samples().tolist()) == [0.1, 1.0, 1.0, 1.0]


def test_censored_tasks_stand_for_the_finished_tasks_beyond_them():
    learned = LearnedRuntimes(window=100, prior=[1.0])
    learned.add_job([1.0, 1.0, 1.0, 20.0, 30.0])    # finished stragglers at 20x and 30x
    # a task cancelled after 2 s ran at least 2x: it stands for the median beyond, 25x
    learned.add_job([1.0, 1.0, 1.0, 2.0], censored=[False, False, False, True])
    samples = learned.samples()
    assert samples.max() == 30.0 and np.count_nonzero(samples == 25.0) == 1
    # with nothing beyond it, a censored task counts as its own lower bound
    only = LearnedRuntimes(window=10, prior=[1.0])
    only.add_job([1.0, 1.0, 5.0], censored=[False, False, True])
    assert only.samples().max() == 5.0


def test_learned_runtimes_round_trip_and_check_the_prior():
    learned = LearnedRuntimes(window=6, prior=[1.0])
    learned.add_job([1.0, 2.0, 1.0], censored=[False, True, False])
    again = LearnedRuntimes.from_dict(json.loads(json.dumps(learned.to_dict())))
    np.testing.assert_array_equal(again.samples(), learned.samples())
    assert again.jobs == 1
    with pytest.raises(ValueError, match="prior"):
        LearnedRuntimes(prior=[])
    with pytest.raises(ValueError, match="prior"):
        LearnedRuntimes(prior=[-1.0])
    with pytest.raises(ValueError, match="window"):
        LearnedRuntimes(window=0)
    learned.add_job([0.0, 0.0])  # a median of 0 says nothing about stragglers
    assert learned.jobs == 1


# -- the planner ------------------------------------------------------------------------------

def test_candidates_cover_both_rates_and_small_k_mds():
    names = {c.name: c for c in candidates_for(48)}
    assert names["polar"].n == 128 and names["polar-rate"].n == 64  # rates 3/8 and 3/4
    assert names["polar-butterfly"].options["systematic"] is False
    assert names["mds"].n == 96 and names["replication"].n == 96
    assert set(names) <= set(METHOD_NAMES)
    assert "mds" not in {c.name for c in candidates_for(1000)}       # dense decode: small k only
    assert all(c.n <= 64 for c in candidates_for(32, max_tasks=64))  # within polar.max-tasks
    assert [c.name for c in candidates_for(32, max_tasks=16)] == ["plain"]


def _plan(relative, **kw):
    args = dict(task_seconds=0.1, compute_seconds=0.002, block_bytes=1 << 20, slots=2,
                coded_slots=64, cores=2, overheads={name: 0.03 for name in METHOD_NAMES[1:]})
    args.update(kw)
    return plan(32, relative=relative, **args)


def test_without_stragglers_plain_is_chosen():
    made = _plan(Empirical([1.0]), task_seconds=0.002)
    assert made.chosen.name == "plain"
    plain = {c.name: c for c in made.candidates}["plain"]
    # 32 tasks of 2 ms on 2 threads: 16 in a row
    assert plain.median == pytest.approx(0.032) and plain.cpu == 1.0


def test_with_stragglers_a_method_that_outruns_them_is_chosen():
    relative = Bimodal(base=1.0, slow_prob=0.2, slowdown=15.0, jitter=0.5)
    made = _plan(Empirical(relative.sample(512, seed=1)))
    by_name = {c.name: c for c in made.candidates}
    assert made.chosen.name != "plain"
    assert made.chosen.median < 0.5 * by_name["plain"].median
    assert made.chosen.median == min(c.median for c in made.candidates if c.allowed) or (
        made.chosen.median <= 1.05 * min(c.median for c in made.candidates if c.allowed)
    )
    assert _plan(Empirical(relative.sample(512, seed=1))).to_dict() == made.to_dict()  # deterministic


def test_the_cost_cap_rules_out_expensive_methods():
    relative = Empirical(Bimodal(base=1.0, slow_prob=0.05, slowdown=15.0).sample(512, seed=2))
    made = _plan(relative, cost_cap=1.1)
    for c in made.candidates:
        assert c.allowed == (c.base_cpu <= 1.1)
    by_name = {c.name: c for c in made.candidates}
    assert by_name["replication"].base_cpu == 2.0 and not by_name["replication"].allowed
    assert by_name["polar"].base_cpu == 1.0 and by_name["polar"].cpu > 1.0  # its copies
    assert by_name["polar-butterfly"].base_cpu > 2.0
    assert made.chosen.allowed and made.chosen.name != "replication"
    assert "over the cost cap" in made.table() and "<- chosen" in made.table()


# -- code="auto" products ---------------------------------------------------------------------

@pytest.mark.parametrize("vector", [False, True])
def test_auto_chooses_plain_without_stragglers_and_is_exact(vector):
    A = rand((240, 30), (40, 10))
    B = rand((30,), (10,), seed=1) if vector else rand((30, 7), (10, 4), seed=1)
    C = dask_polar.coded_matmul(A, B, code="auto")
    np.testing.assert_allclose(C.compute(scheduler="threads"), A.compute() @ B.compute())
    record = dask_polar.last_job()
    assert record.code == "plain" and record.n == 6 * (1 if vector else 2)
    assert record.plan["chosen"] == "plain" and set(record.plan["predicted"]) >= {"plain", "polar"}
    assert all(task.status == "done" for task in record.tasks)
    assert "auto chose plain" in record.summary()


STRAGGLERS = Faults(Bimodal(base=0.01, slow_prob=0.25, slowdown=30.0), mode="block")


def test_options_that_name_the_polar_code_run_it_unplanned():
    """Faults per task index, polar's own options, or an executor where the work must run."""
    import concurrent.futures as cf

    A, B = rand((80, 6), (10, 6)), rand((6, 2), (6, 2), seed=1)
    pool = cf.ThreadPoolExecutor(4)
    for options in ({"stragglers": [0.0] * 16}, {"stragglers": Faults(fail=(1,))}, {"n": 16},
                    {"executor": pool}):
        C = dask_polar.coded_matmul(A, B, code="auto", **options)
        np.testing.assert_allclose(C.compute(scheduler="threads"), A.compute() @ B.compute())
        record = dask_polar.last_job()
        assert record.code.startswith("<PolarCode n=16 k=8") and record.plan is None
    pool.shutdown()


def test_auto_learns_from_plain_products_and_switches():
    """Blocking stragglers in plain products teach auto to code the next ones."""
    A, B = rand((32 * 8, 16), (8, 16)), rand((16, 2), (16, 2), seed=1)
    expected = A.compute() @ B.compute()
    chosen = []
    for seed in range(4):
        C = dask_polar.coded_matmul(A, B, code="auto", stragglers=STRAGGLERS, seed=seed)
        np.testing.assert_allclose(C.compute(scheduler="threads"), expected)
        chosen.append(dask_polar.last_job().plan["chosen"])
    assert chosen[0] == "plain"  # the prior: no stragglers
    assert "plain" not in chosen[1:], chosen
    assert _auto.backend_stats("threads").learned.jobs == 4
    record = dask_polar.last_job()
    assert record.code != "plain" and "auto chose" in record.summary()


def test_auto_through_the_rewrite():
    A, B = rand((32 * 8, 16), (8, 8)), rand((16, 2), (8, 2), seed=1)
    x = rand((16,), (8,), seed=2)
    with dask_polar.coded(code="auto", min_size=0):
        np.testing.assert_allclose((A @ B).compute(scheduler="threads"), A.compute() @ B.compute())
        assert dask_polar.last_job().plan["chosen"] == "plain"
        np.testing.assert_allclose(A.dot(x).compute(scheduler="threads"), A.compute() @ x.compute())
        assert dask_polar.last_job().code == "plain"
    chosen = []
    with dask_polar.coded(code="auto", min_size=0, stragglers=STRAGGLERS):
        for seed in range(4):
            with dask.config.set({"polar.seed": seed}):
                np.testing.assert_allclose((A @ x).compute(scheduler="threads"), A.compute() @ x.compute())
            chosen.append(dask_polar.last_job().plan["chosen"])
    assert "plain" not in chosen[1:], chosen


def test_learning_can_be_switched_off():
    A, B = rand((32 * 8, 16), (8, 16)), rand((16, 2), (16, 2), seed=1)
    with dask.config.set({"polar.auto.learn": False}):
        for seed in range(2):
            dask_polar.coded_matmul(A, B, code="auto", stragglers=STRAGGLERS, seed=seed).compute(
                scheduler="threads")
            assert dask_polar.last_job().plan["chosen"] == "plain"
    assert _auto.backend_stats("threads").learned.jobs == 0


def test_statistics_persist_only_where_asked(tmp_path):
    path = tmp_path / "stats.json"
    with dask.config.set({"polar.auto.path": str(path)}):
        A, B = rand((80, 6), (10, 6)), rand((6, 2), (6, 2), seed=1)
        dask_polar.coded_matmul(A, B, code="auto").compute(scheduler="threads")
        saved = json.loads(path.read_text())
        assert saved["threads"]["learned"]["jobs"] == 1
        _auto._STATS.clear()
        assert _auto.backend_stats("threads").learned.jobs == 1  # loaded again
    _auto._STATS.clear()
    assert _auto.backend_stats("threads").learned.jobs == 0


def test_plan_matmul_and_its_command_line():
    made = dask_polar.plan_matmul((4096, 256), (256, 64), k=32)
    assert made.chosen.name == "plain" and len(made.candidates) >= 6
    with pytest.raises(ValueError, match="shape_b"):
        dask_polar.plan_matmul((4096, 256), (128, 64))
    with pytest.raises(ValueError, match="k"):
        dask_polar.plan_matmul((16, 4), (4, 2), k=17)
    out = subprocess.run(
        [sys.executable, "-m", "dask_polar", "plan", "--shape-a", "4096", "256",
         "--shape-b", "256", "64", "--workers", "64", "--k", "32"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "<- chosen" in out and "chosen: plain" in out and "polar-butterfly" in out
    bad = subprocess.run(
        [sys.executable, "-m", "dask_polar", "plan", "--shape-a", "4096", "256", "--shape-b", "128", "64"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "do not align" in bad.stderr


def test_a_bad_cost_cap_is_named():
    A, B = rand((80, 6), (10, 6)), rand((6, 2), (6, 2), seed=1)
    with dask.config.set({"polar.auto.cost-cap": 0.5}):
        with pytest.raises(ValueError, match="polar.auto.cost-cap"):
            dask_polar.coded_matmul(A, B, code="auto")


def test_auto_on_a_cluster_shares_the_statistics_on_the_scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=4, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster) as client:
        A, B = rand((32 * 8, 16), (8, 16)), rand((16, 2), (16, 2), seed=1)
        expected = A.compute() @ B.compute()
        C = dask_polar.coded_matmul(A, B, code="auto")
        np.testing.assert_allclose(C.compute(), expected)
        plugin = client.cluster.scheduler.plugins["dask_polar-runtimes"]
        record = jobs.last_job(client)
        assert record.code == "plain" and record.backend == "distributed" and record.n == 32
        assert record.plan["chosen"] == "plain"
        deadline = __import__("time").monotonic() + 5
        while plugin.stats.learned.jobs < 1 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.05)
        assert plugin.stats.learned.jobs == 1
        chosen = []
        for seed in range(4):
            C = dask_polar.coded_matmul(A, B, code="auto", stragglers=STRAGGLERS, seed=seed)
            np.testing.assert_allclose(C.compute(), expected)
            chosen.append(jobs.last_job(client).plan["chosen"])
        assert "plain" not in chosen[1:], chosen


def test_a_scheduler_with_the_preload_plans_from_its_own_statistics():
    """On a remote scheduler (no client there) the rewrite plans from the scheduler's plugin."""
    import asyncio

    distributed = pytest.importorskip("distributed")
    from dask_polar.array import CodedOptions
    from dask_polar.preload import dask_setup

    async def main():
        async with distributed.Scheduler(dashboard_address=":0", host="127.0.0.1") as scheduler:
            dask_setup(scheduler)
            try:
                key, stats, *_ = _auto._backend(CodedOptions.resolve(), 64)
                assert key == f"distributed:{scheduler.address}"
                assert stats is scheduler.plugins["dask_polar-runtimes"].stats
            finally:
                dask_polar.disable()

    asyncio.run(main())


def test_a_plain_records_clock_covers_all_its_blocks():
    """Dask's threads run the blocks in any order: the record starts with the earliest."""
    from dask_polar.stragglers import ShiftedExponential

    A, B = rand((16 * 4, 4), (4, 4)), rand((4, 2), (4, 2), seed=1)
    faults = Faults(ShiftedExponential(shift=0.02, scale=0.001), mode="block")
    with dask.config.set(num_workers=2):
        dask_polar.coded_matmul(A, B, code="auto", stragglers=faults).compute(scheduler="threads")
    record = dask_polar.last_job()
    assert record.code == "plain" and min(t.started for t in record.tasks) == 0.0
    assert record.decoded_at >= 8 * 0.02  # 16 blocks of 20 ms on 2 threads
    assert record.decoded_at == max(t.finished for t in record.tasks)


def test_overheads_shrink_to_zero_and_are_forgotten():
    stats = _auto.BackendStats()
    stats.residuals = {"plain": [[1, 0.4], [2, 0.5]], "polar": [[1, 0.2], [2, 0.3], [3, 0.25]],
                       "backup": [[3, 9.0]]}
    stats.planned_jobs = 3
    overheads = stats.overheads(0.03)
    assert overheads["plain"] == pytest.approx(0.4)  # two residuals, shrunk: median(.4, .5, 0)
    assert overheads["backup"] == pytest.approx(0.03)  # one unlucky job moves nothing
    stats.residuals["mds"] = [[3, -0.01]]
    assert stats.overheads(0.03)["mds"] == pytest.approx(0.02)  # faster than predicted: at once
    assert overheads["polar"] == pytest.approx(0.25 + 0.03)
    assert overheads["mds"] == pytest.approx(0.03)  # never run: no residual, the job's cost
    stats.planned_jobs = 3 + _auto.RESIDUAL_JOBS  # plain not chosen since: tried again
    assert stats.overheads(0.03)["plain"] == 0.0


def test_the_tail_outlives_the_window_for_censored_stragglers():
    """Jobs that cancel their stragglers still say how slow stragglers are."""
    learned = LearnedRuntimes(window=8, prior=[1.0])
    learned.add_job([1.0] * 6 + [15.0, 15.0])  # a plain job: its stragglers finished
    for _ in range(3):  # coded jobs: the stragglers cancelled at 3x, nothing finished beyond
        learned.add_job([1.0] * 7 + [3.0], censored=[False] * 7 + [True])
    samples = learned.samples()
    assert 15.0 not in learned.to_dict()["values"]  # out of the window ...
    assert samples.max() == 15.0                     # ... but the censored stand for it
    again = LearnedRuntimes.from_dict(learned.to_dict())
    np.testing.assert_array_equal(again.samples(), samples)
