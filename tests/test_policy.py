"""Speculation policy, with fake clocks."""

from __future__ import annotations

import pytest

from dask_polar.executors.policy import backup_candidates


@pytest.mark.parametrize(
    "now, running, durations, total, backed_up, expected",
    [
        # half done, median 1.0: anything running > 3 s gets a backup
        (10.0, {3: 6.5, 4: 7.5, 5: 9.0}, [1.0, 0.8, 1.2], 6, (), [3]),
        # fewer than half finished: too early to judge
        (10.0, {3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}, [1.0, 1.0], 6, (), []),
        # already backed up once
        (10.0, {3: 0.0}, [1.0] * 5, 6, {3}, []),
        # nothing finished yet
        (10.0, {0: 0.0}, [], 1, (), []),
        # exactly at the threshold is not slower than it
        (3.0, {7: 0.0}, [1.0] * 4, 8, (), []),
    ],
)
def test_backup_candidates(now, running, durations, total, backed_up, expected):
    assert backup_candidates(now, running, durations, total=total, backed_up=backed_up) == expected


def test_factor_is_respected():
    assert backup_candidates(5.0, {1: 0.0}, [1.0] * 3, total=4, factor=6.0) == []
    assert backup_candidates(5.0, {1: 0.0}, [1.0] * 3, total=4, factor=4.0) == [1]
