"""Replication (every block sent ``r`` times) and the uncoded baseline (``r = 1``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_int
from ._base import ErasureCode

__all__ = ["ReplicationCode", "UncodedCode"]


class ReplicationCode(ErasureCode):
    """Each data block is sent to ``r`` workers; the first copy to arrive is used.

    Coded task ``j`` carries data block ``j % k``, so tasks ``0..k-1`` are one full copy.

    Parameters
    ----------
    k : int
        Number of data blocks.
    r : int
        Copies of each block, ``n = k * r``.

    Examples
    --------
    >>> code = ReplicationCode(3, 2)
    >>> code, code.decodable([0, 4, 5])
    (<ReplicationCode n=6 k=3>, True)
    """

    name = "replication"

    def __init__(self, k: int, r: int = 2) -> None:
        k = check_int("k", k, minimum=1)
        r = check_int("r", r, minimum=1)
        super().__init__(k * r, k)
        self.r = r

    def _generator(self) -> np.ndarray:
        return np.tile(np.eye(self._k), (self.r, 1))

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        return np.tile(blocks, (self.r,) + (1,) * (blocks.ndim - 1))

    def _covered(self, mask: np.ndarray) -> np.ndarray:
        return mask.reshape(self.r, self._k).any(axis=0)

    def _decodable(self, mask: np.ndarray) -> bool:
        return bool(self._covered(mask).all())

    def _missing(self, mask: np.ndarray) -> Sequence[int]:
        return np.flatnonzero(~self._covered(mask)).tolist()

    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        copies = mask.reshape(self.r, self._k)
        first = np.argmax(copies, axis=0)  # the first copy that arrived, per block
        return coded[first * self._k + np.arange(self._k)]

    def _start(self, mask: np.ndarray) -> list:
        covered = self._covered(mask)
        return [covered, int(covered.sum())]

    def _arrive(self, state: list, index: int) -> None:
        covered = state[0]
        block = index % self._k
        if not covered[block]:
            covered[block] = True
            state[1] += 1

    def _check(self, state: list) -> bool:
        return state[1] == self._k


class UncodedCode(ReplicationCode):
    """No redundancy: ``n = k`` and every result is needed (the latency of the slowest).

    Examples
    --------
    >>> UncodedCode(4)
    <UncodedCode n=4 k=4>
    """

    name = "uncoded"

    def __init__(self, k: int) -> None:
        super().__init__(k, 1)
