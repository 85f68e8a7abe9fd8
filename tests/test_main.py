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
