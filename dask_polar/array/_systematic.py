"""Systematic codes in the driver layout: plain products first, parity in the gaps.

A systematic code's data positions hold ``A``'s row blocks as they are, so their work
tasks are the plain products ``A_i @ B``: no encode before them and no statistics pass
over ``A``. Each parity task sums the few data blocks its generator row names (its own
encode, inside the task) and multiplies; parity is submitted after the data tasks and at
low priority (`run_early_completion`'s ``background``), so it only uses cores that the
data tasks leave idle. When every data block's own result arrives, nothing is decoded.

Parity sums must not let one block's large rows swamp another's digits, so every row of
every block is brought to one magnitude by a power of two (`row_normalizers`) that
depends on the block and ``B`` alone: each parity task computes the factors of the
blocks it reads and reports them (`WorkOutcome.side`), and the decode, when it is needed,
scales the plain results it uses by the same factors. Blocks with a NaN or infinity are
left out of the parity; when such a block's own result is late, its product is computed
again directly (numpy's NaN/inf pattern), as is every late block when ``B`` is not finite.
"""

from __future__ import annotations

from collections.abc import Mapping
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codes import ErasureCode
from ..codes.certify import Suspects, certify, decode_weights, required
from ..executors import WorkOutcome, run_early_completion
from ..executors.cooperative import CooperativeTask
from ..stragglers.faults import FaultPlan
from ._scaling import block_stats, row_normalizers, row_target
from ._tasks import JobRun, coded_product, job_record, panel_product

__all__ = [
    "Arrivals", "RowFactors", "SystematicJobSpec", "SystematicLayout", "SystematicResults", "drive_systematic",
    "parity_product",
]


@dataclass(frozen=True)
class SystematicLayout:
    """Where a code's data blocks are, as they are, and what each parity position sums.

    Attributes
    ----------
    plain : dict of int -> int
        Coded position -> the data block it is (a unit row of the generator).
    parity : dict of int -> (numpy.ndarray, tuple of int)
        Coded position -> its coefficients and the data blocks they multiply.
    zero : tuple of int
        Positions whose generator row is zero (their results are known: zeros).
    """

    plain: dict[int, int]
    parity: dict[int, tuple[np.ndarray, tuple[int, ...]]]
    zero: tuple[int, ...]

    def cheapest_parity(self) -> list[int]:
        """The parity positions by the number of blocks they sum (their encode's cost)."""
        return sorted(self.parity, key=lambda j: (len(self.parity[j][1]), j))

    @classmethod
    def of(cls, code: ErasureCode) -> SystematicLayout | None:
        """The layout of ``code``; None if some data block is at no position as it is."""
        plain: dict[int, int] = {}
        parity: dict[int, tuple[np.ndarray, tuple[int, ...]]] = {}
        zero: list[int] = []
        for j, row in enumerate(code.generator):
            used = np.flatnonzero(row)
            if used.size == 1 and row[used[0]] == 1:
                plain[j] = int(used[0])
            elif used.size:
                parity[j] = (row[used].copy(), tuple(int(i) for i in used))
            else:
                zero.append(j)
        if len(set(plain.values())) < code.k:
            return None
        return cls(plain, parity, tuple(zero))


class RowFactors:
    """One job's row factors per data block (`row_normalizers`) and the blocks scaled by
    them, computed once by whichever task reads the block first: the parity tasks and the
    decode of a job on threads share them (a job that runs parity holds one scaled copy of
    the blocks it read until it ends). A copy sent to another process starts empty (each
    of its tasks scales its own blocks, and reports the factors, `WorkOutcome.side`)."""

    def __init__(self, n: int, inner: int) -> None:
        self.n, self.inner = n, inner
        self._factors: dict[int, tuple[np.ndarray | None, bool]] = {}
        self._scaled: dict[int, np.ndarray] = {}
        self._targets: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple:
        return RowFactors, (self.n, self.inner)

    def target(self, dtype: np.dtype, b: np.ndarray) -> int:
        """The exponent every row is brought to (`row_target`), from ``B`` once per job."""
        key = np.dtype(dtype).str
        if key not in self._targets:
            self._targets[key] = row_target(dtype, self.n, self.inner, block_stats(b)[0])
        return self._targets[key]

    def get(self, index: int, block: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Data block ``index``'s ``(factors, finite)``."""
        found = self._factors.get(index)
        if found is None:
            found = row_normalizers(block, self.target(block.dtype, b))
            with self._lock:
                found = self._factors.setdefault(index, found)
        return found

    def scaled(self, index: int, block: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """Data block ``index`` with its rows scaled by its factors (the block itself if
        they are all 1); None if the block is not finite (it is left out of the parity)."""
        found = self._scaled.get(index)
        if found is None:
            factors, finite = self.get(index, block, b)
            if not finite:
                return None
            found = block if factors is None else block * factors[:, None].astype(block.dtype)
            with self._lock:
                found = self._scaled.setdefault(index, found)
        return found

    def update(self, known: Mapping[int, tuple[np.ndarray | None, bool]]) -> None:
        """Factors another task computed (a parity task's ``side``)."""
        with self._lock:
            for index, value in known.items():
                self._factors.setdefault(index, value)


class Arrivals:
    """The data blocks whose own products have arrived, shared by a job's decoder and its
    parity tasks on threads: a parity task whose blocks have all arrived adds nothing to
    the decode and stops. A copy sent to another process starts empty (its tasks run)."""

    def __init__(self) -> None:
        self._arrived: set[int] = set()

    def __reduce__(self) -> tuple:
        return Arrivals, ()

    def add(self, index: int) -> None:
        self._arrived.add(index)

    def any_missing(self, blocks: tuple[int, ...]) -> bool:
        """Whether one of ``blocks`` has not arrived."""
        return not self._arrived.issuperset(blocks)


def parity_product(
    coefficients: np.ndarray, sources: tuple[int, ...], factors_of: RowFactors,
    arrivals: Arrivals, gate: Any, b: np.ndarray, flag: Any, faults: FaultPlan | None,
    index: int, attempt: int, panel_rows: int | None, *blocks: np.ndarray,
) -> WorkOutcome:
    """Parity task ``index``: ``(sum_t coefficients[t] D_t A_{sources[t]}) @ b``.

    ``D_t`` are the blocks' row factors (``factors_of``); blocks that are not finite are
    left out. ``gate`` (or None) bounds how many parity panels run at once (see
    `panel_product`), and the task stops once ``arrivals`` has all its blocks. The
    outcome's ``side`` maps each source to its ``(factors, finite)``.
    """
    task = CooperativeTask(flag)
    if task.inject(faults, index, attempt):
        return task.stopped()
    side: dict[int, tuple[np.ndarray | None, bool]] = {}
    terms = []
    for coefficient, source, block in zip(coefficients, sources, blocks):
        side[source] = factors_of.get(source, block, b)
        scaled = factors_of.scaled(source, block, b)
        if scaled is not None:
            terms.append((scaled, float(coefficient)))
    outcome = panel_product(
        task, _PanelSum(terms, blocks[0]), b, panel_rows, gate=gate,
        needed=lambda: arrivals.any_missing(sources),
    )
    outcome.side = side
    return outcome


class _PanelSum:
    """``sum_t coefficient_t * block_t``, formed one row panel at a time when
    `panel_product` asks for it: each block's panel is read once and the sum stays in cache
    for its product, where summing whole blocks first would stream every block through
    memory twice more (and page-fault a fresh block per term). Coefficients of 1 and -1
    (most of a polar code's) are an add or a subtract."""

    def __init__(self, terms: list[tuple[np.ndarray, float]], like: np.ndarray) -> None:
        self._terms = terms
        self.shape, self.dtype = like.shape, like.dtype
        self._sum: np.ndarray | None = None
        self._scratch: np.ndarray | None = None

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        if self._sum is None or self._sum.shape[0] < hi - lo:
            self._sum = np.empty((hi - lo, *self.shape[1:]), self.dtype)
            self._scratch = np.empty_like(self._sum)
        out, scratch = self._sum[: hi - lo], self._scratch[: hi - lo]  # type: ignore[index]
        out.fill(0)
        for block, coefficient in self._terms:
            panel = block[lo:hi]
            if coefficient == 1:
                out += panel
            elif coefficient == -1:
                out -= panel
            else:
                np.multiply(panel, np.asarray(coefficient, dtype=self.dtype), out=scratch)
                out += scratch
        return out


class SystematicResults:
    """The decoder of a systematic job (`IncrementalDecoder`'s interface).

    Decodability is followed from the indices alone (`DecodabilityTracker`). `result`
    returns the ``k`` data blocks' products: the plain results as they are, and only the
    data blocks whose own result did not arrive decoded, from the scaled plain results and
    the parity results (see the module docstring).
    """

    def __init__(
        self, code: ErasureCode, layout: SystematicLayout, blocks: list[np.ndarray],
        b: np.ndarray, dtype: np.dtype, inner: int,
    ) -> None:
        self._code, self._layout = code, layout
        self._tracker = code.tracker()
        self._blocks, self._b, self._dtype = blocks, b, np.dtype(dtype)
        self._values: dict[int, np.ndarray] = {}
        self.factors = RowFactors(code.n, inner)
        self.arrivals = Arrivals()

    decodable = property(lambda self: self._tracker.decodable)
    received = property(lambda self: self._tracker.received)
    mask = property(lambda self: self._tracker.mask)

    def add(self, index: int, value: np.ndarray) -> bool:
        return self.update({index: value})

    def update(self, results: Mapping[int, np.ndarray]) -> bool:
        for index, value in results.items():
            self._values.setdefault(int(index), value)
            if int(index) in self._layout.plain:
                self.arrivals.add(self._layout.plain[int(index)])
        return self._tracker.update(results)

    def side(self, index: int, factors: Mapping[int, tuple[np.ndarray | None, bool]]) -> None:
        """A parity task's row factors of the blocks it read."""
        self.factors.update(factors)

    def result(self) -> list[np.ndarray]:
        """The ``k`` data blocks' products (each ``(block_rows, q)``), in data block order."""
        used = self._tracker.used
        if used is None:
            raise self._tracker.not_decodable()
        k, plain = self._code.k, self._layout.plain
        out: list[np.ndarray | None] = [None] * k
        for j, value in self._values.items():
            if j in plain and out[plain[j]] is None:
                out[plain[j]] = value
        missing = [i for i, value in enumerate(out) if value is None]
        if not missing:  # every data block's own product arrived: nothing to decode
            return out  # type: ignore[return-value]
        if not block_stats(self._b)[1]:  # the parity is of no use; numpy's NaN/inf pattern, directly
            return self._direct(out, missing)
        # measured here where no arrived parity task read the block
        factors_of = {i: self.factors.get(i, self._blocks[i], self._b) for i in range(k)}
        lost = [i for i in missing if not factors_of[i][1]]
        missing = [i for i in missing if factors_of[i][1]]
        if missing:
            scaled: dict[int, np.ndarray] = {}
            for j in np.flatnonzero(used):
                value = self._values[int(j)]
                if j in plain:
                    factors, finite = factors_of[plain[j]]
                    if not finite:  # left out of the parity: a zero block in the code
                        value = np.zeros_like(value)
                    elif factors is not None:
                        value = value * factors[:, None].astype(value.dtype)
                scaled[int(j)] = value
            decoded = self._code.decode(scaled)
            # the entries whose digits the decode may have cost are computed directly
            need = required(
                decode_weights(self._code, list(scaled))[missing], list(scaled.values()),
                self.factors.inner, self._code.n,
            )
            for i, block_need in zip(missing, need):
                factors = factors_of[i][0]
                value = decoded[i]
                suspects = Suspects.of(block_need, value)
                value = value if factors is None else value / factors[:, None].astype(value.dtype)
                out[i] = certify(value, suspects, self._blocks[i], self._b)
        return self._direct(out, lost)

    def _direct(self, out: list[np.ndarray | None], blocks: list[int]) -> list[np.ndarray]:
        """``out`` with the products of ``blocks`` computed here."""
        for i in blocks:
            out[i] = (self._blocks[i] @ self._b).astype(self._dtype, copy=False)
        return out  # type: ignore[return-value]


@dataclass
class SystematicJobSpec:
    """Everything `drive_systematic` needs, shipped inside the graph (must pickle)."""

    token: str
    code: ErasureCode
    data_keys: list[Any]
    rhs_key: Any
    block_rows: int
    inner: int
    dtype: np.dtype
    run: JobRun


def drive_systematic(spec: SystematicJobSpec, b: np.ndarray, *blocks: np.ndarray) -> list[np.ndarray]:
    """The driving task of a systematic code's product: run it where the graph runs.

    Returns the ``k`` data blocks' products, each ``(block_rows, q)`` in the work dtype.
    """
    code = spec.code
    layout = SystematicLayout.of(code)
    assert layout is not None, "drive_systematic needs a systematic code"
    result_shape = (spec.block_rows, b.shape[1])
    zero = np.zeros(result_shape, dtype=spec.dtype)
    decoder = SystematicResults(code, layout, list(blocks), b, spec.dtype, spec.inner)
    run = spec.run
    with run.backend(code.n) as backend:
        make_gate = getattr(backend, "background_gate", None)  # threads: a semaphore
        gate = None if make_gate is None else make_gate()
        refs = [backend.reference(key, block) for key, block in zip(spec.data_keys, blocks)]
        rhs = backend.reference(spec.rhs_key, b)

        def make_task(j: int, attempt: int, flag: Any):
            if j in layout.plain:
                return coded_product, (
                    refs[layout.plain[j]], rhs, flag, run.faults, j, attempt, run.panel_rows,
                )
            coefficients, sources = layout.parity[j]
            return parity_product, (
                coefficients, sources, decoder.factors, decoder.arrivals, gate, rhs, flag,
                run.faults, j, attempt, run.panel_rows, *(refs[i] for i in sources),
            )

        return run_early_completion(
            code, backend, make_task, record=job_record(code, backend, spec.token, run.faults),
            result_shape=result_shape, dtype=spec.dtype,
            known=dict.fromkeys(layout.zero, zero), retries=run.retries, backup=run.backup,
            timeout=run.timeout, background=layout.cheapest_parity(),
            decoder=decoder,
        )
