"""Local product codes: sum parities over the rows and columns of a grid of blocks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_int
from ._base import ErasureCode

__all__ = ["LocalProductCode"]


class LocalProductCode(ErasureCode):
    """A product of single-parity codes over a grid of data blocks, decoded by peeling.

    The ``k`` data blocks fill a grid row by row, ``group_size`` blocks per row (the last row
    padded with known zero blocks, which are never sent). Every row gets a parity (the sum of
    its blocks), every column too, and one corner parity sums all data blocks. Coded tasks are
    the data blocks (``0..k-1``), then the row parities, the column parities and the corner.
    A row or column with one unknown entry is solved by a subtraction (peeling); the code is
    decodable when peeling recovers every data block.

    Parameters
    ----------
    k : int
        Number of data blocks.
    group_size : int, optional
        Blocks per row (the local group); defaults to ``ceil(sqrt(k))``. ``n`` is
        ``k + rows + group_size + 1``.

    References
    ----------
    V. Gupta, D. Carrano, Y. Yang, V. Shankar, T. Courtade, K. Ramchandran, "Serverless
    straggler mitigation using error-correcting codes", ICDCS 2020.

    Examples
    --------
    >>> code = LocalProductCode(4, group_size=2)
    >>> code
    <LocalProductCode n=9 k=4>
    >>> code.decodable([1, 2, 3, 4, 5, 6, 7]), code.decodable([2, 3, 4, 5, 6, 7, 8])
    (True, True)
    """

    name = "local-product"

    def __init__(self, k: int, group_size: int | None = None) -> None:
        k = check_int("k", k, minimum=1)
        if group_size is None:
            group_size = int(np.ceil(np.sqrt(k)))
        group_size = check_int("group_size", group_size, minimum=1)
        rows = -(-k // group_size)
        super().__init__(k + rows + group_size + 1, k)
        self.group_size = group_size
        self.rows = rows
        # grid cell -> coded index; padded cells are -1 (known zero)
        cols = group_size
        cells = np.full((rows + 1, cols + 1), -1)
        cells[:rows, :cols].flat[:k] = np.arange(k)
        cells[:rows, cols] = k + np.arange(rows)
        cells[rows, :cols] = k + rows + np.arange(cols)
        cells[rows, cols] = k + rows + cols
        self._cells = cells
        # every check: the grid line (row or column) whose entries sum to zero with the parity
        # last; as coded indices, -1 for padding
        self._checks = [cells[i, :] for i in range(rows + 1)] + [cells[:, j] for j in range(cols + 1)]

    def _generator(self) -> np.ndarray:
        g = np.zeros((self._n, self._k))
        g[np.arange(self._k), np.arange(self._k)] = 1
        data = self._cells[: self.rows, : self.group_size]
        for i in range(self.rows):
            g[self._cells[i, -1], data[i][data[i] >= 0]] = 1
        for j in range(self.group_size):
            g[self._cells[-1, j], data[:, j][data[:, j] >= 0]] = 1
        g[self._cells[-1, -1], :] = 1
        return g

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        k, cols = self._k, self.group_size
        padded = np.zeros((self.rows * cols, *blocks.shape[1:]), dtype=blocks.dtype)
        padded[:k] = blocks
        grid = padded.reshape(self.rows, cols, *blocks.shape[1:])
        row_sums = grid.sum(axis=1)
        col_sums = grid.sum(axis=0)
        corner = row_sums.sum(axis=0, keepdims=True)
        return np.concatenate([blocks, row_sums, col_sums, corner])

    def _peel(
        self, mask: np.ndarray, coded: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Peeling on the grid: solve any line with one unknown entry, until none is left.

        Returns which coded entries are known and, given ``coded``, the filled-in values.
        """
        known = np.append(mask, True)  # index -1 (padding) is a known zero
        values = None if coded is None else np.concatenate([coded, np.zeros_like(coded[:1])])
        progress = True
        while progress:
            progress = False
            for line in self._checks:
                unknown = line[~known[line]]
                if unknown.size != 1:
                    continue
                target = unknown[0]
                if values is not None:
                    # the entries of a line sum to its parity, the last entry
                    parity, members = line[-1], line[:-1]
                    if target == parity:
                        values[target] = values[members].sum(axis=0)
                    else:
                        others = members[members != target]
                        values[target] = values[parity] - values[others].sum(axis=0)
                known[target] = True
                progress = True
        return known[:-1], (None if values is None else values[:-1])

    def _decodable(self, mask: np.ndarray) -> bool:
        return bool(self._peel(mask)[0][: self._k].all())

    def _missing(self, mask: np.ndarray) -> Sequence[int]:
        return np.flatnonzero(~self._peel(mask)[0][: self._k]).tolist()

    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._peel(mask, coded)[1][: self._k]
