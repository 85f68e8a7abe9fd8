"""Keep coded products exact in floating point: scale blocks by powers of two, route
non-finite data around the code.

The butterfly adds blocks of ``A`` together, so one block 1e8 times larger than the others
would swamp their digits (relative errors ~1e-3 measured), values near the dtype's maximum
would overflow in the sums, and a NaN or inf would spread through the decode's
subtractions (inf - inf) into rows that numpy keeps finite. Before encoding, each data
block's largest magnitude is measured where the block lives (`block_stats`), and one small
task turns all of them into `Scales`:

* blocks far below the largest (more than ``2**SPREAD_BITS``) are scaled up by a power of
  two to its magnitude, and everything is scaled down if the coded sums and products could
  overflow; powers of two are exact, so ``C_i = decoded_i / factor_i`` loses nothing. In
  the usual case (blocks of similar magnitude) every factor is 1 and nothing is multiplied;
* a block with a non-finite value gets factor 0: it is coded as a zero block and its
  product is computed directly (numpy's NaN/inf pattern), as is every block when ``B`` has
  a non-finite value.

Float16 data is encoded in float32 (`work_dtype`): its range is too small for the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Scales", "block_stats", "job_scales", "work_dtype"]

#: Blocks within ``2**SPREAD_BITS`` of the largest are left unscaled; the coded error of a
#: block relative to its own size then grows by at most this factor against uncoded.
SPREAD_BITS = 4
#: ``B`` is rescaled when its largest magnitude is outside ``2**-B_BITS .. 2**B_BITS``.
B_BITS = 8


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a product of ``dtype`` is encoded, computed and decoded in."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def block_stats(block: np.ndarray) -> tuple[int | None, bool]:
    """``(exponent, finite)``: ``max|block| = m * 2**exponent`` with ``0.5 <= m < 1``.

    The exponent is None for an all-zero (or empty) block; ``finite`` is False if the block
    holds a NaN or an infinity.
    """
    if block.size == 0:
        return None, True
    if np.iscomplexobj(block):
        high, low = float(np.max(np.abs(block))), 0.0
    else:  # two reductions and no temporary |block|; a NaN or inf shows in either
        high, low = float(np.max(block)), float(np.min(block))
    if not (math.isfinite(high) and math.isfinite(low)):
        return None, False
    peak = max(high, -low)
    return (None if peak == 0.0 else math.frexp(peak)[1]), True


@dataclass(frozen=True)
class Scales:
    """The factors of one coded product: ``A``'s data block ``i`` is multiplied by ``a[i]``
    and ``B`` by ``b`` before encoding; ``a[i] == 0`` marks a block computed directly.

    Attributes
    ----------
    a : numpy.ndarray of float64, shape (k,)
    b : float
    b_finite : bool
    """

    a: np.ndarray
    b: float = 1.0
    b_finite: bool = True

    def factor(self, source: int) -> float:
        """The factor of a term of an encode task: data block ``source``, or 1 for ``-1``
        (an already scaled intermediate)."""
        return 1.0 if source < 0 else float(self.a[source])

    def coded(self, index: int) -> bool:
        """Whether data block ``index``'s product comes from decoding (else: directly)."""
        return self.b_finite and self.a[index] != 0.0

    def rhs(self, b: np.ndarray) -> np.ndarray:
        """``B`` as the work tasks use it: scaled, and its non-finite values zeroed (then
        every block is computed directly and the coded results are not used)."""
        if not self.b_finite:
            b = np.where(np.isfinite(b), b, 0)
        return b if self.b == 1.0 else b * self.b

    def unscale(self, index: int, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Data block ``index``'s decoded product back at its own scale, in ``dtype``."""
        factor = float(self.a[index]) * self.b
        if factor != 1.0:
            value = value / factor  # a power of two: exact
        return value.astype(dtype, copy=False)


def job_scales(
    dtype: np.dtype,
    n: int,
    inner: int,
    a_stats: list[tuple[int | None, bool]],
    b_stats: tuple[int | None, bool] = (None, True),
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
    a_stats, b_stats : (exponent, finite) pairs from `block_stats`
    """
    info = np.finfo(np.dtype(dtype))
    b_exp, b_finite = b_stats
    b_shift = 0 if b_exp is None or abs(b_exp) <= B_BITS else -b_exp
    # largest exponent of a scaled block such that the coded sums (n terms) and the coded
    # products (inner terms times |B| after its scaling) stay below the dtype's maximum
    limit = info.maxexp - 2 - math.ceil(math.log2(max(n, 1))) - math.ceil(math.log2(max(inner, 1)))
    limit -= max(0, (b_exp or 0) + b_shift)
    exps = [e for e, finite in a_stats if finite and e is not None]
    top = min(max(exps, default=0), limit)
    factors = np.ones(len(a_stats))
    for i, (e, finite) in enumerate(a_stats):
        if not finite:
            factors[i] = 0.0
        elif e is not None:
            target = top if e < top - SPREAD_BITS else min(e, limit)
            # clamp so the factor itself is a normal float
            factors[i] = math.ldexp(1.0, max(min(target - e, info.maxexp - 1), info.minexp))
    return Scales(factors, math.ldexp(1.0, b_shift), bool(b_finite))
