"""Polar codes over the reals: butterfly encoder, SC decoder with inactivation.

Encoding multiplies by ``G_n = F^{(x)log2 n}``, ``F = [[1, 0], [1, 1]]``: ``(n/2) log2 n``
block additions. The information set holds the ``k`` data blocks; the other positions are
frozen to zero.

The systematic form (Arikan 2011, ``systematic=True``) puts the data blocks themselves at the
information positions of the codeword: ``u = zero_frozen(G^{-1} v)`` for ``v`` holding the
data at the information set, then ``x = u G``. Over the reals this is exact, because
``(G^{-1})_{II} = (G_{II})^{-1}`` for the information sets used here (checked when a code is
made), and it is the same code space, so exactly the same erasure patterns decode. A
systematic result is a plain product of a data block: when all of them arrive there is
nothing to decode, and otherwise only the missing ones are re-encoded from the decoded
``u``.

Decoding is successive cancellation (SC) on erasures, which only adds and subtracts blocks.
Plain SC gives up when an information position is erased for it. Here such a position becomes
an *inactive symbol*: SC carries on with it as an unknown (each value is a numeric block plus
small coefficients on the symbols), and every frozen position whose value SC does see yields
an equation ``numeric + coefficients @ symbols = 0``. A small dense least-squares solve for the
symbols (with a conditioning guard) finishes the decode. Because each SC step keeps all the
information of its inputs, this decodes exactly the erasure patterns that a full-rank
(maximum-likelihood) decoder does, at SC's O(n log n) block cost plus ``k x d`` for ``d``
symbols.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from typing import Any

import numpy as np

from .._validation import check_bool, check_int, check_power_of_two, check_probability
from ._base import ErasureCode
from .construction import erasure_probabilities, expected_finish_times, information_set, polarize

__all__ = ["PolarCode"]

#: Largest condition number accepted for the inactivation solve; above it the pattern is
#: treated as not (yet) decodable rather than decoded inaccurately. Measured: near the
#: full-rank threshold the real systems get ill-conditioned as n grows (cond ~ 1e8 at
#: n = 4096); 1e4 keeps float64 errors ~1e-10 and costs a few more results at large n.
CONDITION_LIMIT = 1e4

_AND = np.logical_and
_OR = np.logical_or


def butterfly(buffer: np.ndarray, sign: int = 1) -> np.ndarray:
    """Multiply ``buffer`` (n, ...) by ``G_n`` (sign=+1) or its inverse (sign=-1), in place.

    Each stage is one vectorised add over all its pairs: ``(n/2) log2 n`` block operations.
    """
    n = buffer.shape[0]
    half = n // 2
    while half >= 1:
        pairs = buffer.reshape(n // (2 * half), 2, half, -1)
        if sign > 0:
            pairs[:, 0] += pairs[:, 1]
        else:
            pairs[:, 0] -= pairs[:, 1]
        half //= 2
    return buffer


def sc_leaf_mask(mask: np.ndarray) -> np.ndarray:
    """Which ``u_i`` genie-aided SC sees, given the received outputs ``mask``."""
    return polarize(mask, _AND, _OR)


class PolarCode(ErasureCode):
    """A polar code of length ``n`` carrying ``k`` data blocks.

    Parameters
    ----------
    n : int
        Number of coded blocks, a power of two.
    k : int
        Number of data blocks, ``1 <= k <= n``.
    straggler_prob : float, optional
        Design probability that a worker straggles. The information set is the ``k``
        positions with the smallest erasure probability under Arikan's recursion.
        Default (neither design input given): ``(1 - k/n) / 2`` for the inactivation
        decoder up to n = 2048, else ``1 - k/n``; measured, these need the fewest results
        (the full-rank decoder prefers a design at a lower erasure rate until its
        conditioning guard dominates at large n).
    runtimes : 1-D array of samples or distribution with ``cdf``/``ppf``, optional
        One worker's runtime distribution. The information set is the ``k`` positions whose
        virtual workers (computational polarization, ``F -> F**2`` and
        ``F -> 1 - (1 - F)**2``) have the smallest expected finish time.
    decoder : {"inactivation", "sc"}
        ``"sc"`` is plain successive cancellation (Bartan & Pilanci 2019); the default adds
        inactivation, which decodes every pattern a full-rank decoder can.
    systematic : bool
        Whether coded block ``info_set[i]`` is data block ``i`` itself (Arikan's systematic
        polar code) or the butterfly of the data placed at the information set (the
        default). The two decode from the same sets of results.

    Attributes
    ----------
    info_set : ndarray of int, shape (k,)
        Positions of ``u`` that carry the data blocks, ascending; data block ``i`` sits at
        ``info_set[i]``.
    reliability : ndarray of float, shape (n,)
        Per-position design score, larger is better (``1 - erasure probability``, or minus
        the expected virtual finish time).

    Notes
    -----
    Encode: ``(n/2) log2 n`` block additions, in place on one stacked buffer. Decode:
    O(n log n) block additions/subtractions, plus for ``d`` inactive symbols a ``d``-column
    least-squares solve and a ``k x d`` product. Decodability is value-free: a vectorised
    polarization of the arrival mask (and, only when SC alone fails, the symbolic pass on
    ``d`` columns). With the inactivation decoder it is not monotone near the threshold:
    a result more can make the solve fail the conditioning guard (`CONDITION_LIMIT`), so a
    decodable set can have an undecodable superset (seen at ``n = 1024``). The incremental
    decoder therefore decodes from the first decodable set it saw, and `min_results` scans.

    References
    ----------
    E. Arikan, "Channel polarization", IEEE Trans. IT, 2009.
    E. Arikan, "Systematic polar coding", IEEE Communications Letters, 2011.
    B. Bartan and M. Pilanci, "Straggler Resilient Serverless Computing Based on Polar
    Codes", Allerton 2019. M. Pilanci, "Computational Polarization", IEEE Trans. IT, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> code = PolarCode(8, 4, straggler_prob=0.3)
    >>> code
    <PolarCode n=8 k=4>
    >>> code.info_set
    array([3, 5, 6, 7])
    >>> data = np.arange(12.0).reshape(4, 3)
    >>> coded = code.encode(data)
    >>> code.decodable([1, 2, 4, 7]), code.decodable([4, 5, 6, 7])
    (True, False)
    >>> np.allclose(code.decode({j: coded[j] for j in [7, 1, 4, 2]}), data)
    True
    """

    name = "polar"

    def __init__(
        self,
        n: int,
        k: int,
        *,
        straggler_prob: float | None = None,
        runtimes: Any = None,
        decoder: str = "inactivation",
        systematic: bool = False,
    ) -> None:
        n = check_power_of_two("n", n)
        k = check_int("k", k, minimum=1)
        if k > n:
            raise ValueError(f"k must be <= n, got k={k} > n={n}")
        if straggler_prob is not None and runtimes is not None:
            raise ValueError("give at most one of straggler_prob and runtimes")
        if decoder not in ("inactivation", "sc"):
            raise ValueError(f"decoder must be 'inactivation' or 'sc', got {decoder!r}")
        systematic = check_bool("systematic", systematic)
        super().__init__(n, k)
        if runtimes is not None:
            self.reliability = -expected_finish_times(n, runtimes)
            self.design = "runtimes"
        else:
            if straggler_prob is None:
                slack = 1.0 - k / n
                # measured (bench_codes, bench_simulate): the full-rank decoder does best with
                # a design at half the slack up to n = 2048; beyond, the conditioning guard
                # favours SC's design
                halve = decoder == "inactivation" and n <= 2048
                straggler_prob = min(max(slack / 2 if halve else slack, 0.01), 0.99)
            eps = check_probability("straggler_prob", straggler_prob)
            self.reliability = 1.0 - erasure_probabilities(n, eps)
            self.design = f"straggler_prob={eps:g}"
        self.decoder_kind = decoder
        self.info_set = information_set(n, k, self.reliability)
        self._frozen = np.ones(n, dtype=bool)
        self._frozen[self.info_set] = False
        self._info_before = np.concatenate([[0], np.cumsum(~self._frozen)])
        self.systematic = systematic
        if self.systematic:
            _check_systematic(self)

    def __repr__(self) -> str:
        form = " systematic" if self.systematic else ""
        return f"<PolarCode n={self._n} k={self._k}{form}>"

    def _generator(self) -> np.ndarray:
        if self.systematic:  # the encoder applied to the identity: sparse, small integers
            return self._encode(np.eye(self._k))
        # slow dense reference: rows of the Kronecker power at the information positions
        g = np.array([[1.0]])
        for _ in range(self._n.bit_length() - 1):
            g = np.kron(np.array([[1.0, 0.0], [1.0, 1.0]]), g)
        return g[self.info_set].T.copy()

    def launch_order(self) -> np.ndarray:
        """Information positions first: ``G`` restricted to them is unit lower triangular
        (``G[p, j] = 1`` only for ``j <= p``), so those ``k`` outputs alone are decodable."""
        return np.concatenate([self.info_set, np.flatnonzero(self._frozen)])

    # -- encoding -----------------------------------------------------------------------------

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        coded = np.zeros((self._n, *blocks.shape[1:]), dtype=blocks.dtype)
        coded[self.info_set] = blocks
        if self.systematic:
            self._systematic_butterflies(coded)
            coded[self.info_set] = blocks  # equal in exact arithmetic: keep them bit for bit
            return coded
        return butterfly(coded)

    def _systematic_butterflies(self, coded: np.ndarray) -> np.ndarray:
        """``G(zero_frozen(G^{-1} coded))`` in place: the systematic codeword of the data
        that ``coded`` holds at the information set."""
        butterfly(coded, sign=-1)
        coded[self._frozen] = 0
        return butterfly(coded)

    # -- decodability (value-free) ------------------------------------------------------------

    def _symbols(self, mask: np.ndarray) -> np.ndarray:
        """Information positions that SC cannot see: the inactive symbols."""
        return self.info_set[~sc_leaf_mask(mask)[self.info_set]]

    def _decodable(self, mask: np.ndarray) -> bool:
        if mask.sum() < self._k:
            return False
        symbols = self._symbols(mask)
        if symbols.size == 0:
            return True
        if self.decoder_kind == "sc":  # plain SC gives up, unless the data all arrived
            return self.systematic and bool(mask[self.info_set].all())
        return not self._null_symbols(mask).size

    def _null_symbols(self, mask: np.ndarray) -> np.ndarray:
        """Positions in ``u``'s information set left undetermined by the equations on the
        inactive symbols."""
        directions = self._unknown_directions(mask)
        return np.flatnonzero(np.abs(directions).max(axis=1, initial=0) > 1e-9)

    def _unknown_directions(self, mask: np.ndarray) -> np.ndarray:
        """``(k, r)``: the directions in which ``u``'s information part is undetermined."""
        _, coefficients, equations = self._symbolic_pass(mask, coefficients=True)
        _, _, basis = _solve_guard(equations)
        return coefficients @ basis

    def _missing(self, mask: np.ndarray) -> list[int]:
        symbols = self._symbols(mask)
        if self.decoder_kind == "sc" or symbols.size == 0:
            directions = np.isin(self.info_set, symbols)[:, None].astype(np.float64)
        else:
            directions = self._unknown_directions(mask)
        if not self.systematic:
            return np.flatnonzero(np.abs(directions).max(axis=1, initial=0) > 1e-9).tolist()
        # data block i sums the u of the information positions whose bits contain its own,
        # and is known if its own result arrived
        absent = ~mask[self.info_set]
        touched = np.abs(self._reencode(directions)).max(axis=1, initial=0) > 1e-9
        # plain SC's symbols are the u it does not see, not all it cannot know
        return np.flatnonzero(absent & touched if touched[absent].any() else absent).tolist()

    def _reencode(self, u: np.ndarray) -> np.ndarray:
        """``(u G)`` at the information set for ``u`` (k, width) at the information set:
        the systematic data blocks (or their directions) that ``u`` gives."""
        x = np.zeros((self._n, u.shape[1]), dtype=u.dtype)
        x[self.info_set] = u
        return butterfly(x)[self.info_set]

    # -- decoding -----------------------------------------------------------------------------

    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not self.systematic:
            return self._decode_u(coded, mask)
        arrived = mask[self.info_set]
        data = coded[self.info_set]  # a copy: the decode below works in place on ``coded``
        if arrived.all():  # every data block's own result: nothing to decode
            return data
        # u is larger than the data it sums to (cond(G_II) is 65 at n = 64): decode and
        # re-encode it in double precision at least
        wide = np.result_type(coded.dtype, np.float64)
        u = self._decode_u(coded.astype(wide, copy=False), mask).reshape(self._k, -1)
        flat = data.reshape(self._k, -1)
        # only the data blocks that did not arrive: the butterfly's output at position j
        # sums its inputs at the positions whose bits contain j's, so each missing block is
        # one small product instead of a whole re-encode
        lost = self.info_set[~arrived]
        contains = (self.info_set[None, :] & lost[:, None]) == lost[:, None]
        flat[~arrived] = contains.astype(wide) @ u
        return data

    def _decode_u(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The non-systematic decode: ``u`` at the information set, ``(k, *shape)``."""
        shape = coded.shape[1:]
        work = coded.reshape(self._n, -1)  # decoded in place: the caller hands over the buffer
        symbols = self._symbols(mask)
        dtype = work.dtype
        wide = np.result_type(dtype, np.float64)
        if symbols.size and wide != dtype:
            # symbolic values cancel large partial sums: single precision would lose digits
            work = work.astype(wide)
        coefficients, residuals, equations = self._sc_pass(work, mask, symbols)
        data = work[self.info_set]
        if symbols.size:
            pinv, _, _ = _solve_guard(equations)
            # symbols = -pinv @ residuals; each data block adds its coefficients @ symbols
            mix = (coefficients[self.info_set] @ pinv).astype(data.dtype)
            data -= mix @ residuals
        return data.astype(dtype, copy=False).reshape(self._k, *shape)

    def _sc_pass(
        self, work: np.ndarray | None, mask: np.ndarray, symbols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SC with inactive symbols, in place on ``work`` (n, width) (None: value-free; the
        checks use `_symbolic_pass`, the same pass without values, faster).

        Each value is a numeric row of ``work`` plus a row of ``coefficients`` (n, d) on the
        ``d`` symbols. The subtree for ``u[lo:hi]`` works on rows ``lo:hi`` of both, so at the
        end the information rows of ``work`` hold the numeric part of ``u``.

        Returns
        -------
        coefficients : (n, d) float64
        residuals : (e, width) numeric parts of the ``e`` equations (None if value-free)
        equations : (e, d) their coefficients; ``residuals + equations @ symbols = 0``
        """
        n = self._n
        d = symbols.size
        symbol_column = np.full(n, -1)
        symbol_column[symbols] = np.arange(d)
        symbols_before = np.concatenate([[0], np.cumsum(symbol_column >= 0)])
        info_before = self._info_before
        frozen_all = self._frozen
        coefficients = np.zeros((n, d))
        # (values, re-encoding) pairs: the numeric part first when there is one
        layers = [(coefficients, np.empty_like(coefficients))]
        if work is not None:
            layers.insert(0, (work, _scratch(work.shape, work.dtype)))
        found: list[list[np.ndarray]] = [[] for _ in layers]
        value_free = work is None
        collect = d > 0  # without symbols the equations hold trivially: skip them

        def run(lo, hi, avail, zero_input, need_x):
            """Decode ``u[lo:hi]``; if ``need_x``, write its re-encoding ``u @ G``.

            Returns whether the subtree is all zero (then nothing is written).
            """
            if zero_input and symbols_before[hi] == symbols_before[lo]:
                return True
            if info_before[hi] == info_before[lo]:
                # all frozen: u = 0, and every input we see must be zero
                if collect and not zero_input and avail.any():
                    for (values, _), eq in zip(layers, found):
                        eq.append(values[lo:hi][avail])
                return True
            if avail.all():
                frozen = frozen_all[lo:hi]
                for (values, encoded), eq in zip(layers, found):
                    if need_x:
                        encoded[lo:hi] = values[lo:hi]
                    butterfly(values[lo:hi], sign=-1)
                    if collect and frozen.any():
                        eq.append(values[lo:hi][frozen])
                return False
            if hi - lo == 1:  # an information position SC cannot see: inactive symbol
                for values, encoded in layers:
                    values[lo] = 0
                coefficients[lo, symbol_column[lo]] = 1
                for values, encoded in layers:
                    encoded[lo] = values[lo]
                return False
            mid = (lo + hi) // 2
            aL, aR = avail[: mid - lo], avail[mid - lo :]
            both = aL & aR
            only_left = np.flatnonzero(aL & ~aR)
            # the left child overwrites its rows, so keep the inputs the right child needs
            kept = [values[lo:mid][only_left] for values, _ in layers]
            for values, _ in layers:
                values[lo:mid] -= values[mid:hi]
            zero_left = run(lo, mid, both, zero_input, need_x or only_left.size > 0)
            if only_left.size:
                for (values, encoded), left in zip(layers, kept):
                    if not zero_left:
                        left -= encoded[lo:mid][only_left]
                    values[mid:hi][only_left] = left
            zero_right = run(mid, hi, aL | aR, zero_input and zero_left, need_x)
            if zero_left and zero_right:
                return True
            if not need_x:
                return False
            for _, encoded in layers:
                if zero_right:
                    encoded[mid:hi] = 0
                elif zero_left:
                    encoded[lo:mid] = encoded[mid:hi]
                else:
                    encoded[lo:mid] += encoded[mid:hi]
            return False

        try:
            if run(0, n, mask, value_free, False):
                coefficients[:] = 0
                if work is not None:
                    work[self.info_set] = 0
        finally:
            del run  # the recursive closure refers to itself: break the cycle so the
            # buffers are freed now, not at the next garbage collection

        def stacked(rows, like):
            return np.concatenate(rows) if rows else np.zeros((0, like.shape[1]), like.dtype)

        equations = stacked(found[-1], coefficients)
        residuals = None if value_free else stacked(found[0], work)
        return coefficients, residuals, equations

    def _symbolic_pass(
        self, mask: np.ndarray, *, coefficients: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The value-free `_sc_pass`, bit for bit, at a fraction of its cost.

        The same recursion and floating-point operations, reorganised around what a
        decodability check needs:

        * every node's availability comes from one vectorised polarization of ``mask``
          (`_availability`), so a node costs a few byte lookups instead of reductions;
        * later nodes need only the re-encoding of a fully received subtree, which is its
          input: its butterfly (for its equations and coefficients) is deferred, done in one
          batch per level at the end, and its input is read in place rather than copied
          (so is a symbol, its own re-encoding); an all-frozen subtree's equations are its
          received inputs, gathered at the end too;
        * the inputs a right child takes from the left half are copied before the left
          child runs, instead of being gathered, kept and scattered.

        Equations keep `_sc_pass`'s order: the subtrees that emit them are disjoint and the
        recursion meets them left to right, so they are the emitted rows in ascending order.

        Parameters
        ----------
        mask : ndarray of bool, shape (n,)
            The received outputs.
        coefficients : bool, default False
            Also return ``u``'s coefficients on the symbols at the information set.

        Returns
        -------
        symbols : ndarray of int, shape (d,)
            The inactive symbols (`_symbols`).
        coefficients : (k, d) float64, or None
            ``_sc_pass(None, mask, symbols)[0][info_set]``, if asked for.
        equations : (e, d) float64
            ``_sc_pass(None, mask, symbols)[2]``: the same rows in the same order.
        """
        n = self._n
        levels, only_left = _availability(mask)
        depth = len(levels) - 1
        seen = np.empty(n, dtype=bool)
        seen[_bit_reversal(n)] = levels[depth][0]
        info = self.info_set
        symbols = info[~seen[info]]
        d = symbols.size
        if d == 0:
            return symbols, np.zeros((self._k, 0)) if coefficients else None, np.zeros((0, 0))
        symbol_list = symbols.tolist()
        last = len(symbol_list)
        info_before = _info_counts(self)
        received = [_column_flags(level, np.bitwise_and) for level in levels]
        spill = [_column_flags(level, np.bitwise_or) for level in only_left]
        values = np.zeros((n, d))
        encoded = np.zeros((n, d))
        # emitting subtrees per level: all-frozen ones by column, received ones by segment
        frozen_nodes: list[list[int]] = [[] for _ in levels]
        received_nodes: list[list[int]] = [[] for _ in levels]
        subtract, copyto = np.subtract, np.copyto

        def run(level: int, segment: int, column: int, zero_input: bool, need_x: bool) -> int:
            """`_sc_pass`'s ``run`` for node ``segment`` of ``level``, whose availability is
            ``levels[level][:, column]``. Returns `_ZERO` (the subtree is all zero), or
            where its re-encoding is, if ``need_x``: `_ENCODED` (rows ``lo:hi`` of
            ``encoded``) or `_INPUT` (its rows of ``values``: a received subtree re-encodes
            to its input, a symbol to itself), which saves copying it to ``encoded``."""
            size = n >> level
            lo = segment * size
            hi = lo + size
            if zero_input:
                at = bisect_left(symbol_list, lo)
                if at == last or symbol_list[at] >= hi:
                    return _ZERO
            if info_before[hi] == info_before[lo]:
                if not zero_input:
                    frozen_nodes[level].append(column)
                return _ZERO
            if received[level][column]:
                if coefficients or info_before[hi] - info_before[lo] < size:
                    received_nodes[level].append(segment)
                return _INPUT
            if size == 1:  # an information position SC cannot see: inactive symbol
                values[lo] = 0.0
                values[lo, bisect_left(symbol_list, lo)] = 1.0
                return _INPUT
            mid = lo + size // 2
            spills = spill[level][column]
            if spills:
                moved = only_left[level][:, column, None]
                if not zero_input:
                    copyto(values[mid:hi], values[lo:mid], where=moved)
            if not zero_input:
                values[lo:mid] -= values[mid:hi]
            left = run(level + 1, 2 * segment, column, zero_input, need_x or spills)
            if spills and left:
                x_left = (encoded if left == _ENCODED else values)[lo:mid]
                subtract(values[mid:hi], x_left, out=values[mid:hi], where=moved)
            right = run(
                level + 1, 2 * segment + 1, column + (1 << level), zero_input and not left,
                need_x,
            )
            if not (left or right):
                return _ZERO
            if need_x:  # x = (x_left + x_right, x_right)
                if not right:
                    if left == _INPUT:
                        encoded[lo:mid] = values[lo:mid]
                    encoded[mid:hi] = 0.0
                else:
                    x_right = (encoded if right == _ENCODED else values)[mid:hi]
                    if not left:
                        encoded[lo:mid] = x_right
                    else:
                        np.add((encoded if left == _ENCODED else values)[lo:mid], x_right,
                               out=encoded[lo:mid])
                    if right == _INPUT:
                        encoded[mid:hi] = x_right
            return _ENCODED

        try:
            run(0, 0, 0, True, False)
        finally:
            del run  # the recursive closure refers to itself: break the cycle
        emit = np.zeros(n, dtype=bool)
        for level in range(depth + 1):
            size = n >> level
            rows = emit.reshape(-1, size)
            if frozen_nodes[level]:
                columns = np.array(frozen_nodes[level])
                rows[_bit_reversal(1 << level)[columns]] = levels[level][:, columns].T
            if received_nodes[level]:
                segments = np.array(received_nodes[level])
                rows[segments] = self._frozen.reshape(-1, size)[segments]
                blocks = values.reshape(-1, size, d)[segments]
                half = size // 2
                while half >= 1:  # `butterfly(sign=-1)` on every block at once
                    pairs = blocks.reshape(segments.size, size // (2 * half), 2, half, d)
                    pairs[:, :, 0] -= pairs[:, :, 1]
                    half //= 2
                values.reshape(-1, size, d)[segments] = blocks
        return symbols, values[info] if coefficients else None, values[emit]

    # -- incremental decodability: amortised O(log n) per arrival -----------------------------

    def _start(self, mask: np.ndarray) -> Any:
        return _SCTree(self, mask)

    def _arrive(self, state: Any, index: int) -> None:
        state.arrive(index)

    def _check(self, state: Any) -> bool:
        return state.decodable()


def _check_systematic(code: PolarCode) -> None:
    """Raise ``ValueError`` unless the systematic encoder reproduces the data at the
    information set, i.e. ``(G^{-1})_{II} = (G_{II})^{-1}``.

    One encode of a random vector with small integer entries (exact in float64 up to
    n = 2**20): the identity is linear, so a random vector misses a failure with
    probability zero.
    """
    probe = np.random.default_rng(0).integers(-8, 9, size=(code.k, 1)).astype(np.float64)
    v = np.zeros((code.n, 1))
    v[code.info_set] = probe
    if not np.array_equal(code._systematic_butterflies(v)[code.info_set], probe):
        raise ValueError(
            f"the systematic encoder of {code!r} does not reproduce the data at this "
            "information set; use systematic=False"
        )


def _solve_guard(matrix: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Pseudo-inverse of ``matrix`` (e, d) behind a conditioning guard.

    Singular values below ``s_max / CONDITION_LIMIT`` count as zero. Returns the (d, e)
    pseudo-inverse on the kept directions, the rank, and an orthonormal (d, d - rank) basis of
    the directions the equations leave undetermined.
    """
    d = matrix.shape[1]
    if matrix.shape[0] == 0:
        return np.zeros((d, 0)), 0, np.eye(d)
    # the reduced SVD keeps vt square when e >= d (the common case): the full one would
    # also build an e x e left factor (80 ms at n = 8192)
    left, s, vt = np.linalg.svd(matrix, full_matrices=matrix.shape[0] < d)
    cutoff = s[0] / CONDITION_LIMIT if s[0] > 0 else np.inf
    rank = int(np.sum(s > cutoff))
    pinv = (vt[:rank].T / s[:rank]) @ left[:, :rank].T
    return pinv, rank, vt[rank:].T


#: `PolarCode._symbolic_pass`: where a subtree's re-encoding is (or that it is all zero).
_ZERO, _ENCODED, _INPUT = 0, 1, 2


def _availability(mask: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every SC node's available inputs, from one polarization of ``mask`` (n,).

    ``levels[l]`` is ``(n >> l, 2**l)``: column ``c`` holds the inputs of the node whose
    segment index is ``c`` bit-reversed over ``l`` bits, so that each level is two
    contiguous operations on the one before (the worse child of column ``c`` is column
    ``c``, the better one column ``c + 2**l``). ``only_left[l]`` ``(n >> (l + 1), 2**l)``:
    the inputs a node's right child takes from its left half (present there, not in the
    right half).
    """
    n = mask.size
    depth = n.bit_length() - 1
    buffer = np.empty((depth + 1, n), dtype=bool)
    spilled = np.empty((depth, n // 2), dtype=bool)
    buffer[0] = mask
    levels = [buffer[0].reshape(n, 1)]
    only_left = []
    for level in range(depth):
        half = n >> (level + 1)
        left, right = levels[-1][:half], levels[-1][half:]
        children = buffer[level + 1].reshape(half, 2, 1 << level)
        np.logical_and(left, right, out=children[:, 0])
        np.logical_or(left, right, out=children[:, 1])
        levels.append(children.reshape(half, 2 << level))
        only_left.append(np.greater(left, right, out=spilled[level].reshape(half, 1 << level)))
    return levels, only_left


def _column_flags(level: np.ndarray, combine: np.ufunc) -> bytes:
    """One byte per column of a bool array (m, c): all (``np.bitwise_and``) or any
    (``np.bitwise_or``) of its entries.

    numpy reduces a few long columns along axis 0 slowly (an inner loop of c per row: 50 to
    100 us at n = 16384), so narrow arrays reduce as uint64 words, 8 entries at once, along
    contiguous or strided 1-d runs (a few us).
    """
    c = level.shape[1]
    if c >= 64 or level.size % 8:
        flags = level.all(axis=0) if combine is np.bitwise_and else level.any(axis=0)
        return flags.tobytes()
    if c >= 8:  # each row is c // 8 words: reduce each word column
        words = level.view(np.uint64)
        folded = np.array([combine.reduce(words[:, j]) for j in range(c // 8)], np.uint64)
        return folded.view(np.bool_).tobytes()
    # each word holds 8 // c rows: reduce all words to one, then fold its rows
    word = combine.reduce(level.reshape(-1).view(np.uint64), keepdims=True)
    rows = word.view(np.bool_).reshape(8 // c, c)
    flags = rows.all(axis=0) if combine is np.bitwise_and else rows.any(axis=0)
    return flags.tobytes()


_BIT_REVERSALS: dict[int, np.ndarray] = {}


def _bit_reversal(size: int) -> np.ndarray:
    """``r[c]``: ``c`` with its ``log2(size)`` bits reversed (an involution)."""
    reversal = _BIT_REVERSALS.get(size)
    if reversal is None:
        reversal = np.zeros(1, dtype=np.int64)
        while reversal.size < size:
            reversal = np.concatenate([2 * reversal, 2 * reversal + 1])
        _BIT_REVERSALS[size] = reversal
    return reversal


_INFO_COUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _info_counts(code: PolarCode) -> list[int]:
    """``code._info_before`` as a list (per-node lookups in Python), cached per code and
    not pickled with it."""
    counts = _INFO_COUNTS.get(code)
    if counts is None:
        counts = _INFO_COUNTS[code] = code._info_before.tolist()
    return counts


_SCRATCH = threading.local()
#: Re-encoding buffers up to this size are kept per thread between decodes: first writes
#: to fresh memory (page faults) cost as much as the decode's arithmetic.
SCRATCH_BYTES = 512 * 2**20


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised (n, width) buffer, reused across decodes in this thread."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is not None and buffer.shape == shape and buffer.dtype == dtype:
        return buffer
    buffer = np.empty(shape, dtype)
    _SCRATCH.buffer = buffer if buffer.nbytes <= SCRATCH_BYTES else None
    return buffer


class _SCTree:
    """The genie-aided SC availability tree, kept up to date one arrival at a time.

    Level ``l`` holds ``n`` booleans: ``2**l`` segments of ``n / 2**l`` inputs. An entry only
    ever flips from False to True, and each flip touches its two children, so all arrivals
    together cost O(n log n): amortised O(log n) per arrival.
    """

    def __init__(self, code: PolarCode, mask: np.ndarray) -> None:
        self.code = code
        n = code.n
        self.depth = n.bit_length() - 1
        self.levels = [np.zeros(n, dtype=bool) for _ in range(self.depth + 1)]
        self.received = 0
        self.info_seen = 0
        self.mask = np.zeros(n, dtype=bool)
        for index in np.flatnonzero(mask):
            self.arrive(int(index))

    def arrive(self, index: int) -> None:
        code = self.code
        if self.mask[index]:
            return
        self.mask[index] = True
        self.received += 1
        n = code.n
        stack = [(0, index)]
        self.levels[0][index] = True
        while stack:
            level, flat = stack.pop()
            if level == self.depth:
                if not code._frozen[flat]:
                    self.info_seen += 1
                continue
            size = n >> level
            half = size // 2
            segment, pos = divmod(flat, size)
            p = pos % half
            base = segment * size
            row = self.levels[level]
            child = self.levels[level + 1]
            left = 2 * segment * half + p
            right = left + half
            if not child[right]:
                child[right] = True
                stack.append((level + 1, right))
            if not child[left] and row[base + p] and row[base + p + half]:
                child[left] = True
                stack.append((level + 1, left))

    def decodable(self) -> bool:
        code = self.code
        if self.received < code.k:
            return False
        if self.info_seen == code.k:
            return True
        if code.decoder_kind == "sc" and not code.systematic:
            return False
        return code._decodable(self.mask)
