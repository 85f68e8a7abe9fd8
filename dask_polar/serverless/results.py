"""Coded results kept in S3 and decoded in Lambda functions (``LambdaExecutor(decode=
"functions")``, the default).

The seed pipeline's second half, S3 -> Lambda -> S3 -> decode, without the client in the
data path:

1. each work task (`keep_result`) writes its ``X_j @ B`` to S3 as raw C-order bytes, under
   the job's prefix, and returns a `ResultReceipt` (key, shape, dtype, one SHA-256 per row
   panel) inside its signed result envelope: a few hundred bytes instead of the block;
2. the driver follows decodability from the receipts alone (`DecodabilityTracker`: which
   indices arrived, no data) and checks each receipt's shape and dtype (a mismatch is an
   erasure, as for values);
3. once decodable, `FunctionDecode.decode` invokes one `decode_panel` per row panel: it
   reads rows ``lo:hi`` of every used result with a ranged GET (rows of a C-order array
   are contiguous bytes), checks them against the panel's digest, and decodes them with the
   code (decoding is linear and acts on rows independently, so every panel uses the same
   set of results);
4. the decoded panel travels back like any task result (inline in the response when
   small, else through S3), and the client assembles the ``(k, rows, q)`` array: it
   downloads about ``|C|`` bytes instead of ``n / k`` times as much.

Stragglers' results, like the used ones, live under the job's prefix, which is deleted once
the job is decoded and its last invocation is back.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..codes.certify import Decoded, Suspects, certified_decode
from ..exceptions import RemoteDecodeError
from ..executors import WorkOutcome
from . import protocol
from .exceptions import PayloadRejectedError

__all__ = [
    "FunctionDecode",
    "ResultReceipt",
    "S3ResultStore",
    "decode_panel",
    "keep_result",
    "panel_splits",
]

#: Ranged GETs in flight inside one decode function.
FETCH_THREADS = 16
#: Failures a retry cannot change: a decode task failing so is not re-run.
#: (`PayloadRejectedError`, `S3AccessError`, `PayloadTooLargeError`, `NotDecodableError`...)
FINAL_ERRORS = (PermissionError, TypeError, ValueError)


def panel_splits(rows: int, row_bytes: int, panel_bytes: int, max_panels: int) -> tuple[int, ...]:
    """Row boundaries of the decode panels: ``(0, ..., rows)``, each panel about
    ``panel_bytes`` of decoded output (``row_bytes`` per row), at most ``max_panels``.

    Examples
    --------
    >>> panel_splits(10, 100, 300, 8)
    (0, 2, 5, 7, 10)
    >>> panel_splits(10, 100, 10**6, 8)
    (0, 10)
    """
    count = -(-rows * row_bytes // max(1, panel_bytes))
    count = max(1, min(count, rows, max_panels))
    return tuple(rows * i // count for i in range(count + 1))


@dataclasses.dataclass(frozen=True)
class ResultReceipt:
    """What a work task returns instead of its result: where it is and what it is.

    Attributes
    ----------
    key : str
        The S3 object holding the result's raw C-order bytes ("" if it was not stored
        because its shape or dtype is not the job's: the driver treats it as an erasure).
    shape : tuple of int
    dtype : numpy.dtype
    digests : tuple of str
        Hex SHA-256 of each row panel's bytes (panels as in `S3ResultStore.splits`).
    """

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    digests: tuple[str, ...]


class S3ResultStore:
    """Where one job's results are kept: an S3 prefix, the result's shape and dtype, and the
    decode panels' row boundaries.

    Pickles to its address (like `S3CancelFlag`); unpickled inside the handler it uses the
    function's S3 client.

    Parameters
    ----------
    bucket, prefix : str
        Results go to ``<prefix>/results/<task>-<random>``.
    shape : tuple of int
        Every result's shape (``(rows, ...)``).
    dtype : numpy.dtype
    splits : tuple of int
        Row boundaries of the decode panels, ``(0, ..., rows)`` (see `panel_splits`).
    """

    def __init__(
        self, bucket: str, prefix: str, shape: tuple[int, ...], dtype: Any,
        splits: tuple[int, ...], *, s3: Any = None,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.splits = tuple(int(s) for s in splits)
        if self.splits[0] != 0 or self.splits[-1] != self.shape[0] or any(
            a >= b for a, b in zip(self.splits, self.splits[1:])
        ):
            raise ValueError(
                f"splits must rise strictly from 0 to {self.shape[0]}, got {self.splits}"
            )
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._s3 = s3

    def rows(self, panel: int) -> tuple[int, int]:
        """Rows ``(start, stop)`` of ``panel``."""
        return self.splits[panel], self.splits[panel + 1]

    def keep(self, name: str, outcome: WorkOutcome) -> WorkOutcome:
        """Store a finished task's value in S3; return its outcome carrying a receipt.

        A value that is not an array of the job's shape and dtype is not stored: its
        receipt reports what it is, and the driver treats it as an erasure.
        """
        value = outcome.value
        if outcome.cancelled or not isinstance(value, np.ndarray):
            return outcome
        receipt = ResultReceipt("", tuple(value.shape), value.dtype, ())
        if receipt.shape == self.shape and receipt.dtype == self.dtype:
            data = np.ascontiguousarray(value).tobytes()
            view = memoryview(data)
            key = f"{self.prefix}/results/{name}-{uuid.uuid4().hex[:8]}"  # never overwritten
            digests = tuple(
                protocol.digest(view[lo * self.row_bytes : hi * self.row_bytes])
                for lo, hi in zip(self.splits, self.splits[1:])
            )
            try:
                self._client().put_object(Bucket=self.bucket, Key=key, Body=data)
            except Exception as exc:
                raise protocol.s3_error(exc, "PutObject", self.bucket, key, "function") from exc
            receipt = ResultReceipt(key, receipt.shape, receipt.dtype, digests)
        return dataclasses.replace(outcome, value=receipt)

    def read(self, key: str, panel: int, sha256: str) -> np.ndarray:
        """Rows of ``panel`` of the result at ``key`` (a ranged GET), checked against its
        digest.

        Raises
        ------
        PayloadRejectedError
            If the bytes are not the ones the work task stored (size or digest).
        S3AccessError
            If S3 refused the credentials.
        """
        lo, hi = self.rows(panel)
        start, stop = lo * self.row_bytes, hi * self.row_bytes
        try:
            response = self._client().get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
            )
            data = response["Body"].read()
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code == "InvalidRange":  # shorter than the task wrote: replaced since
                data = b""
            else:
                raise protocol.s3_error(exc, "GetObject", self.bucket, key, "function") from exc
        where = f"rows {lo}:{hi} of s3://{self.bucket}/{key}"
        if len(data) != stop - start:
            raise PayloadRejectedError(f"{where}: got {len(data)} bytes, expected {stop - start}")
        protocol.check_digest(data, sha256, where)
        return np.frombuffer(data, dtype=self.dtype).reshape(hi - lo, *self.shape[1:])

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def __reduce__(self):
        return (_load_store, (self.bucket, self.prefix, self.shape, self.dtype.str, self.splits))

    def __repr__(self) -> str:
        return (
            f"<S3ResultStore s3://{self.bucket}/{self.prefix}/results/ shape={self.shape} "
            f"dtype={self.dtype} panels={len(self.splits) - 1}>"
        )


def _load_store(bucket: str, prefix: str, shape: tuple, dtype: str, splits: tuple) -> S3ResultStore:
    resolver = protocol._RESOLVER.get()
    return S3ResultStore(
        bucket, prefix, shape, dtype, splits, s3=getattr(resolver, "s3", None)
    )


def keep_result(
    store: S3ResultStore, name: str, fn: Callable[..., WorkOutcome], *args: Any
) -> WorkOutcome:
    """A work task whose result stays in S3: ``fn(*args)``, its value stored by ``store``."""
    return store.keep(name, fn(*args))


#: A decode panel's source for one coded index: ``(key, sha256)`` of a stored result's rows,
#: an array (the rows of a result known without work), or None (an identically zero result).
Source = tuple[str, str] | np.ndarray | None


def decode_panel(
    store: S3ResultStore, code: Any, panel: int, sources: Mapping[int, Source],
    inner: int | None = None,
) -> np.ndarray | Decoded:
    """A decode task: rows ``store.rows(panel)`` of the ``k`` decoded results.

    With ``inner`` (the product's inner dimension) the decode is certified
    (`dask_polar.codes.certify`): the panel comes with the entries it may have lost digits
    in, which the client computes from the data blocks.

    Returns
    -------
    numpy.ndarray of shape ``(k, stop - start, *shape[1:])``
        Or, with ``inner``, `Decoded` with those values.

    Raises
    ------
    PayloadRejectedError
        A stored result's rows do not match their digest.
    NotDecodableError
        If ``sources`` is not a decodable set (the driver only sends decodable ones).
    """
    lo, hi = store.rows(panel)
    values: dict[int, np.ndarray] = {}
    stored = {j: src for j, src in sources.items() if isinstance(src, tuple)}
    for j, src in sources.items():
        if src is None:
            values[j] = np.zeros((hi - lo, *store.shape[1:]), dtype=store.dtype)
        elif not isinstance(src, tuple):
            values[j] = src
    if stored:
        with cf.ThreadPoolExecutor(min(FETCH_THREADS, len(stored))) as pool:
            reads = {j: pool.submit(store.read, key, panel, sha) for j, (key, sha) in stored.items()}
            values.update((j, read.result()) for j, read in reads.items())
    return code.decode(values) if inner is None else certified_decode(code, values, inner)


class FunctionDecode:
    """One coded job's results in S3, decoded by Lambda functions (a `RemoteResults`).

    Made by `LambdaExecutor.remote_results`; the job's objects are kept until `close`.

    Parameters
    ----------
    executor : LambdaExecutor
    store : S3ResultStore
        Where the job's work tasks keep their results.
    retries : int
        Re-invocations of a decode task that failed in a way a retry can change (timeouts,
        crashes, throttling, connection errors).
    release : callable
        Called once by `close`.
    count : callable, optional
        ``count(decode_panels=..., decode_retries=...)`` records what the decode did (the
        executor's ``stats``).
    """

    receipt_type = ResultReceipt

    def __init__(
        self, executor: Any, store: S3ResultStore, *, retries: int,
        release: Callable[[], None], count: Callable[..., None] | None = None,
    ) -> None:
        self.executor, self.store, self.retries = executor, store, retries
        self._release: Callable[[], None] | None = release
        self._count = count if count is not None else (lambda **amounts: None)

    def task(self, fn: Callable[..., WorkOutcome], args: tuple, key: Any) -> tuple:
        """The work task ``fn(*args)`` that keeps its value in S3 and returns a receipt."""
        return keep_result, (self.store, protocol.slug(key), fn, *args)

    def decode(
        self, code: Any, results: Mapping[int, Any], inner: int | None = None
    ) -> np.ndarray | Decoded:
        """Decode a decodable set of receipts in one Lambda invocation per row panel.

        Parameters
        ----------
        code : ErasureCode
        results : mapping of int -> ResultReceipt or numpy.ndarray
            Receipts of stored results (checked by the driver: the job's shape and dtype)
            and arrays known without work.
        inner : int, optional
            The product's inner dimension: with it, the decode is certified (see
            `decode_panel`).

        Returns
        -------
        numpy.ndarray of shape ``(k, *shape)``
            Or, with ``inner``, `Decoded` with those values.

        Raises
        ------
        RemoteDecodeError
            A decode task failed after its retries (or in a way a retry cannot change), or
            returned something other than its panel.
        """
        store = self.store
        panels = len(store.splits) - 1
        zero = {j for j, v in results.items() if isinstance(v, np.ndarray) and not v.any()}

        def sources(panel: int) -> dict[int, Source]:
            lo, hi = store.rows(panel)
            out: dict[int, Source] = {}
            for j, value in results.items():
                if isinstance(value, ResultReceipt):
                    out[j] = (value.key, value.digests[panel])
                else:
                    out[j] = None if j in zero else np.ascontiguousarray(value[lo:hi])
            return out

        def submit(panel: int) -> cf.Future:
            return self.executor.submit(decode_panel, store, code, panel, sources(panel), inner)

        out = np.empty((code.k, *store.shape), dtype=store.dtype)
        suspects: list[list[Suspects]] = [[] for _ in range(code.k)]
        attempts = dict.fromkeys(range(panels), 1)
        pending = {submit(p): p for p in range(panels)}
        self._count(decode_panels=panels)
        try:
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    panel = pending.pop(future)
                    lo, hi = store.rows(panel)
                    try:
                        value = future.result()
                    except Exception as exc:
                        if isinstance(exc, FINAL_ERRORS) or attempts[panel] > self.retries:
                            raise RemoteDecodeError(
                                panel, (lo, hi), attempts[panel], f"{type(exc).__name__}: {exc}"
                            ) from exc
                        attempts[panel] += 1
                        self._count(decode_retries=1)
                        pending[submit(panel)] = panel
                        continue
                    expected = (code.k, hi - lo, *store.shape[1:])
                    found: list[Suspects] | None = None
                    if isinstance(value, Decoded) and len(value.suspects) == code.k:
                        value, found = value.values, value.suspects
                    if (inner is not None and found is None) or not (
                        isinstance(value, np.ndarray) and value.shape == expected
                        and value.dtype == store.dtype
                    ):
                        got = (
                            f"shape {value.shape}, dtype {value.dtype}"
                            if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
                        )
                        raise RemoteDecodeError(
                            panel, (lo, hi), attempts[panel],
                            f"malformed panel: {got}, expected shape {expected}, dtype "
                            f"{store.dtype}",
                        )
                    out[:, lo:hi] = value
                    for i, part in enumerate(found or ()):
                        suspects[i].append(part.shifted(lo))
        finally:
            for future in pending:  # a failed panel ends the decode: send no more calls
                future.cancel()
        if inner is None:
            return out
        return Decoded(out, [Suspects.joined(parts) for parts in suspects])

    def close(self) -> None:
        """The job ended: let the executor delete its objects (once its invocations are back)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __repr__(self) -> str:
        return f"<FunctionDecode {self.store!r}>"
