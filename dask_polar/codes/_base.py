"""The interface every erasure code implements, and the incremental decoder built on it.

A code maps ``k`` data blocks to ``n`` coded blocks by a linear map,
``encoded[j] = sum_i generator[j, i] * blocks[i]``. Because a worker applies a linear function
``f`` (``X_j -> X_j @ B``), the worker outputs form a codeword of the same code, so ``decode``
returns ``f`` of the data blocks. Subclasses provide the private kernels (``_encode``,
``_decodable``, ``_decode``, ``_missing``); the public methods validate and then call them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import as_index_mask, check_int
from ..exceptions import NotDecodableError

__all__ = ["DecodabilityTracker", "ErasureCode", "IncrementalDecoder", "as_blocks"]


def as_blocks(name: str, blocks: Any, count: int) -> np.ndarray:
    """Stack ``blocks`` into one C-contiguous array of shape ``(count, *block_shape)``.

    Floating and complex dtypes are accepted; integer and boolean data are rejected, because
    decoding may solve real linear systems (MDS, inactivation) and could not stay exact.
    """
    if isinstance(blocks, np.ndarray):
        stacked = blocks
    elif isinstance(blocks, Sequence) and not isinstance(blocks, (str, bytes)):
        arrays = [np.asarray(b) for b in blocks]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"{name} must all have the same shape, got shapes {sorted(shapes)}")
        stacked = np.stack(arrays) if arrays else np.empty((0,))
    else:
        raise TypeError(
            f"{name} must be an array of shape ({count}, ...) or a sequence of {count} arrays, "
            f"got {type(blocks).__name__}"
        )
    check_dtype(name, stacked.dtype)
    if stacked.ndim < 1 or stacked.shape[0] != count:
        raise ValueError(
            f"{name} must hold {count} blocks along axis 0, got shape {stacked.shape}"
        )
    return np.ascontiguousarray(stacked)


def check_dtype(name: str, dtype: np.dtype) -> None:
    """Raise ``TypeError`` unless ``dtype`` is floating or complex."""
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating)):
        raise TypeError(
            f"{name} must have a floating or complex dtype, got {dtype}; integer data is "
            "rejected because decoding solves real linear systems and would not be exact "
            "(cast with .astype(np.float64) first)"
        )


class ErasureCode(abc.ABC):
    """Base class of dask_polar's linear erasure codes over the reals (or complex numbers).

    Attributes
    ----------
    n : int
        Number of coded blocks (tasks).
    k : int
        Number of data blocks.
    name : str
        Short name, as accepted by ``coded_matmul(code=...)``.
    """

    name: str = "code"

    def __init__(self, n: int, k: int) -> None:
        self._n = n
        self._k = k

    # -- the public interface -------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of coded blocks."""
        return self._n

    @property
    def k(self) -> int:
        """Number of data blocks."""
        return self._k

    @property
    def rate(self) -> float:
        """``k / n``."""
        return self._k / self._n

    @property
    def generator(self) -> np.ndarray:
        """The ``(n, k)`` matrix with ``encode(blocks)[j] = sum_i generator[j, i] * blocks[i]``."""
        return self._generator()

    def encode(self, blocks: Any) -> np.ndarray:
        """Encode ``k`` data blocks into ``n`` coded blocks.

        Parameters
        ----------
        blocks : array_like of shape ``(k, *block_shape)`` or sequence of k equal-shape arrays
            Floating or complex data.

        Returns
        -------
        numpy.ndarray of shape ``(n, *block_shape)``

        Raises
        ------
        TypeError
            If the data is not floating or complex.
        ValueError
            If there are not ``k`` blocks or their shapes differ.
        """
        return self._encode(as_blocks("blocks", blocks, self._k))

    def decodable(self, received: Any) -> bool:
        """Whether the results at ``received`` determine every data block (no data needed).

        Parameters
        ----------
        received : boolean mask of length n, or iterable of coded indices

        Returns
        -------
        bool
        """
        return bool(self._decodable(as_index_mask("received", received, self._n)))

    def missing(self, received: Any) -> tuple[int, ...]:
        """Indices of the data blocks that the results at ``received`` do not determine."""
        mask = as_index_mask("received", received, self._n)
        return () if self._decodable(mask) else tuple(self._missing(mask))

    def decode(self, results: Mapping[int, Any]) -> np.ndarray:
        """Recover the ``k`` data-block results from any decodable subset of coded results.

        Parameters
        ----------
        results : mapping of coded index -> array
            Any subset of the ``n`` coded results, in any order, all of one shape.

        Returns
        -------
        numpy.ndarray of shape ``(k, *block_shape)``

        Raises
        ------
        NotDecodableError
            If ``results`` does not determine every data block; the error names how many results
            there were and which data blocks are still unknown.
        TypeError, ValueError
            For a non-mapping, indices outside ``[0, n)``, or blocks of different shapes.
        """
        if not isinstance(results, Mapping):
            raise TypeError(f"results must be a mapping of index -> array, got {type(results).__name__}")
        decoder = self.decoder()
        decoder.update(results)
        return decoder.result()

    def min_results(self, order: Iterable[int]) -> int:
        """How many arrivals, in ``order``, until the received set is first decodable.

        This is where an `IncrementalDecoder` fed in ``order`` stops. A linear scan with
        the incremental decodability check, not a binary search over prefixes: with
        `PolarCode`'s conditioning guard a decodable set can have a superset that is not
        (see `PolarCode`), so decodability is not monotone.

        Parameters
        ----------
        order : iterable of distinct coded indices (e.g. a permutation of ``range(n)``)

        Returns
        -------
        int

        Raises
        ------
        NotDecodableError
            If no prefix of ``order`` is decodable.
        """
        order = np.asarray(list(order), dtype=np.int64)
        if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= self._n)):
            raise ValueError(f"order must be a sequence of indices in [0, {self._n})")
        if np.unique(order).size != order.size:
            raise ValueError("order must not repeat an index")
        mask = np.zeros(self._n, dtype=bool)
        state = self._start(mask)
        for count, index in enumerate(order.tolist(), start=1):
            self._arrive(state, index)
            if count >= self._k and self._check(state):  # none decodes from fewer than k
                return count
        mask[order] = True
        raise NotDecodableError(order.size, self._k, self._missing(mask), repr(self))

    def decoder(self) -> IncrementalDecoder:
        """A decoder that takes results one at a time (see `IncrementalDecoder`)."""
        return IncrementalDecoder(self)

    def tracker(self) -> DecodabilityTracker:
        """A value-free decodability tracker (see `DecodabilityTracker`)."""
        return DecodabilityTracker(self)

    def launch_order(self) -> np.ndarray:
        """The order in which to start the coded tasks.

        Its first ``k`` entries form a decodable set, so when tasks finish in the order they
        started (no stragglers, a queue of workers) ``k`` results suffice. The default is
        ``0..n-1``, right for systematic codes; `PolarCode` starts its information positions
        first.
        """
        return np.arange(self._n)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} n={self._n} k={self._k}>"

    # -- kernels: inputs are already validated ----------------------------------------------

    @abc.abstractmethod
    def _generator(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _encode(self, blocks: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _decodable(self, mask: np.ndarray) -> bool: ...

    @abc.abstractmethod
    def _missing(self, mask: np.ndarray) -> Sequence[int]: ...

    @abc.abstractmethod
    def _decode(self, coded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Decode from ``coded`` (n, *shape), whose rows outside ``mask`` are zeros."""

    # Incremental decodability: ``_arrive`` updates a state per arrival, ``_check`` reads
    # decodability off it. The default keeps the mask and re-checks it; codes override the
    # hooks with amortised updates.
    def _start(self, mask: np.ndarray) -> Any:
        return mask.copy()

    def _arrive(self, state: Any, index: int) -> None:
        state[index] = True

    def _check(self, state: Any) -> bool:
        return self._decodable(state)


class DecodabilityTracker:
    """Which coded results arrived and whether they are decodable, from indices alone.

    The value-free half of `IncrementalDecoder`, for results that stay where they were
    computed (e.g. in S3, decoded by Lambda functions): it follows decodability per arrival
    with the code's hooks and remembers the set that was decodable (``used``), which is the
    set a decode must use (with `PolarCode`'s conditioning guard, a superset of a decodable
    set can fail it).

    Parameters
    ----------
    code : ErasureCode

    Examples
    --------
    >>> from dask_polar.codes import PolarCode
    >>> tracker = PolarCode(8, 4).tracker()
    >>> tracker.update([7, 6, 5]), tracker.update([3, 1, 4]), tracker.used.nonzero()[0]
    (False, True, array([1, 3, 4, 5, 6, 7]))
    """

    def __init__(self, code: ErasureCode) -> None:
        self.code = code
        self._mask = np.zeros(code.n, dtype=bool)
        self._state = code._start(self._mask)
        self._decodable = False
        self._used: np.ndarray | None = None

    @property
    def decodable(self) -> bool:
        """Whether the results added so far determine every data block."""
        return self._decodable

    @property
    def received(self) -> int:
        """How many distinct coded results were added."""
        return int(self._mask.sum())

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask of the coded indices added so far (a copy)."""
        return self._mask.copy()

    @property
    def used(self) -> np.ndarray | None:
        """Boolean mask of the set that became decodable (a copy); None before."""
        return None if self._used is None else self._used.copy()

    def update(self, indices: Iterable[int]) -> bool:
        """Record the arrival of the results at ``indices``, checking decodability once.

        Indices seen before are ignored. Returns whether the set is now decodable.

        Raises
        ------
        TypeError, ValueError
            For an index that is not an integer in ``[0, n)``.
        """
        new = []
        for index in indices:
            index = self._index(index)
            if not self._mask[index]:
                self._mask[index] = True
                new.append(index)
        return self._advance(new)

    def missing(self) -> tuple[int, ...]:
        """Indices of the data blocks not yet determined."""
        return () if self._decodable else tuple(self.code._missing(self._mask))

    def not_decodable(self) -> NotDecodableError:
        """The error for decoding now, when not `decodable`."""
        return NotDecodableError(
            self.received, self.code.k, self.code._missing(self._mask), repr(self.code)
        )

    def _index(self, index: Any) -> int:
        index = check_int("index", index)
        if not 0 <= index < self.code.n:
            raise ValueError(f"index must be in [0, {self.code.n}), got {index}")
        return index

    def _advance(self, new: list[int]) -> bool:
        """Feed newly marked indices to the code's incremental check."""
        if new and not self._decodable:
            for index in new:
                self.code._arrive(self._state, index)
            self._decodable = bool(self.code._check(self._state))
            if self._decodable:
                self._used = self._mask.copy()
        return self._decodable


class IncrementalDecoder:
    """Takes coded results as they arrive and decodes once they are decodable.

    Results are written into one preallocated stacked buffer as they arrive, so the final
    decode starts without a copy, and decodability is updated per arrival by the code's
    hook (a `DecodabilityTracker`). Once the set is decodable it stays so: results added
    later are counted but not used, and ``result()`` decodes from the set that was decodable
    (with `PolarCode`'s conditioning guard, a superset of a decodable set can fail it). For
    `PolarCode` the SC availability tree costs O(log n) amortised per arrival; with the
    inactivation decoder, once ``k`` results are in but SC alone cannot decode, each check
    also runs the value-free symbolic pass (about 3 ms at n = 1024): `update` checks a burst
    of arrivals once. ``result()`` decodes in place in the buffer.

    Parameters
    ----------
    code : ErasureCode

    Examples
    --------
    >>> import numpy as np
    >>> from dask_polar.codes import PolarCode
    >>> code = PolarCode(8, 4)
    >>> coded = code.encode(np.arange(8.0).reshape(4, 2))
    >>> dec = code.decoder()
    >>> for j in [7, 6, 5, 3, 1, 4]:
    ...     if dec.add(j, coded[j]):
    ...         break
    >>> dec.result()
    array([[0., 1.],
           [2., 3.],
           [4., 5.],
           [6., 7.]])
    """

    def __init__(self, code: ErasureCode) -> None:
        self.code = code
        self._tracker = DecodabilityTracker(code)
        self._buffer: np.ndarray | None = None

    @property
    def decodable(self) -> bool:
        """Whether the results added so far determine every data block."""
        return self._tracker.decodable

    @property
    def received(self) -> int:
        """How many distinct coded results were added."""
        return self._tracker.received

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask of the coded indices added so far (a copy)."""
        return self._tracker.mask

    def add(self, index: int, value: Any) -> bool:
        """Add the result of coded task ``index``; return whether the set is now decodable.

        Adding an index twice is a no-op (retried tasks may deliver twice).

        Raises
        ------
        TypeError, ValueError
            For a bad index, a non-floating dtype, or a shape different from earlier results.
        """
        return self.update({index: value})

    def update(self, results: Mapping[int, Any]) -> bool:
        """Add many results at once (e.g. a burst of arrivals), checking decodability once.

        Returns whether the set is now decodable.
        """
        new = [int(index) for index, value in results.items() if self._store(index, value)]
        return self._tracker._advance(new)

    def _store(self, index: int, value: Any) -> bool:
        """Validate and buffer one result; return False if ``index`` was already added."""
        tracker = self._tracker
        index = tracker._index(index)
        if tracker._mask[index]:
            return False
        value = np.asarray(value)
        check_dtype("value", value.dtype)
        if self._buffer is None:
            self._buffer = np.zeros((self.code.n, *value.shape), dtype=value.dtype)
        elif value.shape != self._buffer.shape[1:]:
            raise ValueError(
                f"value for index {index} has shape {value.shape}, earlier results have "
                f"shape {self._buffer.shape[1:]}"
            )
        elif value.dtype != self._buffer.dtype and not tracker.decodable:
            self._buffer = self._buffer.astype(np.result_type(self._buffer, value))
        if not tracker.decodable:  # rows outside the decodable set stay zero, as _decode needs
            self._buffer[index] = value
        tracker._mask[index] = True
        return True

    def missing(self) -> tuple[int, ...]:
        """Indices of the data blocks not yet determined."""
        return self._tracker.missing()

    def result(self) -> np.ndarray:
        """The ``(k, *block_shape)`` decoded data-block results.

        Raises
        ------
        NotDecodableError
            If the results added so far are not decodable.
        """
        if not self._tracker.decodable:
            raise self._tracker.not_decodable()
        return self.code._decode(self._buffer, self._tracker._used)
