"""Value-free decodability of many arrival patterns at once, for the simulator.

Each function answers, for a batch of trials, the question the real decoders answer one
pattern at a time (``code.decodable(mask)``, ``code.min_results(order)``), with the same
answers (the tests check them against the codes on random masks and orders):

* polar, SC: genie-aided SC sees position ``i`` once ``polarize(ranks, max, min)[i]``
  results are in (the arrival-rank version of computational polarization), so the results
  needed are ``max`` of that over the information set, for all trials in one
  O(n log n)-per-trial pass;
* polar, inactivation: the code's own symbolic SC pass and conditioning guard, per trial,
  searched downward from the SC answer (SC-decodable implies decodable), the prefixes with
  one inactive symbol all answered by one pass;
* MDS: ``k``; replication: the last block's first copy, closed form;
* local product: peeling on the grid, vectorised over trials, in a per-trial binary search
  (decodability is monotone).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codes import ErasureCode, LocalProductCode, MDSCode, PolarCode, ReplicationCode
from ..codes.construction import polarize
from ..codes.polar import _solve_guard, butterfly, sc_leaf_mask

__all__ = ["decodable_masks", "results_needed"]


# -- input checks -------------------------------------------------------------------------------


def _check_code(code: object) -> ErasureCode:
    if not isinstance(code, ErasureCode):
        raise TypeError(
            f"code must be a dask_polar.codes code (e.g. PolarCode), got {type(code).__name__}"
        )
    return code


def _check_masks(masks: Any, n: int) -> np.ndarray:
    array = np.asarray(masks)
    if array.dtype != bool:
        raise TypeError(f"masks must be a boolean array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != n:
        raise ValueError(f"masks must have shape (trials, {n}), got {array.shape}")
    return array


def _check_orders(orders: Any, n: int) -> np.ndarray:
    array = np.asarray(orders)
    if array.dtype.kind not in "iu":
        raise TypeError(f"orders must be an integer array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != n:
        raise ValueError(f"orders must have shape (trials, {n}), got {array.shape}")
    if not (np.sort(array, axis=1) == np.arange(n)).all():
        raise ValueError(f"every row of orders must be a permutation of range({n})")
    return array.astype(np.int64, copy=False)


def ranks_of(orders: np.ndarray) -> np.ndarray:
    """Inverse permutations: ``ranks[t, orders[t, i]] = i`` (arrival position of each task)."""
    ranks = np.empty_like(orders)
    np.put_along_axis(ranks, orders, np.arange(orders.shape[1])[np.newaxis, :], axis=1)
    return ranks


# -- polar ---------------------------------------------------------------------------------------


def sc_needed(code: PolarCode, ranks: np.ndarray) -> np.ndarray:
    """Results SC needs in each trial, from the arrival ranks ``(trials, n)``.

    Position ``i`` is seen by genie-aided SC once the prefix holds more than
    ``polarize(ranks, max, min)[i]`` results: the worse child needs both halves (max), the
    better one either (min). Thresholding commutes with max/min, so this is `sc_leaf_mask`
    on every prefix at once.
    """
    seen_at = polarize(np.ascontiguousarray(ranks.T), np.maximum, np.minimum)
    return seen_at[code.info_set].max(axis=0) + 1


def inactivation_check(code: PolarCode, mask: np.ndarray) -> tuple[bool, int]:
    """``code.decodable(mask)`` and the number of inactive symbols, for one mask.

    The same symbolic SC pass (`PolarCode._symbolic_pass`, the value-free ``_sc_pass``) and
    conditioning guard as `PolarCode`, with two shortcuts that leave the answer unchanged:

    * the guard needs only the singular values and right singular vectors of the ``e x d``
      equation matrix, which its ``d x d`` QR factor ``R`` shares, so the full SVD's
      ``e x e`` left factor (most of the time at ``n`` in the thousands) is never formed;
    * the code checks that no information position depends on an undetermined direction
      (a unit column ``b`` of the null-space basis), but each symbol's own position has
      coefficient 1 on it and 0 on the others, so some entry is ``|b_j| >= d**-0.5``: the
      answer is whether that basis is empty.
    """
    if int(mask.sum()) < code.k:
        return False, code.k
    if code.decoder_kind == "sc":
        symbols = code._symbols(mask)
        return symbols.size == 0, int(symbols.size)
    symbols, _, equations = code._symbolic_pass(mask)
    return _guard_passes(equations, symbols.size), int(symbols.size)


def _guard_passes(equations: np.ndarray, d: int) -> bool:
    """Whether the ``e x d`` equations determine all ``d`` symbols (`_solve_guard`)."""
    if d == 0:
        return True
    if equations.shape[0] > d:
        equations = np.linalg.qr(equations, mode="r")
    _, _, basis = _solve_guard(equations)
    return basis.shape[1] == 0


def _one_symbol_answers(code: PolarCode, order: np.ndarray) -> tuple[int, int, int] | None:
    """The checks of every prefix with one inactive symbol, answered by one pass.

    Returns ``(low, high, threshold)``: prefixes of ``low`` to ``high`` arrivals have one
    symbol; a prefix is not decodable if it has at most ``threshold`` arrivals, decodable
    if from ``low`` to ``high``, and otherwise needs its own check. None where no prefix of
    at least ``k`` has exactly one symbol.

    Exact arithmetic (the pass's values are small integers, exact in float64): a prefix is
    decodable iff no nonzero ``u`` (zero at the frozen positions) has ``u G`` vanishing on
    it. Take the shortest prefix with one symbol (``low``; longer ones keep that symbol
    alone). Its pass writes each ``u`` it leaves open as ``s w``, ``w`` the coefficients;
    with one symbol the guard keeps its one singular value, so the check is this exact
    answer. If it is decodable, so is every longer prefix. If not, ``w G`` vanishes on it,
    and a longer one-symbol prefix is decodable iff it holds the first arrival where
    ``w G`` does not vanish; a prefix without that arrival keeps ``w`` undetermined,
    whatever its symbols, so it is not decodable, with or without the guard.
    """
    n, k = code.n, code.k
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    # a prefix of c results has the symbols seen only with more: seen_at >= c
    seen_at = polarize(ranks, np.maximum, np.minimum)[code.info_set]
    high = int(seen_at.max())
    low = k if k < 2 else max(int(np.partition(seen_at, k - 2)[k - 2]) + 1, k)
    if low > high:
        return None
    mask = np.zeros(n, dtype=bool)
    mask[order[:low]] = True
    symbols, coefficients, equations = code._symbolic_pass(mask, coefficients=True)
    if symbols.size != 1:
        return None
    if _guard_passes(equations, 1):
        return low, high, -1
    u = np.zeros((n, 1))
    u[code.info_set] = coefficients
    encoded = butterfly(u)[order, 0]
    if np.abs(encoded).max() >= 2.0**52:  # beyond exact integers: leave it to the checks
        return None
    first = int(np.argmax(encoded != 0))
    if first < low or encoded[first] == 0:  # not the kernel vector the argument needs
        return None
    return low, high, first


def inactivation_needed(code: PolarCode, order: np.ndarray, upper: int) -> tuple[int, int]:
    """Results the inactivation decoder needs along ``order``, and its symbols there.

    ``upper`` is a count known to be decodable (the SC answer). The search gallops down
    from it (checks just below the answer are the cheap ones: few symbols) and then bisects.
    Its probes with one inactive symbol, and those below the arrival that the symbol's
    undetermined direction first shows in, take their answers from `_one_symbol_answers`
    (one pass instead of about half of the checks); the others run `inactivation_check`.

    Unlike ``code.min_results`` (a linear scan), this assumes decodability is monotone.
    Exactly it is, but the conditioning guard (`dask_polar.codes.polar.CONDITION_LIMIT`) makes it non-monotone near
    the threshold at large ``n``: the boundary found can lie above the first decodable prefix
    (by up to ~4 % of ``k`` at ``n = 2048`` in ``bench_simulate``), where a job's incremental
    decoder, which checks every arrival, would stop.
    """
    n, k = code.n, code.k
    mask = np.zeros(n, dtype=bool)
    symbols_at = {upper: 0}
    # the one-symbol prefixes, mostly the gallop's first probes, are answered by one pass
    shortcut = _one_symbol_answers(code, order) if code.decoder_kind != "sc" else None

    def decodable(count: int) -> bool:
        if shortcut is not None:
            low, high, threshold = shortcut
            if count <= threshold:
                return False
            if low <= count <= high:
                symbols_at[count] = 1
                return True
        mask[:] = False
        mask[order[:count]] = True
        ok, d = inactivation_check(code, mask)
        if ok:
            symbols_at[count] = d
        return ok

    lo, hi, step = k, upper, 1
    while hi - step >= lo:
        probe = hi - step
        if decodable(probe):
            hi, step = probe, 2 * step
        else:
            lo = probe + 1
            break
    while lo < hi:
        mid = (lo + hi) // 2
        if decodable(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi, symbols_at[hi]


# -- local product -------------------------------------------------------------------------------


def peel_known(code: LocalProductCode, masks: np.ndarray) -> np.ndarray:
    """Which data blocks peeling recovers, for a batch of masks ``(trials, n)`` -> ``(trials, k)``.

    Every line (row or column of the grid, its parity included) with exactly one unknown
    entry is solved; all such lines at once, until none is left.
    """
    cells = code._cells
    known = np.where(cells >= 0, masks[:, cells], True)  # (trials, rows + 1, cols + 1)
    while True:
        unknown = ~known
        rows = unknown.sum(axis=2) == 1
        cols = unknown.sum(axis=1) == 1
        if not (rows.any() or cols.any()):
            break
        known |= rows[:, :, np.newaxis] | cols[:, np.newaxis, :]
    data = cells[: code.rows, : code.group_size]
    place = data >= 0
    out = np.empty((masks.shape[0], code.k), dtype=bool)
    out[:, data[place]] = known[:, : code.rows, : code.group_size][:, place]
    return out


def local_product_needed(code: LocalProductCode, ranks: np.ndarray) -> np.ndarray:
    """Results peeling needs in each trial: a binary search per trial, vectorised."""
    trials = ranks.shape[0]
    lo = np.full(trials, code.k)
    hi = np.full(trials, code.n)  # everything received: every data block is in hand
    while (lo < hi).any():
        active = lo < hi
        mid = (lo + hi) // 2
        ok = peel_known(code, ranks < mid[:, np.newaxis]).all(axis=1)
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
    return lo


# -- public ---------------------------------------------------------------------------------------


def decodable_masks(code: ErasureCode, masks: Any) -> np.ndarray:
    """``code.decodable`` for a batch of received masks, vectorised where the code allows.

    Parameters
    ----------
    code : ErasureCode
        Any code from `dask_polar.codes`.
    masks : boolean array of shape (trials, n)
        Row ``t``: which coded results arrived in trial ``t``.

    Returns
    -------
    ndarray of bool, shape (trials,)

    Raises
    ------
    TypeError
        If ``code`` is not an `ErasureCode` or ``masks`` not boolean.
    ValueError
        If ``masks`` is not ``(trials, code.n)``.

    Notes
    -----
    Polar: `sc_leaf_mask` on all masks at once; only the masks SC cannot decode go through
    the (per-mask) inactivation check. Local product: vectorised peeling. MDS, replication:
    closed form. Other codes: ``code.decodable`` per mask.

    Examples
    --------
    >>> from dask_polar.codes import PolarCode
    >>> code = PolarCode(8, 4, straggler_prob=0.3)
    >>> masks = np.zeros((2, 8), dtype=bool)
    >>> masks[0, [1, 2, 4, 7]] = True
    >>> masks[1, [4, 5, 6, 7]] = True
    >>> decodable_masks(code, masks)
    array([ True, False])
    """
    code = _check_code(code)
    masks = _check_masks(masks, code.n)
    enough = masks.sum(axis=1) >= code.k
    if isinstance(code, PolarCode):
        seen = sc_leaf_mask(np.ascontiguousarray(masks.T))[code.info_set].all(axis=0)
        out = enough & seen
        if code.decoder_kind != "sc":
            for t in np.flatnonzero(enough & ~seen):
                out[t] = inactivation_check(code, masks[t])[0]
        return out
    if isinstance(code, MDSCode):
        return enough
    if isinstance(code, ReplicationCode):
        return masks.reshape(-1, code.r, code.k).any(axis=1).all(axis=1)
    if isinstance(code, LocalProductCode):
        return peel_known(code, masks).all(axis=1)
    return np.array([code.decodable(mask) for mask in masks], dtype=bool)


def results_needed(code: ErasureCode, orders: Any) -> np.ndarray:
    """``code.min_results`` for a batch of arrival orders.

    Parameters
    ----------
    code : ErasureCode
    orders : integer array of shape (trials, n)
        Each row a permutation of ``range(n)``: the order in which the coded results arrive.

    Returns
    -------
    ndarray of int, shape (trials,)
        How many arrivals, in each order, until the received set is decodable.

    Raises
    ------
    TypeError
        If ``code`` is not an `ErasureCode` or ``orders`` not an integer array.
    ValueError
        If ``orders`` is not ``(trials, code.n)`` or a row is not a permutation.

    Notes
    -----
    Polar SC, MDS and replication are closed forms over all trials; local product is a
    vectorised binary search; the polar inactivation decoder runs its exact check per trial
    (at ``n = 16384``, about 7 checks of a few milliseconds each, after one pass that answers
    the prefixes with one inactive symbol).

    Examples
    --------
    >>> from dask_polar.codes import MDSCode, ReplicationCode
    >>> orders = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    >>> results_needed(ReplicationCode(3, 2), orders), results_needed(MDSCode(6, 3), orders)
    (array([3, 3]), array([3, 3]))
    >>> results_needed(ReplicationCode(3, 2), np.array([[0, 3, 4, 5, 1, 2]]))  # 3: block 0 again
    array([4])
    """
    code = _check_code(code)
    orders = _check_orders(orders, code.n)
    ranks = ranks_of(orders)
    if isinstance(code, PolarCode):
        needed = sc_needed(code, ranks)
        if code.decoder_kind == "sc":
            return needed
        return np.array(
            [inactivation_needed(code, order, int(upper))[0] for order, upper in zip(orders, needed)]
        )
    if isinstance(code, MDSCode):
        return np.full(orders.shape[0], code.k)
    if isinstance(code, ReplicationCode):
        return ranks.reshape(-1, code.r, code.k).min(axis=1).max(axis=1) + 1
    if isinstance(code, LocalProductCode):
        return local_product_needed(code, ranks)
    return np.array([code.min_results(order) for order in orders])
