"""pytest plugin: run Dask's own tests with every eligible matrix product coded.

Used by ``tests/test_dask_dropin.py`` (``-p dask_dropin_plugin``). It enables dask_polar
for the whole session and counts the products it rewrote, failing the session if it never
rewrote one (a drop-in proof that tests nothing proves nothing).
"""

from __future__ import annotations

import logging

import pytest

import dask_polar


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.coded = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("dask_polar: coded "):
            self.coded += 1


_COUNTER = _Counter()


def pytest_configure(config: pytest.Config) -> None:
    logger = logging.getLogger("dask_polar")
    logger.addHandler(_COUNTER)
    logger.setLevel(logging.DEBUG)
    dask_polar.enable(min_size=0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    print(f"\ndask_polar rewrote {_COUNTER.coded} matrix products")
    if _COUNTER.coded == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
