"""A systematic real-valued MDS code: the baseline of Lee et al. (2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_int
from ._base import ErasureCode

__all__ = ["MDSCode"]


class MDSCode(ErasureCode):
    """Systematic MDS code: the ``k`` data blocks, then ``n - k`` Gaussian random parities.

    Any ``k`` of the ``n`` results determine the data (with probability one for a Gaussian
    parity matrix), which no code can beat; the price is the decode, a dense solve.

    Parameters
    ----------
    n : int
        Number of coded blocks, ``n >= k``.
    k : int
        Number of data blocks, ``k >= 1``.
    seed : int
        Seed of the parity matrix (encoder and decoder must agree on it).

    Notes
    -----
    Decoding with ``s`` systematic results in hand solves for the ``k - s`` unknown data
    blocks from the received parities: one small ``(k - s) x (k - s)`` least-squares
    factorisation, then two BLAS matrix products over the block data,
    O(k^2 * block) flops. A Gaussian parity part is far better conditioned than a real
    Vandermonde one, but real MDS systems still lose digits as ``k`` grows (see the
    ``bench_codes`` benchmark).

    References
    ----------
    K. Lee, M. Lam, R. Pedarsani, D. Papailiopoulos, K. Ramchandran, "Speeding Up
    Distributed Machine Learning Using Codes", IEEE Trans. IT, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> code = MDSCode(6, 4)
    >>> data = np.arange(8.0).reshape(4, 2)
    >>> coded = code.encode(data)
    >>> np.allclose(code.decode({j: coded[j] for j in [5, 4, 1, 2]}), data)
    True
    """

    name = "mds"

    def __init__(self, n: int, k: int, *, seed: int = 0) -> None:
        n = check_int("n", n, minimum=1)
        k = check_int("k", k, minimum=1)
        if k > n:
            raise ValueError(f"k must be <= n, got k={k} > n={n}")
        super().__init__(n, k)
        self.seed = check_int("seed", seed)
        rng = np.random.default_rng(seed)
        self.parity = rng.standard_normal((n - k, k)) / np.sqrt(k)

    def _generator(self) -> np.ndarray:
        return np.vstack([np.eye(self._k), self.parity])

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        flat = blocks.reshape(self._k, -1)
        coded = np.empty((self._n, flat.shape[1]), dtype=blocks.dtype)
        coded[: self._k] = flat
        np.matmul(self.parity.astype(blocks.dtype, copy=False), flat, out=coded[self._k :])
        return coded.reshape(self._n, *blocks.shape[1:])

    def _decodable(self, mask: np.ndarray) -> bool:
        return int(mask.sum()) >= self._k

    def _missing(self, mask: np.ndarray) -> Sequence[int]:
        return np.flatnonzero(~mask[: self._k]).tolist()

    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        k = self._k
        flat = coded.reshape(self._n, -1)
        data = flat[:k].copy()
        unknown = np.flatnonzero(~mask[:k])
        if unknown.size:
            known = np.flatnonzero(mask[:k])
            parities = np.flatnonzero(mask[k:])
            system = self.parity[np.ix_(parities, unknown)]
            solve = np.linalg.pinv(system).astype(data.dtype)  # small: (k - s) x parities
            rhs = flat[k + parities] - self.parity[np.ix_(parities, known)].astype(
                data.dtype
            ) @ data[known]
            data[unknown] = solve @ rhs
        return data.reshape(k, *coded.shape[1:])
