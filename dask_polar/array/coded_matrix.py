"""`CodedMatrix`: encode a matrix once, then run many coded products with it.

Iterative methods (gradient descent, Newton steps) multiply the same data matrix by a new
vector every iteration. `CodedMatrix` encodes ``A``'s row blocks once and keeps the coded
blocks where the work runs (numpy arrays for threads, futures on a dask.distributed cluster,
S3 objects for the Lambda executor), so each product moves only the vector and the results.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import weakref
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import Alias

from .._validation import check_int
from ..codes import ErasureCode
from ..codes._base import check_dtype
from ..executors.local import ExecutorBackend, ThreadBackend, default_client
from ..jobs import JobRecord, find_job
from ..stragglers.faults import fault_plan
from . import _tasks
from ._encode import encode_layer
from ._options import CodedOptions, as_matrix, split_rows
from ._scaling import Scales, block_stats, peak_exponent, work_dtype

__all__ = ["CodedMatrix"]


class CodedMatrix:
    """A matrix whose row blocks are encoded once, for many straggler-resilient products.

    Parameters
    ----------
    A : dask array, numpy array or array-like, shape (m, p)
        Floating or complex.
    k : int, optional
        Number of row blocks (data blocks); default: ``A``'s row chunks.
    client : distributed.Client, optional
        Run on this cluster (default: the current client if there is one, else threads).
    **options
        As in `coded_matmul`: ``code``, ``n``, ``redundancy``, ``straggler_prob``,
        ``runtimes``, ``executor``, ``stragglers``, ``seed``, ``retries``, ``backup``,
        ``timeout`` (per product), ``local_workers``, ``panel_rows``. Injected straggler
        delays are drawn afresh for every product (seed ``seed + number of products so
        far``).

    Attributes
    ----------
    code : ErasureCode
    shape : tuple of int
    dtype : numpy.dtype

    Notes
    -----
    Encoding costs one pass of the code's encoder over ``A`` (for polar codes
    ``(n/2) log2 n`` block additions) and is paid once; each product ``A @ x`` then runs
    ``n`` coded tasks ``X_j @ x`` and decodes from the first decodable set.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((400, 30))
    >>> with CodedMatrix(A, k=8) as coded:
    ...     x = np.ones(30)
    ...     np.allclose(coded @ x, A @ x), np.allclose(coded.T @ np.ones(400), A.T @ np.ones(400))
    (True, True)
    """

    def __init__(self, A: Any, *, k: int | None = None, client: Any = None, **options: Any) -> None:
        self.options = CodedOptions.resolve(**options)
        source = as_matrix("A", A)
        check_dtype("A", source.dtype)  # encoded once in its own dtype, for any x
        m, p = source.shape
        k = source.numblocks[0] if k is None else check_int("k", k, minimum=1)
        if k > max(m, 1):
            raise ValueError(f"k must be <= the number of rows of A ({m}), got {k}")
        self._source, self._k_given = source, k
        self.code: ErasureCode = self.options.make_code(k)
        self.shape = (m, p)
        self.dtype = source.dtype
        self._row_chunks = source.chunks[0] if k == source.numblocks[0] else split_rows(m, k)
        rows = source.rechunk((self._row_chunks, (p,)))
        token = tokenize(rows.name, repr(self.code), getattr(self.code, "info_set", None))
        self._token = token
        self._work = work_dtype(source.dtype)
        prepared = encode_layer(
            [[(rows.name, i, 0)] for i in range(k)], self._row_chunks, self.code, token,
            work=self._work, inner=p, cast=self._work != source.dtype,
        )
        layer, coded_keys = prepared.layer, prepared.coded_keys
        name = f"polar-coded-{token}"
        for j, key in coded_keys.items():  # one key per coded block, in a layer of ours
            layer[(name, j)] = Alias((name, j), key)
        layer[(name, "scales")] = Alias((name, "scales"), prepared.scales_key)
        graph = HighLevelGraph.from_collections(name, layer, [rows])
        encoded = [Delayed((name, j), graph, layer=name) for j in coded_keys]
        self._scales: Scales = dask.compute(Delayed((name, "scales"), graph, layer=name))[0]
        if not all(self._scales.finite):
            bad = [i for i, finite in enumerate(self._scales.finite) if not finite]
            raise ValueError(
                f"A has NaN or infinite values in row block(s) {bad}; a CodedMatrix cannot "
                "code them (use A @ x, or coded_matmul, which computes such blocks directly)"
            )
        self._sources = prepared.sources

        self._client = None
        if self.options.executor is None:
            self._client = client if client is not None else default_client()
        if self._client is not None:
            from ..executors.distributed import DistributedBackend

            blocks = self._client.compute(encoded)  # the coded blocks stay on the workers
            self._backend: Any = DistributedBackend(self._client)
        else:
            blocks = dask.compute(*encoded)
            if self.options.executor is not None:
                self._backend = ExecutorBackend(self.options.executor)
            else:
                self._backend = ThreadBackend(self.options.local_workers or self.code.n)
        self._refs = {
            j: self._backend.reference(None, block) for j, block in zip(coded_keys, blocks)
        }
        self._calls = itertools.count()
        self._transpose: CodedMatrix | None = None
        self._finalizer = weakref.finalize(self, self._backend.close)
        self._closed = False

    def matmul(self, x: Any) -> np.ndarray:
        """``A @ x`` by a coded job; ``x`` of shape ``(p,)`` or ``(p, r)``.

        Returns
        -------
        numpy.ndarray of shape ``(m,)`` or ``(m, r)``

        Raises
        ------
        TypeError, ValueError
            For non-floating ``x`` or a shape that does not align with ``A``.
        dask_polar.CodedJobError
            If the coded tasks keep failing.
        ValueError
            If the CodedMatrix was closed (its coded blocks are gone).
        """
        if self._closed:
            raise ValueError(
                "this CodedMatrix is closed (after close() or its with block): its coded "
                "blocks were released; make a new CodedMatrix"
            )
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating)):
            raise TypeError(f"x must have a floating or complex dtype, got {x.dtype}")
        if x.ndim not in (1, 2) or x.shape[0] != self.shape[1]:
            raise ValueError(f"x must have shape ({self.shape[1]},) or ({self.shape[1]}, r), got {x.shape}")
        rhs = x.reshape(self.shape[1], -1)
        exponents, finite = block_stats(rhs)
        if not finite:
            raise ValueError("x has NaN or infinite values; a CodedMatrix cannot code them")
        exponent = peak_exponent(exponents)
        scales = dataclasses.replace(self._scales, b=math.ldexp(1.0, -exponent) if exponent else 1.0)
        rhs = scales.rhs(rhs).astype(np.result_type(self._work, rhs.dtype), copy=False)
        call = next(self._calls)
        faults = fault_plan(self.options.stragglers, self.code.n, self.options.seed + call)
        decoded = _tasks.run_coded_product(
            self.code,
            self._backend,
            self._refs,
            self._backend.reference(None, rhs),
            row_factors={j: scales.row_factors(self._sources[j]) for j in self._refs},
            result_shape=(max(self._row_chunks), rhs.shape[1]),
            dtype=rhs.dtype,
            token=f"{self._token}-{call}",
            faults=faults,
            retries=self.options.retries,
            backup=self.options.backup,
            timeout=self.options.timeout,
            panel_rows=self.options.panel_rows,
        )
        out_dtype = np.result_type(self.dtype, x.dtype)
        out = np.concatenate([
            scales.unscale(i, decoded[i, :rows], out_dtype)
            for i, rows in enumerate(self._row_chunks)
        ])
        return out[:, 0] if x.ndim == 1 else out

    __matmul__ = matmul

    @property
    def source(self) -> Any:
        """The matrix that was encoded, as a dask array."""
        return self._source

    @property
    def T(self) -> CodedMatrix:
        """The transpose, encoded (once, on first use) from ``A.T``'s row blocks."""
        if self._transpose is None:
            options = {f: getattr(self.options, f) for f in self.options.__dataclass_fields__}
            options["n"] = None
            self._transpose = CodedMatrix(
                self._source.T, k=min(self._k_given, self.shape[1]), client=self._client, **options
            )
        return self._transpose

    @property
    def last_record(self) -> JobRecord | None:
        """The record of this process's most recent coded job (see `dask_polar.last_job`)."""
        return find_job(self._token)

    def close(self) -> None:
        """Release the coded blocks and the worker threads (also done when collected)."""
        self._closed = True
        self._refs.clear()
        self._finalizer()
        if self._transpose is not None:
            self._transpose.close()

    def __enter__(self) -> CodedMatrix:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CodedMatrix shape={self.shape} code={self.code!r} backend={self._backend.name}>"
