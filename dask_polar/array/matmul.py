"""``coded_matmul(A, B)``: a coded, straggler-resilient ``A @ B`` as a lazy Dask array.

`product_layer` lays one product out: its encode (`dask_polar.array._encode`), then the
cluster layout (`dask_polar.array._cluster`) or the driver layout
(`dask_polar.array._driver`); the options are `dask_polar.array._options`.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import List, Task, TaskRef

from .._validation import check_int
from ..codes import ErasureCode
from ..codes._base import check_dtype
from ..stragglers.faults import fault_plan
from . import _tasks
from ..jobs import note_plan
from ._annotations import keep_annotations
from ._auto import plain_layer, plan_product
from ._cluster import cluster_layer
from ._cluster_systematic import systematic_cluster_layer
from ._driver import driver_layer, runs_systematically, systematic_driver_layer
from ._encode import STAGES_PER_TASK, encode_layer
from ._options import CodedOptions, as_matrix, make_code, split_rows, use_cluster_layout
from ._placement import data_block_order
from ._plan import EncodedBlocks, ProductPlan, ProductSpec
from ._systematic import SystematicLayout

__all__ = [
    "CodedOptions", "EncodedBlocks", "ProductSpec", "coded_matmul", "encode_layer", "make_code",
    "product_layer",
]


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
    B : dask array, numpy array or array-like, shape (p, q) or (p,)
        ``A @ B`` must have a floating or complex dtype (numpy's type promotion). A vector
        ``x`` gives numpy's 1-D ``A @ x``, coded as one column.
    code : str or ErasureCode
        ``"auto"`` (default, from ``polar.code``): planned per product from the stragglers
        past jobs showed (plain Dask, backup tasks, replication, systematic polar or MDS;
        see the user guide's "A code that chooses itself"); ``"polar"``, ``"mds"``,
        ``"replication"``, ``"uncoded"``, ``"local-product"``, or a code object from
        `dask_polar.codes`. With ``n``, ``straggler_prob``, ``runtimes``, ``systematic``, an
        ``executor`` or faults injected per task, ``"auto"`` runs polar.
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
        Polar codes only (``polar.systematic``; default None: True). With True, ``k`` coded
        tasks are plain products of ``A``'s own row blocks: they run first, with no encode
        before them; each parity task encodes its own few blocks and runs only in the gaps
        (idle cores, a late or failed task). When every data block's own product arrives
        nothing is decoded, and otherwise the parity results decode only the blocks that
        are missing. False: the butterfly, all ``n`` tasks at once after an encode.
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
    dask.array.Array of shape (m, q), or (m,) for a vector ``B``
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
    A = as_matrix("A", A)
    vector = np.ndim(B) == 1
    B = as_matrix("B", B, vector=True)  # a vector x: A @ x, coded as one column
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
    row_chunks = A.chunks[0] if k == A.numblocks[0] else split_rows(m, k)
    A2 = A.rechunk((row_chunks, (A.shape[1],)))
    B2 = B.rechunk(((B.shape[0],), B.chunks[1]))
    dtype = np.result_type(A.dtype, B.dtype)
    a_keys = [(A2.name, i, 0) for i in range(len(row_chunks))]
    b_keys = (tuple((B2.name, 0, c) for c in range(B2.numblocks[1])),)
    planned, given = None, options
    if options.code == "auto":
        options, planned = plan_product(
            options, k=k, rows=max(row_chunks), inner=A.shape[1], cols=B.shape[1],
            itemsize=np.dtype(dtype).itemsize,
        )
    if options is None:  # plain Dask's product is the fastest: timed, for the statistics
        faults = fault_plan(given.stragglers, k, given.seed)
        token = tokenize(A2.name, B2.name, "plain", faults)
        out_name = f"plain-matmul-{token}"
        layer = plain_layer(tuple((key,) for key in a_keys), b_keys, out_name, token, faults, dtype)
    else:
        the_code = options.make_code(k)
        faults = fault_plan(options.stragglers, the_code.n, options.seed)
        token = tokenize(A2.name, B2.name, repr(the_code), getattr(the_code, "info_set", None),
                         faults, options)
        out_name = f"coded-matmul-{token}"
        homes = _persisted_homes(A2, a_keys)
        layer = product_layer(ProductSpec(
            a_keys=tuple((key,) for key in a_keys), b_keys=b_keys,
            row_chunks=tuple(row_chunks), col_chunks=tuple(B2.chunks[1]), dtype=np.dtype(dtype),
            a_dtype=A.dtype, inner=A.shape[1], code=the_code, faults=faults, options=options,
            out_name=out_name, token=token, homes=None if homes is None else tuple(homes),
        ))
    if planned is not None:
        note_plan(token, planned.to_dict())
    graph = HighLevelGraph.from_collections(out_name, layer, dependencies=[A2, B2])
    result = da.Array(graph, out_name, chunks=(row_chunks, B2.chunks[1]), dtype=dtype)
    # computed as it is, the product's annotations (retries, encode placement) survive
    # Dask's fusion; an array derived from it keeps them under `enable` (its optimizer)
    result.__dask_optimize__ = _optimize_keeping_annotations
    if row_chunks != A.chunks[0]:
        result = result.rechunk((A.chunks[0], B.chunks[1]))
    if vector:  # numpy's A @ x is 1-D
        result = result[:, 0]
        result.__dask_optimize__ = _optimize_keeping_annotations
    return result


def product_layer(
    spec: ProductSpec,
    *,
    annotations: dict[str, Any] | None = None,
    collection_annotations: dict[str, Any] | None = None,
) -> MaterializedLayer:
    """The layer of the coded product ``spec``, whose output blocks are
    ``(spec.out_name, i, c)``.

    Where coding cannot be exact (non-finite values), a block's product is computed
    directly (``polar-direct-*`` tasks, which return None in the usual case). With
    ``spec.homes`` (the worker holding each of ``A``'s row blocks) the encode tasks carry
    ``workers`` annotations (loose) that keep the butterfly where its inputs are, and a
    polar code takes the row blocks in the order that leaves most of them where they are
    (`data_block_order`). The layer is annotated with ``retries`` (Dask's own retries re-run
    a failed task on a cluster) and then ``annotations`` (the user's, which win).
    """
    code, options, token = spec.code, spec.options, spec.token
    a_keys, row_chunks, homes = list(spec.a_keys), spec.row_chunks, spec.homes
    work = spec.work
    rhs_key: Any = spec.b_keys[0][0]
    tasks: dict[Any, Task] = {}
    if len(spec.b_keys) > 1 or len(spec.b_keys[0]) > 1:
        rhs_key = f"polar-rhs-{token}"
        grid = List(*[List(*map(TaskRef, row)) for row in spec.b_keys])
        tasks[rhs_key] = Task(rhs_key, np.block, grid)
    cluster = use_cluster_layout(options)
    if cluster and SystematicLayout.of(code) is not None:
        layer, placement = systematic_cluster_layer(spec, rhs_key, homes)
        tasks.update(layer)
        return _annotated(tasks, placement, options, annotations, collection_annotations)
    if not cluster and runs_systematically(code, options):
        tasks.update(systematic_driver_layer(spec, rhs_key))
        return _annotated(tasks, {}, options, annotations, collection_annotations)
    order = data_block_order(code, homes) if cluster else None
    if order is not None:  # data block m is A's row block order[m], on its position's worker
        a_keys = [a_keys[i] for i in order]
        row_chunks = tuple(row_chunks[i] for i in order)
        homes = [homes[i] for i in order]  # type: ignore[index]
    encoded = encode_layer(
        a_keys, row_chunks, code, token, work=work, inner=spec.inner, cast=spec.cast,
        rhs_key=rhs_key,
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
        col_chunks=spec.col_chunks, dtype=spec.dtype, work=work, faults=spec.faults,
        options=options, out_name=spec.out_name, homes=None if homes is None else tuple(homes),
        order=None if order is None else tuple(order),
    )
    placement: dict[Any, str] = {}
    if cluster:
        tasks, placement = cluster_layer(tasks, plan)
    else:
        driver_layer(tasks, plan)
    return _annotated(tasks, placement, options, annotations, collection_annotations)


def _annotated(
    tasks: dict[Any, Task], placement: dict[Any, str], options: CodedOptions,
    annotations: dict[str, Any] | None, collection_annotations: dict[str, Any] | None,
) -> MaterializedLayer:
    """The product's layer, annotated with its retries, its placement and the user's
    ``annotations`` (which win)."""
    layer_annotations: dict[str, Any] = {"retries": options.retries}
    if placement:
        # evaluated per key where the graph is packed; None (the other keys) is no annotation
        layer_annotations["workers"] = placement.get
        layer_annotations["allow_other_workers"] = dict.fromkeys(placement, True).get
    layer_annotations.update(annotations or {})
    return MaterializedLayer(
        tasks, annotations=layer_annotations, collection_annotations=collection_annotations
    )


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
