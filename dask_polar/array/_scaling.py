"""Keep coded products exact in floating point: scale rows by powers of two, route
non-finite data around the code.

The butterfly adds rows of different blocks of ``A`` together, so one row block 1e8 times
larger than the others would swamp their digits (relative errors ~1e-3 measured), and so
would large rows inside a block swamp the small rows of the other blocks; values near the
dtype's maximum would overflow in the sums, and a NaN or inf would spread through the
decode's subtractions (inf - inf) into rows that numpy keeps finite. Before encoding, the
largest magnitude of each row of each data block is measured where the block lives
(`block_stats`), and one small task turns all of them into `Scales`:

* rows far below the largest (more than ``2**SPREAD_BITS``) are scaled up by a power of
  two to its magnitude, and everything is scaled down if the coded sums and products could
  overflow; powers of two are exact, so ``C_i = decoded_i / factors_i`` (row by row) loses
  nothing. In the usual case (rows of similar magnitude) every factor is 1 and nothing is
  multiplied;
* a block with a non-finite value is left out: it is coded as a zero block and its product
  is computed directly (numpy's NaN/inf pattern), as is every block when ``B`` has a
  non-finite value.

Float16 data is encoded in float32 (`work_dtype`): its range is too small for the sums.

Row factors equalize rows, not entries: with mixed magnitudes inside rows, an entry of one
block can still be far below the same entry of a block summed with it; the decode finds
those entries and they are computed directly (`dask_polar.codes.certify`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Scales", "block_stats", "job_scales", "peak_exponent", "row_normalizers", "row_target",
    "work_dtype",
]

#: Rows within ``2**SPREAD_BITS`` of the largest are left unscaled; the coded error of a
#: row relative to its own size then grows by at most this factor against uncoded.
SPREAD_BITS = 4
#: ``B`` is rescaled when its largest magnitude is outside ``2**-B_BITS .. 2**B_BITS``.
B_BITS = 8


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a product of ``dtype`` is encoded, computed and decoded in."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


#: The exponent `block_stats` gives an all-zero row (below any real one; never scaled).
ZERO_ROW = -(1 << 30)


def block_stats(block: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """``(exponents, finite)``: ``max|row r| = m * 2**exponents[r]`` with ``0.5 <= m < 1``.

    An all-zero row has exponent `ZERO_ROW`. ``finite`` is False (and ``exponents`` None)
    if the block holds a NaN or an infinity.
    """
    if block.size == 0:
        return np.full(block.shape[0], ZERO_ROW, dtype=np.int64), True
    if np.iscomplexobj(block):
        peak = np.max(np.abs(block), axis=1)
        if not np.isfinite(peak).all():
            return None, False
    else:  # two reductions and no temporary |block|; a NaN or inf shows in either
        # (per row, so they are small: in float64, also for bool and integer blocks)
        high = np.max(block, axis=1).astype(np.float64)
        low = np.min(block, axis=1).astype(np.float64)
        if not (np.isfinite(high).all() and np.isfinite(low).all()):
            return None, False
        peak = np.maximum(high, -low)
    exponents = np.frexp(peak.astype(np.float64))[1].astype(np.int64)
    exponents[peak == 0] = ZERO_ROW
    return exponents, True


def peak_exponent(exponents: np.ndarray | None) -> int | None:
    """The largest of a block's row exponents (`block_stats`); None if all rows are zero."""
    top = ZERO_ROW if exponents is None or exponents.size == 0 else int(exponents.max())
    return None if top == ZERO_ROW else top


@dataclass(frozen=True)
class Scales:
    """The factors of one coded product: row ``r`` of ``A``'s data block ``i`` is multiplied
    by ``rows[i][r]`` (``rows[i]`` None: every row by 1) and ``B`` by ``b`` before encoding;
    ``finite[i]`` False marks a block computed directly.

    Attributes
    ----------
    rows : tuple of (numpy.ndarray of float64, shape (block_rows,)) or None, one per block
    finite : tuple of bool, one per block
    b : float
    b_finite : bool
    """

    rows: tuple[np.ndarray | None, ...]
    finite: tuple[bool, ...]
    b: float = 1.0
    b_finite: bool = True
    #: The work dtype (None: ``B``'s own): ``B`` is scaled in it, never in a narrower one.
    work: np.dtype | None = None
    #: The product's inner dimension, which its decode's certificate needs
    #: (`dask_polar.codes.certify`); None: not certified.
    inner: int | None = None

    def row_factors(self, source: int) -> np.ndarray | None:
        """The factors of the rows of a term of an encode task: data block ``source``'s, or
        None (all 1) for ``-1``, an already scaled intermediate."""
        return None if source < 0 else self.rows[source]

    def left_out(self, source: int) -> bool:
        """Whether a term is a data block computed directly (a zero block in the code)."""
        return source >= 0 and not self.finite[source]

    def coded(self, index: int) -> bool:
        """Whether data block ``index``'s product comes from decoding (else: directly)."""
        return self.b_finite and self.finite[index]

    def rhs(self, b: np.ndarray) -> np.ndarray:
        """``B`` as the work tasks use it: scaled, and its non-finite values zeroed (then
        every block is computed directly and the coded results are not used)."""
        if not self.b_finite:
            b = np.where(np.isfinite(b), b, 0)
        if self.b == 1.0:
            return b
        # in the work dtype: a float16 B scaled in float16 loses its small entries' digits
        wide = b.dtype if self.work is None else np.result_type(b.dtype, self.work)
        return b.astype(wide, copy=False) * np.asarray(self.b, dtype=wide)

    def unscale(self, index: int, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Data block ``index``'s decoded product (its first ``len(value)`` rows) back at
        its own scale, in ``dtype``."""
        rows = self.rows[index]
        if rows is not None:  # powers of two: exact
            value = value / (rows[: len(value), None] * self.b)
        elif self.b != 1.0:
            value = value / self.b
        return value.astype(dtype, copy=False)


def job_scales(
    dtype: np.dtype,
    n: int,
    inner: int,
    a_stats: list[tuple[np.ndarray | None, bool]],
    b_stats: tuple[np.ndarray | None, bool] = (None, True),
) -> Scales:
    """The factors for data blocks with ``a_stats`` and ``B`` with ``b_stats``.

    Parameters
    ----------
    dtype : numpy.dtype
        The work dtype.
    n : int
        Number of coded blocks (a coded block sums at most ``n`` data blocks).
    inner : int
        The product's inner dimension (a product entry sums ``inner`` terms).
    a_stats, b_stats : (exponents, finite) pairs from `block_stats`
    """
    info = np.finfo(np.dtype(dtype))
    b_rows, b_finite = b_stats
    b_exp = peak_exponent(b_rows)
    b_shift = 0 if b_exp is None or abs(b_exp) <= B_BITS else -b_exp
    # largest exponent of a scaled row such that the coded sums (n terms) and the coded
    # products (inner terms times |B| after its scaling) stay below the dtype's maximum
    limit = info.maxexp - 2 - math.ceil(math.log2(max(n, 1))) - math.ceil(math.log2(max(inner, 1)))
    limit -= max(0, (b_exp or 0) + b_shift)
    peaks = [peak_exponent(exponents) for exponents, finite in a_stats if finite]
    top = min(max((e for e in peaks if e is not None), default=0), limit)
    rows: list[np.ndarray | None] = []
    for exponents, finite in a_stats:
        if not finite or exponents is None:
            rows.append(None)
            continue
        target = np.where(exponents < top - SPREAD_BITS, top, np.minimum(exponents, limit))
        # clamp so the factor itself is a normal float; all-zero rows stay as they are
        shift = np.clip(target - exponents, info.minexp, info.maxexp - 1)
        shift[exponents == ZERO_ROW] = 0
        rows.append(np.ldexp(1.0, shift) if shift.any() else None)
    finite = tuple(bool(ok) for _, ok in a_stats)
    return Scales(
        tuple(rows), finite, math.ldexp(1.0, b_shift), bool(b_finite), np.dtype(dtype), inner
    )


def row_target(dtype: np.dtype, n: int, inner: int, b_exponents: np.ndarray | None) -> int:
    """The exponent each row of a systematic code's data blocks is scaled to in its parity.

    Rows of every block are brought to one magnitude, ``2**target`` with ``target = -e``
    for ``B``'s peak ``2**e``, so the products are of order one and no block's rows swamp
    another's digits in a parity sum. Each block's factors then depend on the block
    (and ``B``) alone: the tasks that read a block compute them, with no job-wide pass.
    Clamped so that sums of ``n`` rows and products over ``inner`` terms stay finite.
    """
    info = np.finfo(np.dtype(dtype))
    b_exp = peak_exponent(b_exponents) or 0
    sums = math.ceil(math.log2(max(n, 1)))
    high = min(info.maxexp - 2 - sums, info.maxexp - 2 - sums - math.ceil(math.log2(max(inner, 1))) - b_exp)
    return int(np.clip(-b_exp, info.minexp + 1, high))


def row_normalizers(block: np.ndarray, target: int) -> tuple[np.ndarray | None, bool]:
    """``(factors, finite)``: powers of two that bring each row of ``block`` to
    ``2**target`` (`row_target`; None: every factor is 1), and whether ``block`` is finite
    (if not, ``factors`` is None and the block is left out of the parity)."""
    exponents, finite = block_stats(block)
    if not finite or exponents is None:
        return None, finite
    info = np.finfo(block.dtype) if block.dtype.kind in "fc" else np.finfo(np.float64)
    shift = np.clip(target - exponents, info.minexp, info.maxexp - 1)
    shift[exponents == ZERO_ROW] = 0
    return (np.ldexp(1.0, shift) if shift.any() else None), True
