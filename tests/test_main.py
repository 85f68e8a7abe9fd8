"""The command line's logging: the demo prints its tables, not distributed's INFO lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs `python -m dask_polar demo` with the demo itself replaced by a few log calls, in a
# fresh interpreter (logging is process-wide state): the real demo takes a minute.
SCRIPT = """
import logging, sys
import dask_polar.demo as demos
from dask_polar.__main__ import main

def fake_demo(**options):
    import distributed  # sets its loggers to INFO on import, as the real demo's cluster does
    logging.getLogger("distributed.scheduler").info("scheduler INFO noise")
    logging.getLogger("distributed.worker").warning("worker WARNING")
    logging.getLogger("dask_polar").debug("dask_polar DEBUG")
    print("the demo's table")

demos.matmul_demo = fake_demo
sys.exit(main(sys.argv[1:]))
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120,
        check=True,
    )


def test_demo_output_has_no_info_lines_of_distributed():
    pytest.importorskip("distributed")
    done = run_cli("demo")
    assert done.stdout == "the demo's table\n"
    assert "worker WARNING" in done.stderr  # warnings still reach the user
    assert "scheduler INFO noise" not in done.stderr
    assert "dask_polar DEBUG" not in done.stderr


def test_verbose_logs_everything():
    pytest.importorskip("distributed")
    done = run_cli("-v", "demo")
    assert "scheduler INFO noise" in done.stderr and "dask_polar DEBUG" in done.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "codes", "--k", "0"], "argument --k: must be >= 1, got 0"),
        (["demo", "codes", "--k", "-3"], "argument --k: must be >= 1, got -3"),
        (["demo", "codes", "--trials", "0"], "argument --trials: must be >= 1, got 0"),
        (["demo", "--plot", "/nonexistent/x.png"], "argument --plot: directory '/nonexistent'"),
        (["simulate", "--json", "/nonexistent/x.json"], "directory '/nonexistent' does not exist"),
        (["simulate", "--workers", str(2**30)], "--workers: must be between 1 and 65536"),
        (["lambda", "local", "--duration", "-1"], "--duration: must be a finite number > 0"),
        (["lambda", "demo", "--workers", "x"], "--workers: expected an integer, got 'x'"),
    ],
)
def test_bad_command_line_values_are_usage_errors_before_any_work(argv, message, capsys):
    # issue 21, point 7: were tracebacks, a failure after the whole simulation, and exit 0
    from dask_polar.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_bounds_its_size_by_name():
    from dask_polar.simulate import MAX_DRAWS, MAX_WORKERS, simulate
    from dask_polar.stragglers import ShiftedExponential

    model = ShiftedExponential(shift=1.0, scale=0.2)
    with pytest.raises(ValueError, match=r"workers must be <= 65536 \(dask_polar.simulate.MAX_WORKERS\)"):
        simulate(model, workers=MAX_WORKERS + 1, trials=1)
    with pytest.raises(ValueError, match="trials x workers must be <= "):
        simulate(model, workers=1024, trials=MAX_DRAWS // 1024 + 1)
