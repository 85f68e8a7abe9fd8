"""``coded_matmul(A, B)``: a coded, straggler-resilient ``A @ B`` as a lazy Dask array."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import List, Task, TaskRef
from dask.utils import typename

from .. import config
from .._validation import check_bool, check_int, check_positive
from ..codes import (
    ErasureCode,
    LocalProductCode,
    MDSCode,
    PolarCode,
    ReplicationCode,
    UncodedCode,
)
from ..codes._base import check_dtype
from ..stragglers.faults import FaultPlan, as_faults, fault_plan
from . import _tasks
from ._annotations import keep_annotations
from ._cluster import cluster_layer
from ._plan import EncodedBlocks, ProductPlan
from ._placement import coded_block_owners, data_block_order, is_butterfly
from ._scaling import block_stats, job_scales, work_dtype
from ._systematic import SystematicJobSpec, SystematicLayout, drive_systematic

__all__ = [
    "CodedOptions", "EncodedBlocks", "coded_matmul", "encode_layer", "make_code", "product_layer",
]

CODE_NAMES = ("polar", "mds", "replication", "uncoded", "local-product")
LAYOUTS = ("auto", "cluster", "driver")

#: Butterfly stages done by one encode task (a radix-8 butterfly): 6 stages at n = 64 become
#: 2 dependent task stages, at the price of 2.4 instead of 1.5 additions per block.
STAGES_PER_TASK = 3


def make_code(
    code: str | ErasureCode,
    k: int,
    *,
    n: int | None = None,
    redundancy: float | None = None,
    straggler_prob: float | None = None,
    runtimes: Any = None,
    systematic: bool = False,
) -> ErasureCode:
    """Build the code for ``k`` data blocks from a name (or check a code object).

    Parameters
    ----------
    code : {"polar", "mds", "replication", "uncoded", "local-product"} or ErasureCode
    k : int
        Number of data blocks.
    n : int, optional
        Number of coded tasks. Default: the next power of two >= ``redundancy * k`` for polar,
        ``round(redundancy * k)`` for MDS, ``k * round(redundancy)`` for replication.
    redundancy : float, optional
        ``n / k`` to aim for (default from ``polar.redundancy``, 2).
    straggler_prob, runtimes
        Polar design inputs (see `dask_polar.codes.PolarCode`).
    systematic : bool
        Whether a polar code is systematic (``A``'s own row blocks at its information
        positions) or not (see `dask_polar.codes.PolarCode`).

    Returns
    -------
    ErasureCode
    """
    if isinstance(code, ErasureCode):
        if code.k != k:
            raise ValueError(f"code has k={code.k} data blocks but the product has k={k}")
        if n is not None and n != code.n:
            raise ValueError(f"n={n} disagrees with the code's n={code.n}")
        return code
    if not isinstance(code, str):
        raise TypeError(
            f"code must be one of {CODE_NAMES} or a dask_polar.codes code, got {type(code).__name__}"
        )
    _check_code_name(code)
    redundancy = _check_redundancy(config.get("redundancy", redundancy))
    if code != "polar" and (straggler_prob is not None or runtimes is not None):
        raise ValueError("straggler_prob and runtimes design polar codes only")
    if n is not None:
        n = check_int("n", n, minimum=k)
    if code == "polar":
        if n is None:
            n = 1 << max(0, math.ceil(math.log2(math.ceil(redundancy * k - 1e-9))))
        return PolarCode(
            n, k, straggler_prob=straggler_prob, runtimes=runtimes, systematic=systematic
        )
    if code == "mds":
        return MDSCode(n if n is not None else max(k, round(redundancy * k)), k)
    if code == "replication":
        if n is not None and n % k:
            raise ValueError(f"replication needs n to be a multiple of k={k}, got n={n}")
        return ReplicationCode(k, n // k if n is not None else max(1, round(redundancy)))
    if code == "uncoded":
        if n is not None and n != k:
            raise ValueError(f"uncoded has n = k = {k}, got n={n}")
        return UncodedCode(k)
    made = LocalProductCode(k)
    if n is not None and n != made.n:
        raise ValueError(f"local-product with k={k} has n={made.n}, got n={n}")
    return made


def _as_matrix(name: str, x: Any) -> da.Array:
    if not isinstance(x, da.Array):
        try:
            x = da.asarray(x)
        except Exception as exc:  # anything numpy cannot make an array of
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    if type(x._meta) is not np.ndarray:
        # a coded product would drop a mask (numpy's and Dask's @ raise) or densify sparse data
        raise TypeError(
            f"{name} must be a dense array with numpy chunks, got chunks of type "
            f"{typename(type(x._meta))}; masked and sparse arrays are not supported "
            "(use a plain A @ B)"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"{name} must have a numeric dtype, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {x.ndim}-D with shape {x.shape}")
    if any(math.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )
    return x


#: The largest ``redundancy`` (``n / k``) accepted: more coded tasks than this per data block
#: cost more than any straggler could (and 1e9 would exhaust memory building the code).
MAX_REDUNDANCY = 64


def _check_code_name(code: str) -> None:
    if code not in CODE_NAMES:
        raise ValueError(f"code must be one of {CODE_NAMES}, got {code!r}")


def _check_redundancy(redundancy: Any) -> float:
    """``redundancy`` as a float in ``[1, MAX_REDUNDANCY]``, or a TypeError/ValueError."""
    if isinstance(redundancy, bool) or not isinstance(redundancy, numbers.Real):
        raise TypeError(f"redundancy must be a real number, got {type(redundancy).__name__}")
    if not 1 <= redundancy <= MAX_REDUNDANCY:
        raise ValueError(f"redundancy must be between 1 and {MAX_REDUNDANCY}, got {redundancy}")
    return float(redundancy)


@dataclass(frozen=True)
class CodedOptions:
    """How coded products are built and run, validated, with ``polar.*`` config defaults.

    Shared by `coded_matmul` and the graph rewrite (`dask_polar.optimize`); see
    `coded_matmul` for the meaning of each field.
    """

    code: str | ErasureCode = "polar"
    n: int | None = None
    redundancy: float = 2.0
    straggler_prob: float | None = None
    runtimes: Any = None
    systematic: bool | None = None
    executor: Any = None
    stragglers: Any = None
    seed: int = 0
    retries: int = 2
    backup: float | None = None
    timeout: float | None = None
    local_workers: int | None = None
    panel_rows: int | None = None
    layout: str = "auto"

    @classmethod
    def resolve(cls, **given: Any) -> CodedOptions:
        """Options from keyword arguments, falling back to ``polar.<name>`` config values."""
        values = {}
        for f in fields(cls):
            value = given.pop(f.name, None)
            if value is None and f.name != "n":
                value = config.get(f.name.replace("_", "-"))
            values[f.name] = f.default if value is None else value
        if given:
            raise TypeError(f"unexpected option(s): {sorted(given)}")
        if not isinstance(values["code"], (str, ErasureCode)):
            raise TypeError(
                f"code must be one of {CODE_NAMES} or a dask_polar.codes code, "
                f"got {type(values['code']).__name__}"
            )
        if isinstance(values["code"], str):  # checked now, not at a later compute
            _check_code_name(values["code"])
        values["redundancy"] = _check_redundancy(values["redundancy"])
        if values["systematic"] is not None:
            values["systematic"] = check_bool("systematic", values["systematic"])
        as_faults(values["stragglers"])  # its type now; its length once n is known
        values["seed"] = check_int("seed", values["seed"], minimum=0)
        values["retries"] = check_int("retries", values["retries"], minimum=0)
        for name in ("local_workers", "panel_rows"):
            if values[name] is not None:
                values[name] = check_int(name, values[name], minimum=1)
        if values["layout"] not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {values['layout']!r}")
        backup = values["backup"]
        if backup is not None:
            if isinstance(backup, bool) or not isinstance(backup, numbers.Real) or backup <= 1:
                raise ValueError(f"backup must be a factor > 1 (e.g. 3.0), got {backup!r}")
            values["backup"] = float(backup)
        if values["timeout"] is not None:
            values["timeout"] = check_positive("timeout", values["timeout"])
        return cls(**values)

    def make_code(self, k: int) -> ErasureCode:
        """The code for ``k`` data blocks.

        ``systematic=None`` (the default) makes a polar code systematic where its parity
        runs in the gaps, in the driver layout (threads, executors, Lambda), and not in the
        cluster layout, whose parity still runs beside the data tasks.
        """
        systematic = self.systematic
        if systematic is None:
            systematic = not use_cluster_layout(self)
        return make_code(
            self.code, k, n=self.n, redundancy=self.redundancy,
            straggler_prob=self.straggler_prob, runtimes=self.runtimes, systematic=systematic,
        )


def coded_matmul(
    A: Any,
    B: Any,
    *,
    code: str | ErasureCode | None = None,
    n: int | None = None,
    k: int | None = None,
    redundancy: float | None = None,
    straggler_prob: float | None = None,
    runtimes: Any = None,
    systematic: bool | None = None,
    executor: Any = None,
    stragglers: Any = None,
    seed: int | None = None,
    retries: int | None = None,
    backup: float | None = None,
    timeout: float | None = None,
    local_workers: int | None = None,
    panel_rows: int | None = None,
    layout: str | None = None,
) -> da.Array:
    """``A @ B`` as a lazy Dask array computed by a coded, straggler-resilient job.

    The ``k`` row blocks of ``A`` are encoded into ``n`` coded blocks (for polar codes a
    butterfly of block additions, as graph tasks); the ``n`` products ``X_j @ B`` run
    concurrently, and the job decodes ``A @ B`` as soon as the results received are
    decodable, cancelling the rest.

    Parameters
    ----------
    A : dask array, numpy array or array-like, shape (m, p)
        Its row chunks are the data blocks, encoded in the product's dtype (cast first when
        ``A``'s dtype is narrower: integer, boolean or lower precision).
    B : dask array, numpy array or array-like, shape (p, q)
        ``A @ B`` must have a floating or complex dtype (numpy's type promotion).
    code : str or ErasureCode
        ``"polar"`` (default, from ``polar.code``), ``"mds"``, ``"replication"``,
        ``"uncoded"``, ``"local-product"``, or a code object from `dask_polar.codes`.
    n : int, optional
        Number of coded tasks (see `make_code` for the defaults).
    k : int, optional
        Number of data blocks; default: the number of row chunks of ``A``. Otherwise ``A`` is
        rechunked into ``k`` row blocks (the last padded with zeros inside the job).
    redundancy : float, optional
        ``n / k`` to aim for (``polar.redundancy``, default 2).
    straggler_prob, runtimes : optional
        Polar code design: straggler probability, or runtime samples / a model with
        ``cdf``/``ppf`` (computational polarization).
    systematic : bool, optional
        Polar codes only (``polar.systematic``; default None: True in the driver layout,
        False in the cluster layout). With True, ``k`` coded tasks are plain products of
        ``A``'s own row blocks: they run first, with no encode before them; each parity
        task encodes its own few blocks and runs only in the gaps (idle cores, a failed
        task; at low priority where the backend has priorities). When every data block's
        own product arrives nothing is decoded, and otherwise the parity results decode
        only the blocks that are missing. The cluster layout does not run its parity in
        the gaps yet, so there the butterfly (``False``) is cheaper.
    executor : concurrent.futures.Executor, optional
        Run the coded tasks there (e.g. a `LambdaExecutor`), for jobs driven locally.
        Default: a thread pool with one thread per coded task, or the cluster when the
        graph runs on dask.distributed.
    stragglers : Faults, RuntimeModel or array of shape (n,), optional
        Inject faults into the coded tasks (testing and benchmarks): a
        `dask_polar.stragglers.Faults` (delays spent cooperatively, blocking or as a slow
        node, and tasks that always fail), or a model from `dask_polar.stragglers`, drawn
        with ``seed`` (re-runs and backup copies get fresh draws), or the delays in seconds
        (re-runs get none), which mean ``Faults(stragglers)``. Off by default.
    seed : int
        Seed of the straggler draws; with the same seed, task ``j`` gets the same delay in
        every method, so methods compare on identical draws.
    retries : int, optional
        Re-submissions of a failed task (``polar.retries``), made as soon as the results
        received and still pending cannot be decodable without it.
    backup : float, optional
        Speculative backup copies (cubed's rule): once half the tasks have finished, a task
        running longer than ``backup`` times their median gets a copy; the first copy to
        finish wins. With ``code="uncoded"`` this is the backup-task baseline.
    timeout : float, optional
        Seconds from the coded job's start to collect a decodable set of results
        (``polar.timeout``; default None: no limit). When it passes, the job cancels its
        pending tasks and raises `dask_polar.CodedJobTimeout`.
    local_workers : int, optional
        Threads for a locally driven job (``polar.local-workers``; default n).
    panel_rows : int, optional
        Rows per panel between cancel checks in a work task (``polar.panel-rows``; default
        an eighth of a block, at least 128 rows: BLAS is slow on small panels).
    layout : {"auto", "cluster", "driver"}, optional
        How the job is laid out (``polar.layout``). ``"cluster"``: every step is a graph
        task where its data lives, for dask.distributed (no task gathers the coded blocks
        or the results; decoding runs as row-panel tasks). ``"driver"``: one driving task
        runs the coded tasks on its own threads, an ``executor``, or the cluster.
        ``"auto"`` (default) takes ``"cluster"`` when a distributed client is the
        scheduler and neither ``executor`` nor ``backup`` is given.

    Returns
    -------
    dask.array.Array of shape (m, q)
        With ``A``'s row chunks, ``B``'s column chunks and numpy's ``A @ B`` dtype.

    Raises
    ------
    TypeError
        Non-array inputs, masked or sparse arrays (any chunk type but ``numpy.ndarray``),
        an integer or boolean product (decoding would not stay exact), a bad ``code`` type.
    ValueError
        Not 2-D, mismatched inner dimensions, unknown chunk sizes, bad ``n``/``k``/``code``,
        ``timeout <= 0``.
    dask_polar.CodedJobError
        On compute, if the coded tasks keep failing (after ``retries``) and the results
        stay undecodable; `dask_polar.CodedJobTimeout` (a subclass) if ``timeout`` passes
        first.

    Notes
    -----
    Job records (task times, results used, decodable moment, cancelled tasks) are available
    from `dask_polar.last_job` after the computation.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> A = da.random.default_rng(0).random((800, 60), chunks=(100, 60))
    >>> B = np.ones((60, 3))
    >>> C = coded_matmul(A, B)               # k = 8 row blocks, n = 16 polar-coded tasks
    >>> np.allclose(C.compute(), A.compute() @ B)
    True
    """
    options = CodedOptions.resolve(
        code=code, n=n, redundancy=redundancy, straggler_prob=straggler_prob,
        runtimes=runtimes, systematic=systematic, executor=executor, stragglers=stragglers,
        seed=seed, retries=retries, backup=backup, timeout=timeout,
        local_workers=local_workers, panel_rows=panel_rows, layout=layout,
    )
    A = _as_matrix("A", A)
    B = _as_matrix("B", B)
    # an integer or boolean operand is fine when the product is floating: A's blocks are
    # encoded in the product's dtype, and B's integers are exact in it
    check_dtype(f"A @ B (A {A.dtype}, B {B.dtype})", np.result_type(A.dtype, B.dtype))
    if A.shape[1] != B.shape[0]:
        raise ValueError(
            f"A and B do not align: A has shape {A.shape}, B has shape {B.shape} "
            f"({A.shape[1]} != {B.shape[0]})"
        )
    m = A.shape[0]
    if k is None:
        k = A.numblocks[0]
    k = check_int("k", k, minimum=1)
    if k > max(m, 1):
        raise ValueError(f"k must be <= the number of rows of A ({m}), got {k}")
    the_code = options.make_code(k)
    faults = fault_plan(options.stragglers, the_code.n, options.seed)

    row_chunks = A.chunks[0] if k == A.numblocks[0] else _split(m, k)
    A2 = A.rechunk((row_chunks, (A.shape[1],)))
    B2 = B.rechunk(((B.shape[0],), B.chunks[1]))
    dtype = np.result_type(A.dtype, B.dtype)
    token = tokenize(A2.name, B2.name, repr(the_code), getattr(the_code, "info_set", None),
                     faults, options)
    out_name = f"coded-matmul-{token}"
    a_keys = [(A2.name, i, 0) for i in range(len(row_chunks))]
    layer = product_layer(
        [[key] for key in a_keys], [[(B2.name, 0, c) for c in range(B2.numblocks[1])]],
        row_chunks, B2.chunks[1], dtype, the_code, faults, options, out_name, token,
        a_dtype=A.dtype, inner=A.shape[1], homes=_persisted_homes(A2, a_keys),
    )
    graph = HighLevelGraph.from_collections(out_name, layer, dependencies=[A2, B2])
    result = da.Array(graph, out_name, chunks=(row_chunks, B2.chunks[1]), dtype=dtype)
    # computed as it is, the product's annotations (retries, encode placement) survive
    # Dask's fusion; an array derived from it keeps them under `enable` (its optimizer)
    result.__dask_optimize__ = _optimize_keeping_annotations
    if row_chunks != A.chunks[0]:
        result = result.rechunk((A.chunks[0], B.chunks[1]))
    return result


def data_block_layer(
    a_keys: list[list[Any]], row_chunks: tuple[int, ...], token: str, dtype: np.dtype | None
) -> tuple[dict[Any, Task], list[Any]]:
    """The tasks that make ``A``'s row blocks the code's data blocks, and their keys.

    A row block chunked along the inner axis is concatenated, shorter blocks are padded
    with zero rows (all blocks share one shape), and with ``dtype`` every block is cast to
    it; a block that needs none of this is used as it is (no task).
    """
    layer: dict[Any, Task] = {}
    block_rows = max(row_chunks)
    data_keys = []
    for i, (row, rows) in enumerate(zip(a_keys, row_chunks)):
        key = row[0]
        if len(row) > 1:  # A chunked along the inner axis: one row block is their concatenation
            key = (f"polar-rows-{token}", i)
            layer[key] = Task(key, np.concatenate, List(*map(TaskRef, row)), axis=1, dtype=dtype)
        elif dtype is not None and rows == block_rows:
            key_cast = (f"polar-cast-{token}", i)
            layer[key_cast] = Task(key_cast, _tasks.pad_rows, TaskRef(key), block_rows, dtype)
            key = key_cast
        if rows != block_rows:
            pad = (f"polar-pad-{token}", i)
            layer[pad] = Task(pad, _tasks.pad_rows, TaskRef(key), block_rows, dtype)
            key = pad
        data_keys.append(key)
    return layer, data_keys


def encode_layer(
    a_keys: list[list[Any]],
    row_chunks: tuple[int, ...],
    code: ErasureCode,
    token: str,
    *,
    work: np.dtype,
    inner: int,
    cast: bool = True,
    rhs_key: Any = None,
    stages_per_task: int = STAGES_PER_TASK,
    homes: list[str | None] | None = None,
) -> EncodedBlocks:
    """Tasks that encode ``A``'s row blocks (see `EncodedBlocks`).

    ``a_keys[i][j]`` is the key of ``A``'s block ``(i, j)``; a row block chunked along the
    inner axis is concatenated first, and shorter blocks are padded with zero rows so that
    all coded blocks share one shape. With ``cast`` the blocks are cast to the ``work``
    dtype first: the butterfly's sums must be taken in the product's dtype (summing bool
    blocks is an OR, integer blocks wrap, float32 blocks round a float64 product). Each
    block's magnitude is measured where it lives, and one small task derives the scale
    factors (`dask_polar.array._scaling`) from them and, given ``rhs_key``, from ``B``'s.
    ``homes[i]`` is the worker holding data block ``i``, if known: each encode task is then
    placed on the worker that is to hold its coded position (see `coded_block_owners`).
    """
    layer, data_keys = data_block_layer(a_keys, row_chunks, token, work if cast else None)
    stats_name = f"polar-stats-{token}"
    for i, key in enumerate(data_keys):
        layer[(stats_name, i)] = Task((stats_name, i), block_stats, TaskRef(key))
    scales_key = f"polar-scales-{token}"
    rhs_stats: Any = (None, True)
    if rhs_key is not None:
        rhs_stats = TaskRef(rhs_stats_key := f"polar-rhs-stats-{token}")
        layer[rhs_stats_key] = Task(rhs_stats_key, block_stats, TaskRef(rhs_key))
    layer[scales_key] = Task(
        scales_key, job_scales, np.dtype(work), code.n, inner,
        List(*[TaskRef((stats_name, i)) for i in range(len(data_keys))]), rhs_stats,
    )
    placement: dict[Any, str] = {}
    for i, home in enumerate(homes or ()):
        # a block's own tasks (cast, padding, statistics) run where the block is
        for key in (data_keys[i], (stats_name, i)):
            if home is not None and key in layer:
                placement[key] = home
    coded_keys, sources = _encode_graph(
        code, data_keys, f"polar-encode-{token}", layer, TaskRef(scales_key), stages_per_task,
        homes, placement,
    )
    return EncodedBlocks(layer, coded_keys, sources, data_keys, scales_key, placement)


def product_layer(
    a_keys: list[list[Any]],
    b_keys: list[list[Any]],
    row_chunks: tuple[int, ...],
    col_chunks: tuple[int, ...],
    dtype: np.dtype,
    code: ErasureCode,
    faults: FaultPlan | None,
    options: CodedOptions,
    out_name: str,
    token: str,
    *,
    a_dtype: np.dtype | None,
    inner: int,
    homes: list[str | None] | None = None,
    annotations: dict[str, Any] | None = None,
    collection_annotations: dict[str, Any] | None = None,
) -> MaterializedLayer:
    """The layer of a coded product whose output blocks are ``(out_name, i, c)``.

    ``a_keys[i][j]`` and ``b_keys[j][c]`` are the keys of ``A``'s and ``B``'s blocks (row,
    inner and column block indices); ``A``'s row blocks are the ``k`` data blocks. ``dtype``
    is the product's; ``a_dtype`` is ``A``'s (None if unknown): when it differs from the
    work dtype (`work_dtype`), ``A``'s blocks are cast before encoding. ``inner`` is the
    inner dimension. Where coding cannot be exact (non-finite values), a block's product is
    computed directly (``polar-direct-*`` tasks, which return None in the usual case).

    ``homes[i]`` is the worker holding ``A``'s row block ``i`` (or None), if known: the
    encode tasks then carry ``workers`` annotations (loose) that keep the butterfly where its
    inputs are, and a polar code takes the row blocks in the order that leaves most of them
    where they are (`data_block_order`). The layer is annotated with ``retries`` (Dask's
    own retries re-run a failed task on a cluster) and then ``annotations`` (the user's,
    which win).
    """
    dtype = np.dtype(dtype)
    work = work_dtype(dtype)
    rhs_key: Any = b_keys[0][0]
    tasks: dict[Any, Task] = {}
    if len(b_keys) > 1 or len(b_keys[0]) > 1:
        rhs_key = f"polar-rhs-{token}"
        grid = List(*[List(*map(TaskRef, row)) for row in b_keys])
        tasks[rhs_key] = Task(rhs_key, np.block, grid)
    cluster = use_cluster_layout(options)
    if not cluster and _runs_systematically(code, options):
        tasks.update(
            _systematic_driver_layer(
                a_keys, rhs_key, row_chunks, col_chunks, dtype, code, faults, options,
                out_name, token, cast=a_dtype is None or np.dtype(a_dtype) != work, inner=inner,
            )
        )
        return _annotated(tasks, {}, options, annotations, collection_annotations)
    order = data_block_order(code, homes) if cluster else None
    if order is not None:  # data block m is A's row block order[m], on its position's worker
        a_keys = [a_keys[i] for i in order]
        row_chunks = tuple(row_chunks[i] for i in order)
        homes = [homes[i] for i in order]  # type: ignore[index]
    encoded = encode_layer(
        a_keys, row_chunks, code, token, work=work, inner=inner,
        cast=a_dtype is None or np.dtype(a_dtype) != work, rhs_key=rhs_key,
        # on a cluster every butterfly input may sit on another worker: radix 2 moves least
        stages_per_task=1 if cluster else STAGES_PER_TASK, homes=homes if cluster else None,
    )
    tasks.update(encoded.layer)
    direct_name = f"polar-direct-{token}"
    for i, key in enumerate(encoded.data_keys):
        tasks[(direct_name, i)] = Task(
            (direct_name, i), _tasks.direct_product, TaskRef(encoded.scales_key), i,
            TaskRef(key), TaskRef(rhs_key),
        )
        if cluster and homes and homes[i] is not None:
            encoded.placement[(direct_name, i)] = homes[i]
    plan = ProductPlan(
        code=code, token=token, encoded=encoded, rhs_key=rhs_key, row_chunks=tuple(row_chunks),
        col_chunks=tuple(col_chunks), dtype=dtype, work=np.dtype(work), faults=faults,
        options=options, out_name=out_name, homes=None if homes is None else tuple(homes),
        order=None if order is None else tuple(order),
    )
    placement: dict[Any, str] = {}
    priorities: dict[Any, int] = {}
    if cluster:
        tasks, placement = cluster_layer(tasks, plan)
        priorities = _parity_priorities(tasks, code, token)
    else:
        _driver_layer(tasks, plan)
    return _annotated(tasks, placement, options, annotations, collection_annotations, priorities)


def _parity_priorities(tasks: dict[Any, Task], code: ErasureCode, token: str) -> dict[Any, int]:
    """A systematic code's parity tasks in the cluster layout (its encode, work and result
    panels) -> a lower scheduler priority: where workers are scarce the data blocks' own
    products run first (and the parity's work tasks, once the job is decodable, return at
    once)."""
    layout = SystematicLayout.of(code)
    if layout is None:
        return {}
    names = {f"polar-encode-{token}", f"polar-work-{token}", f"polar-result-{token}"}
    return {
        key: -1 for key in tasks
        if isinstance(key, tuple) and key[0] in names and key[1] in layout.parity
    }


def _annotated(
    tasks: dict[Any, Task], placement: dict[Any, str], options: CodedOptions,
    annotations: dict[str, Any] | None, collection_annotations: dict[str, Any] | None,
    priorities: dict[Any, int] | None = None,
) -> MaterializedLayer:
    """The product's layer, annotated with its retries, its placement, its tasks'
    ``priorities`` and the user's ``annotations`` (which win)."""
    layer_annotations: dict[str, Any] = {"retries": options.retries}
    if priorities:
        layer_annotations["priority"] = priorities.get
    if placement:
        # evaluated per key where the graph is packed; None (the other keys) is no annotation
        layer_annotations["workers"] = placement.get
        layer_annotations["allow_other_workers"] = dict.fromkeys(placement, True).get
    layer_annotations.update(annotations or {})
    return MaterializedLayer(
        tasks, annotations=layer_annotations, collection_annotations=collection_annotations
    )


def _driver_layer(layer: dict[Any, Task], plan: ProductPlan) -> None:
    """Add the driver layout's tasks to ``layer`` (which holds the encode and
    ``polar-direct-<token>`` tasks): one driving task that runs the work and decodes, and
    the output blocks cut from its result."""
    encoded, options, token = plan.encoded, plan.options, plan.token
    scales = TaskRef(encoded.scales_key)
    spec = _tasks.CodedJobSpec(
        token=token, code=plan.code, coded_keys=encoded.coded_keys, sources=encoded.sources,
        rhs_key=plan.rhs_key, block_rows=plan.block_rows, dtype=plan.work,
        run=_tasks.JobRun.of(options, plan.faults),
    )
    decode_key = f"polar-decode-{token}"
    layer[decode_key] = Task(
        decode_key, _tasks.drive, spec, scales, TaskRef(plan.rhs_key),
        *map(TaskRef, encoded.coded_keys.values()),
    )
    col_bounds = plan.col_bounds
    for i, rows in enumerate(plan.row_chunks):
        for c in range(len(plan.col_chunks)):
            key = (plan.out_name, i, c)
            layer[key] = Task(
                key, _tasks.take, TaskRef(decode_key), scales,
                TaskRef((f"polar-direct-{token}", i)), i, rows, col_bounds[c],
                col_bounds[c + 1], plan.dtype,
            )


def _runs_systematically(code: ErasureCode, options: CodedOptions) -> bool:
    """Whether a driver-layout product runs its data blocks as plain products first
    (`dask_polar.array._systematic`): every data block is a coded block as it is, and the
    results come back to the driver (an executor that keeps them remotely, such as the
    Lambda executor's ``decode="function"``, decodes pre-encoded blocks)."""
    if getattr(options.executor, "remote_results", None) is not None:
        if getattr(options.executor, "decode", None) != "client":
            return False
    return SystematicLayout.of(code) is not None


def _systematic_driver_layer(
    a_keys: list[list[Any]], rhs_key: Any, row_chunks: tuple[int, ...],
    col_chunks: tuple[int, ...], dtype: np.dtype, code: ErasureCode, faults: FaultPlan | None,
    options: CodedOptions, out_name: str, token: str, *, cast: bool, inner: int,
) -> dict[Any, Task]:
    """The driver layout of a systematic code: the data blocks (no encode, no statistics),
    one driving task (`drive_systematic`) and the output blocks cut from its result."""
    work = work_dtype(dtype)
    layer, data_keys = data_block_layer(a_keys, row_chunks, token, work if cast else None)
    spec = SystematicJobSpec(
        token=token, code=code, data_keys=data_keys, rhs_key=rhs_key,
        block_rows=max(row_chunks), inner=inner, dtype=work,
        run=_tasks.JobRun.of(options, faults),
    )
    decode_key = f"polar-decode-{token}"
    layer[decode_key] = Task(
        decode_key, drive_systematic, spec, TaskRef(rhs_key), *map(TaskRef, data_keys)
    )
    col_bounds = np.concatenate([[0], np.cumsum(col_chunks)]).tolist()
    for i, rows in enumerate(row_chunks):
        for c in range(len(col_chunks)):
            key = (out_name, i, c)
            layer[key] = Task(
                key, _tasks.take_block, TaskRef(decode_key), i, rows, col_bounds[c],
                col_bounds[c + 1], dtype,
            )
    return layer


def _optimize_keeping_annotations(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """The configured array optimizer (``array_optimize``), keeping layer annotations."""
    return keep_annotations(da.Array.__dask_optimize__, dsk, keys, **kwargs)


def _persisted_homes(array: da.Array, keys: list[Any]) -> list[str | None] | None:
    """The worker holding each of ``keys``, if ``array`` is persisted on a cluster.

    Waits for the blocks (the product needs them anyway) to learn where they live; None
    when any block is not a future of a distributed client.
    """
    try:
        from distributed import futures_of, wait
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    futures = {future.key: future for future in futures_of(array)}
    if not keys or any(key not in futures for key in keys):
        return None
    blocks = [futures[key] for key in keys]
    wait(blocks)
    who_has = blocks[0].client.who_has(blocks)
    return [min(who_has.get(key) or [None], key=str) for key in keys]


def use_cluster_layout(options: CodedOptions) -> bool:
    """Whether a product is laid out as cluster tasks (`dask_polar.array._cluster`).

    ``layout="auto"`` chooses it when the graph will run on dask.distributed (a default
    client, or ``polar.layout: cluster`` set on a remote scheduler by
    `dask_polar.preload`), unless the job needs its driver: an ``executor`` or ``backup``
    copies, which a driving task submits as it goes.
    """
    if options.layout != "auto":
        return options.layout == "cluster"
    if options.executor is not None or options.backup is not None:
        return False
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)  # Client.get of a default client
    return type(owner).__module__.split(".")[0] == "distributed"


def _split(m: int, k: int) -> tuple[int, ...]:
    """``m`` rows in ``k`` blocks of ``ceil(m / k)`` rows, the last one shorter."""
    size = -(-m // k)
    sizes = [size] * (m // size) + ([m % size] if m % size else [])
    if len(sizes) != k:
        # e.g. m=10, k=4: ceil gives 3,3,3,1; fewer full blocks than k needs balancing
        base, extra = divmod(m, k)
        sizes = [base + 1] * extra + [base] * (k - extra)
    return tuple(sizes)



def _encode_graph(
    code: ErasureCode,
    data_keys: list[Any],
    name: str,
    layer: dict[Any, Task],
    scales: TaskRef,
    stages_per_task: int,
    homes: list[str | None] | None = None,
    placement: dict[Any, str] | None = None,
) -> tuple[dict[int, Any], dict[int, int]]:
    """Add the encode tasks to ``layer``; return coded index -> key (zero blocks left out)
    and coded index -> the data block it is as it is (or -1).

    With ``homes`` (data block -> worker), ``placement`` receives encode task -> worker: the
    worker that is to hold its output position (`coded_block_owners`).
    """
    owners = coded_block_owners(code, homes)
    if placement is None or owners is None:
        placement = {}  # not asked for, or not known: the scheduler decides
    if is_butterfly(code):
        # The butterfly x[a] += x[a + half], stages_per_task stages at a time: one task sums
        # the inputs that agree with its output outside the stages' bits and are a bitwise
        # superset inside them. Fewer dependent stages means fewer scheduler round trips,
        # more inputs per task more transfers; zero blocks stay symbolic (no task).
        current: list[tuple[Any, int] | None] = [None] * code.n
        for i, position in enumerate(code.info_set):
            current[position] = (data_keys[i], i)
        depth = code.n.bit_length() - 1
        for stage, top in enumerate(range(depth, 0, -stages_per_task)):
            low = max(top - stages_per_task, 0)
            bits = ((1 << top) - 1) ^ ((1 << low) - 1)  # the chunk's bits of the index
            following: list[tuple[Any, int] | None] = []
            for j in range(code.n):
                inner = j & bits
                positions = [
                    (j & ~bits) | sup
                    for sup in range(inner, bits + 1)
                    if sup & bits == sup and sup & inner == inner
                ]
                terms = [current[p] for p in positions if current[p] is not None]
                if len(terms) <= 1:
                    following.append(terms[0] if terms else None)
                    continue
                key = (name, stage, j)
                sources = tuple(source for _, source in terms)
                layer[key] = Task(
                    key, _tasks.add, scales, sources, *(TaskRef(k) for k, _ in terms)
                )
                following.append((key, -1))
                if owners:
                    placement[key] = owners[j]
            current = following
        coded = {j: term for j, term in enumerate(current) if term is not None}
        return {j: key for j, (key, _) in coded.items()}, {j: s for j, (_, s) in coded.items()}
    # a dense code, or a systematic polar code: its data positions are the data blocks as
    # they are, and each parity block one sum over the few data blocks its row uses
    keys: dict[int, Any] = {}
    sources: dict[int, int] = {}
    generator = code.generator
    for j, row in enumerate(generator):
        used = np.flatnonzero(row)
        if used.size == 1 and row[used[0]] == 1:
            keys[j], sources[j] = data_keys[used[0]], int(used[0])
        elif used.size:
            key = (name, j)
            layer[key] = Task(
                key, _tasks.combine, row[used], scales, tuple(int(i) for i in used),
                *[TaskRef(data_keys[i]) for i in used],
            )
            keys[j], sources[j] = key, -1
            if owners:
                placement[key] = owners[j]
    return keys, sources
