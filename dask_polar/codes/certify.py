"""Certified decoding of coded products: which decoded entries may have lost digits, and
those entries computed directly.

A decoded block is a linear combination of coded results, ``C_i = sum_j W_ij Y_j``, and
each ``Y_j = X_j @ B`` carries the rounding error of its own product. Row scaling brings the
rows that the code sums together to one magnitude, but not their products' entries: entry
``(r, c)`` of ``A_t @ B`` is ruled by where row ``r`` of ``A_t`` meets column ``c`` of
``B`` with large values, so with mixed magnitudes one block's entry can be 1e8 times
another's in the same row and column. Decoding the small one subtracts the large one's
rounding error from it, and its digits are gone while its row as a whole is fine.

numpy's product keeps every entry within the GEMM bound ``p * eps * (|A_i| @ |B|)[r, c]``.
The decode's error in an entry is about ``eps * spread * mass`` with ``mass = sum_j |W_ij|
|Y_j|``, the magnitudes it combined (`spread`: each result's error, ``ROUNDING_SPREAD *
sqrt(p)`` rounding units of its magnitude, plus the decode's own rounding). So an entry is
within ``TOLERANCE`` times its bound if ``spread * mass <= TOLERANCE * p * floor``, for
``floor`` any lower bound of ``(|A_i| @ |B|)[r, c]``, and ``|C_i|`` is one (``|A_i @ B| <=
|A_i| @ |B|``). Where the decode runs, `required` gives the least floor that certifies each
entry and `Suspects` the entries that ``|C_i|`` does not certify: on ordinary data a few
percent, where ``C_i`` is near zero; on mixed magnitudes the ones that lost digits. Where
the data block is, `certify` computes the suspects directly, ``A_i[r] @ B[:, c]``, but
first drops those that `abs_product_floor` certifies: ``|A_i|`` times the smallest ``|B|``
of groups of columns, far above what an entry needs on ordinary data, where nearly nothing
is computed again (with fewer columns than `FLOOR_COLUMNS`, the rows cost less to compute
again than their floor).

The model behind ``spread``: the rounding errors of a sum of ``p`` terms grow like
``sqrt(p)`` times its partial sums (Higham and Mary, *A New Approach to Probabilistic
Rounding Error Analysis*, SIAM J. Sci. Comput., 2019), and those are of the sum's own size
when its terms are of one magnitude (a random walk) or ruled by a few (mixed magnitudes).
An entry whose own terms cancel (``|Y_j|`` far below ``|X_j| @ |B|``) can hide a larger
error than the certificate assumes. A block decoded from many results (a butterfly decode
that solves for inactive symbols) has its ``mass`` bounded by norms, not summed term by
term (`required`).

Pure numpy, no Dask import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import ErasureCode, IncrementalDecoder

__all__ = [
    "CertifiedDecoder", "Decoded", "ROUNDING_SPREAD", "Suspects", "TOLERANCE", "Uncertain",
    "abs_product_floor", "certified_decode", "certify", "decode_weights", "required", "spread",
]

#: A decoded entry's error may be this many times the GEMM bound of its own product.
TOLERANCE = 16.0
#: A product over ``p`` terms is taken to err by this times ``sqrt(p)`` rounding units of
#: its magnitude (see the module docstring).
ROUNDING_SPREAD = 2.0
#: `required` bounds the magnitudes a decoded block combined by their norm (not term by
#: term) where it combines more than this many results.
DENSE_TERMS = 32
#: Columns of ``B`` per group in `abs_product_floor`: the floor costs a pass over ``|A_i|``
#: and its product with ``q / FLOOR_GROUP`` columns.
FLOOR_GROUP = 16
#: `certify` looks at the floor of the suspects' rows where ``B`` has this many columns at
#: least: with fewer, computing the rows again costs less (measured on ordinary data, one
#: BLAS thread, p = 256 and 1024: the floor costs 0.6-1.3x the rows' products at 8-16
#: columns, 0.3-0.6x at 32-256).
FLOOR_COLUMNS = 32
#: `certify` computes a whole row (one matrix product) where at least this fraction of its
#: entries is to be computed, and single entries (dot products) elsewhere: a row's product
#: costs about as much as ``q / 64`` dot products, which gather a row and a column each.
ROW_FRACTION = 1 / 64


def decode_weights(code: ErasureCode, used: Sequence[int]) -> np.ndarray:
    """The coefficients ``W`` (``(k, len(used))``) with which ``code``'s decoder combines the
    results at ``used``: data block ``i`` decodes to ``sum_t W[i, t] * result[used[t]]``.

    Decoding is linear, so ``W`` is the decode of unit vectors: the decoder's own
    combination (its pick among equivalent ones), for one decode of ``len(used)`` columns.
    """
    used = [int(j) for j in used]
    eye = np.eye(len(used))
    return np.asarray(code.decode({j: eye[t] for t, j in enumerate(used)}), dtype=np.float64)


def spread(inner: int, n: int) -> float:
    """Rounding units of the magnitudes it combined that a decoded entry may err by: each
    result's (`ROUNDING_SPREAD` ``* sqrt(inner)``) and the decode's (``log2(n)`` levels
    of sums, one more for a solve)."""
    return ROUNDING_SPREAD * math.sqrt(max(inner, 1)) + math.log2(max(n, 2)) + 1


def required(
    weights: np.ndarray, results: Sequence[np.ndarray], inner: int, n: int
) -> np.ndarray:
    """The least ``(|A_i| @ |B|)[r, c]`` that certifies each decoded entry, in the results'
    units: ``spread * mass / (TOLERANCE * p)``.

    ``mass = sum_j |W_ij| |Y_j|`` is summed term by term for a block decoded from at most
    `DENSE_TERMS` results. Above, it is bounded by ``||W_i|| ||Y||`` (Cauchy-Schwarz, with
    ``||Y||`` the norm of each entry over the results): a butterfly decode that solves for
    inactive symbols mixes hundreds of results into every block, where the terms would
    cost far more than the decode, and their magnitudes are alike enough for the bound to
    be within a small factor.

    Parameters
    ----------
    weights : numpy.ndarray, shape (b, m)
        The coefficients of ``b`` decoded blocks on the ``m`` results (`decode_weights`).
    results : sequence of m numpy.ndarray, each (rows, q)
        The results combined, as the decode used them (scaled alike). Read before the
        decode where it works in place.
    inner : int
        The product's inner dimension ``p``.
    n : int
        The code's length.

    Returns
    -------
    numpy.ndarray of shape (b, rows, q), in the results' real dtype
    """
    weights = np.abs(np.asarray(weights)).astype(np.float64, copy=False)
    first = np.asarray(results[0]) if len(results) else np.zeros((0, 0))
    real = np.abs(np.zeros(0, dtype=np.result_type(first.dtype, np.float32))).dtype
    need = np.zeros((weights.shape[0], *first.shape), dtype=real)
    dense = (weights > 0).sum(axis=1) > DENSE_TERMS
    sparse = weights * ~dense[:, None]
    scratch = np.empty(first.shape, dtype=real)
    norm = np.zeros(first.shape, dtype=real) if dense.any() else None
    # result by result, one |Y_j| at a time: all the memory this needs beyond its output
    for t in np.flatnonzero(weights.any(axis=0)):
        magnitude = np.abs(results[int(t)]).astype(real, copy=False)
        for i in np.flatnonzero(sparse[:, t]):
            np.multiply(magnitude, real.type(weights[i, t]), out=scratch)
            need[i] += scratch
        if norm is not None:
            np.hypot(norm, magnitude, out=norm)  # no squares to overflow or underflow
    for i in np.flatnonzero(dense):
        np.multiply(norm, real.type(np.linalg.norm(weights[i])), out=need[i])
    need *= real.type(spread(inner, n) / (TOLERANCE * max(inner, 1)))
    return need


@dataclass(frozen=True)
class Suspects:
    """The entries of one decoded block that its own magnitude does not certify.

    Attributes
    ----------
    rows, cols : numpy.ndarray of int
    ratio : numpy.ndarray of float64
        The least ``(|A_i| @ |B|)[r, c]`` that certifies each entry, in units of its
        decoded magnitude (``inf`` for a decoded zero).
    """

    rows: np.ndarray
    cols: np.ndarray
    ratio: np.ndarray

    @classmethod
    def none(cls) -> Suspects:
        """No suspect entries."""
        empty = np.zeros(0, dtype=np.intp)
        return cls(empty, empty, np.zeros(0))

    @classmethod
    def of(cls, need: np.ndarray, decoded: np.ndarray) -> Suspects:
        """The entries of ``decoded`` (``(rows, q)``) below their ``need`` (`required`)."""
        size = np.abs(decoded)
        rows, cols = np.nonzero(need > size)
        if not rows.size:
            return cls.none()
        with np.errstate(divide="ignore"):
            ratio = need[rows, cols].astype(np.float64) / size[rows, cols]
        return cls(rows, cols, ratio)

    def columns(self, start: int, stop: int) -> Suspects:
        """The entries in columns ``start:stop``, counted from ``start``."""
        keep = (self.cols >= start) & (self.cols < stop)
        if keep.all() and start == 0:
            return self
        return Suspects(self.rows[keep], self.cols[keep] - start, self.ratio[keep])

    def shifted(self, offset: int) -> Suspects:
        """The same entries, ``offset`` rows further down (a row panel's in its block)."""
        return Suspects(self.rows + offset, self.cols, self.ratio)

    @classmethod
    def joined(cls, parts: Sequence[Suspects]) -> Suspects:
        """The entries of all ``parts`` (of one block)."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.none()
        return cls(*(np.concatenate(arrays) for arrays in zip(
            *((part.rows, part.cols, part.ratio) for part in parts)
        )))

    def __len__(self) -> int:
        return int(self.rows.size)


def abs_product_floor(a: np.ndarray, b: np.ndarray, group: int = FLOOR_GROUP) -> np.ndarray:
    """A lower bound of ``|a| @ |b|``, entry by entry, for a pass over ``|a|`` and its
    product with ``q / group`` columns.

    ``b``'s columns are cut into groups of ``group``, and ``sum_k |a[r, k]| |b[k, c]|`` is
    at least ``sum_k |a[r, k]| low[k, g]`` for ``low[k, g]`` the smallest ``|b[k, c']|`` of
    the group ``g`` of column ``c``. Exact for groups of one column; on ordinary data
    within a factor of about ``0.8 / E[min of s |N(0, 1)|]`` for groups of ``s`` columns (5
    for 8, 10 for 16), still far above what certifies an entry there.
    """
    return _grouped_floor(a, b, group)[:, np.arange(b.shape[1]) // group]


def _grouped_floor(a: np.ndarray, b: np.ndarray, group: int) -> np.ndarray:
    """`abs_product_floor` for each group of columns, ``(rows, ceil(q / group))``."""
    magnitudes = np.abs(b)
    low = magnitudes[:, ::group].astype(np.float64)  # each group's first column, then
    for j in range(1, min(group, b.shape[1])):  # the minimum with its j-th (a strided pass
        part = magnitudes[:, j::group]  # each: a reduction over the groups is 10x slower)
        np.minimum(low[:, : part.shape[1]], part, out=low[:, : part.shape[1]])
    return np.abs(a) @ low


def certify(value: np.ndarray, suspects: Suspects, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A decoded block's product ``value`` (``(rows, q)``, at its own scale) with its
    ``suspects`` computed directly from the data block ``a`` and ``b``: ``a[r] @ b[:, c]``.

    Where ``b`` has `FLOOR_COLUMNS` columns or more, the suspects that `abs_product_floor`
    certifies are left as they are (that floor costs less than the rows' products there).
    Returns ``value`` itself if nothing is computed, else a new array (``value`` may be a
    view of a decode other tasks read too). Rows with many entries to compute are one
    matrix product, the others one dot product per entry. Rows beyond ``a``'s are left
    alone.
    """
    keep = suspects.rows < min(a.shape[0], value.shape[0])
    if not keep.any():
        return value
    r, c, ratio = suspects.rows[keep], suspects.cols[keep], suspects.ratio[keep]
    if b.shape[1] >= FLOOR_COLUMNS:
        with np.errstate(invalid="ignore"):  # inf * 0: a decoded zero
            need = ratio * np.abs(value[r, c])
        need[np.isnan(need)] = np.inf
        lines, where = np.unique(r, return_inverse=True)
        redo = need > _grouped_floor(a[lines], b, FLOOR_GROUP)[where, c // FLOOR_GROUP]
        if not redo.any():
            return value
        r, c = r[redo], c[redo]
    value = value.copy()
    counts = np.bincount(r, minlength=value.shape[0])
    dense = np.flatnonzero(counts >= max(1.0, ROW_FRACTION * value.shape[1]))
    if dense.size:
        value[dense] = a[dense] @ b
    single = ~np.isin(r, dense)
    if single.any():
        r, c = r[single], c[single]
        value[r, c] = np.einsum("ij,ji->i", a[r], b[:, c])
    return value


@dataclass
class Uncertain:
    """A decoded block's product with its `Suspects`, to be certified where its data block
    is (`settle`)."""

    value: np.ndarray
    suspects: Suspects

    def settle(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The product, its uncertified entries computed from ``a`` and ``b`` (`certify`)."""
        return certify(self.value, self.suspects, a, b)


@dataclass
class Decoded:
    """The ``k`` decoded blocks of a certified decode and the `Suspects` of each.

    Attributes
    ----------
    values : numpy.ndarray, shape (k, rows, q)
    suspects : list of k Suspects
    """

    values: np.ndarray
    suspects: list[Suspects]


class CertifiedDecoder(IncrementalDecoder):
    """An `IncrementalDecoder` whose ``result()`` is `Decoded`: the values and, for each
    block, the entries the decode's own magnitudes do not certify (`required`).

    Parameters
    ----------
    code : ErasureCode
    inner : int
        The product's inner dimension.
    """

    def __init__(self, code: ErasureCode, inner: int) -> None:
        super().__init__(code)
        self.inner = int(inner)

    def result(self) -> Decoded:  # type: ignore[override]
        if not self.decodable:
            raise self._tracker.not_decodable()
        used = np.flatnonzero(self._tracker._used)
        buffer = self._buffer
        assert buffer is not None
        # before the decode, which works in place on the results
        need = required(
            decode_weights(self.code, used), [buffer[j] for j in used], self.inner, self.code.n
        )
        values = super().result()
        return Decoded(values, [Suspects.of(nd, v) for nd, v in zip(need, values)])


def certified_decode(code: ErasureCode, results: dict[int, Any], inner: int) -> Decoded:
    """``code.decode(results)`` as `Decoded` (a decodable set of ``(rows, q)`` results)."""
    decoder = CertifiedDecoder(code, inner)
    decoder.update(results)
    return decoder.result()
