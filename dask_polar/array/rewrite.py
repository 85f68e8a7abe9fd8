"""The drop-in: a Dask array optimization that codes every eligible matrix product.

``A @ B``, ``da.matmul``, ``da.dot``, ``A.dot(B)`` and ``da.tensordot(A, B, axes=1)`` build
a Blockwise product layer (``matmul-*`` running ``_matmul``, or ``tensordot-*`` running
``_tensordot`` with ``axes=((1,), (0,))``) over blocks ``(i, j)`` of A and ``(j, c)`` of B,
followed by a reduction over ``j`` (``chunk_sum``/``sum`` layers, or a ``getitem`` when the
inner axis has one block). `optimize` replaces that chain by the tasks of a coded product
whose output layer keeps the chain's last name, keys, chunks and dtype, so every downstream
layer still finds its inputs; then it hands over to Dask's own array optimizer. It runs
before Dask's pass on purpose: blockwise fusion would merge the product with its reduction
and hide the pattern.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import dask
import dask.array.optimization
import numpy as np
from dask.base import tokenize
from dask.blockwise import Blockwise
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import Task, TaskRef
from dask.utils import key_split

from .. import config
from ..codes._base import check_dtype
from ..jobs import note_plan
from ..stragglers.faults import fault_plan
from ._annotations import keep_annotations
from ._auto import plain_layer, plan_product
from ._options import CodedOptions
from ._plan import ProductSpec
from .matmul import product_layer

__all__ = ["optimize", "enable", "disable", "coded", "enabled"]

logger = logging.getLogger("dask_polar")

# layers Dask puts between the product and its (m, q) result
_REDUCTIONS = {  # as key_split names them (it drops the leading underscore)
    "chunk_sum", "chunk_sum-partial", "chunk_sum-aggregate",
    "sum", "sum-partial", "sum-aggregate", "getitem",
}
_OPTION_NAMES = {f.replace("_", "-") for f in CodedOptions.__dataclass_fields__} | {"min-size"}


def optimize(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Code every eligible 2-D matrix product in ``dsk``, then run Dask's array optimizer.

    Use through ``dask_polar.enable()`` or ``dask.config.set(array_optimize=optimize)``.
    Options come from the ``polar.*`` config (see `enable`). Graphs it does not understand
    pass through unchanged; it never raises for them.

    Parameters
    ----------
    dsk : HighLevelGraph or mapping
    keys : the output keys
    **kwargs
        Passed on to ``dask.array.optimization.optimize``.

    Returns
    -------
    The optimized graph. Layer annotations (``dask.annotate``, the coded layers' own) are
    kept through Dask's low-level fusion, which would drop them (`keep_annotations`).
    """
    if isinstance(dsk, HighLevelGraph):
        try:
            dsk = _rewrite(dsk, keys)
        except Exception:  # a rewrite bug must never break a user's computation
            logger.exception("dask_polar: rewrite failed; computing the graph uncoded")
    return keep_annotations(dask.array.optimization.optimize, dsk, keys, **kwargs)


def _rewrite(hlg: HighLevelGraph, keys: Any) -> HighLevelGraph:
    layers = dict(hlg.layers)
    dependencies = {name: set(deps) for name, deps in hlg.dependencies.items()}
    dependents = hlg.dependents
    wanted = {key[0] if isinstance(key, tuple) else key for key in _flatten(keys)}
    changed = False
    for name, layer in hlg.layers.items():
        match = _match_product(name, layer, hlg, dependents, wanted)
        if isinstance(match, str):
            if match:
                logger.debug("dask_polar: skipping %s: %s", name, match)
            continue
        chain, a_name, b_name, out_ann = match
        shape = layer.collection_annotations["shape"]
        m, q = (*out_ann["shape"], 1)[:2]  # a matrix-vector product: one column
        p = hlg.layers[a_name].collection_annotations["shape"][1] if (
            hlg.layers[a_name].collection_annotations
        ) else None
        size = m * q * (p if p is not None else shape[1])
        if size < config.get("min-size"):
            logger.debug("dask_polar: skipping %s: m*p*q=%d below polar.min-size", name, size)
            continue
        out_name = chain[-1]
        # A's dtype, when its layer records it: otherwise its blocks are cast to be sure
        a_dtype = (hlg.layers[a_name].collection_annotations or {}).get("dtype")
        # dask.annotate(retries=, priority=, resources=) around the product: keep them
        annotations = layer.annotations or hlg.layers[out_name].annotations
        new_layer = _coded_layer(layer, a_name, b_name, out_ann, out_name, a_dtype, annotations)
        if new_layer is None:
            continue
        for removed in [name, *chain[:-1]]:
            layers.pop(removed)
            dependencies.pop(removed)
        layers[out_name] = new_layer
        dependencies[out_name] = {a_name, b_name}
        changed = True
        logger.debug("dask_polar: coded %s (%s @ %s) into %s", name, a_name, b_name, out_name)
    return HighLevelGraph(layers, dependencies) if changed else hlg


def _flatten(keys: Any) -> Iterator[Any]:
    if isinstance(keys, list):
        for key in keys:
            yield from _flatten(key)
    else:
        yield keys


def _match_product(
    name: str, layer: Any, hlg: HighLevelGraph, dependents: Mapping[str, set[str]], wanted: set
) -> tuple[list[str], str, str, dict] | str:
    """The reduction chain, A's and B's names and the output annotations, or why not.

    Returns "" for layers that are not products at all (not worth a log line).
    """
    if not isinstance(layer, Blockwise) or key_split(name) not in ("matmul", "tensordot"):
        return ""
    func = getattr(layer.task, "func", None)
    func_name = getattr(func, "__name__", "")
    if len(layer.indices) != 2 or layer.new_axes or layer.concatenate:
        return "not a two-operand product"
    (a_name, a_ind), (b_name, b_ind) = layer.indices
    out = layer.output_indices
    if a_ind is None or b_ind is None:
        return "an operand is not an array"
    # a vector B (tensordot, dot): blocks (i, j) x (j,) summed over j to the 1-D (m,)
    vector = func_name == "_tensordot" and len(a_ind) == 2 and len(b_ind) == 1
    if func_name == "_tensordot":
        if layer.task.kwargs.get("is_sparse"):
            return "sparse chunks"
        if layer.task.kwargs.get("axes") not in (((1,), (0,)), ((1,), (-1,)) if vector else ()):
            axes = layer.task.kwargs.get("axes")
            return f"tensordot over axes {axes}, not A's last with B's first"
    elif func_name != "_matmul":
        return "not a plain matmul/tensordot task"
    if vector:
        if len(out) != 2 or tuple(a_ind) != tuple(out) or tuple(b_ind) != (out[1],):
            return "contracts other axes"
    elif len(a_ind) != 2 or len(b_ind) != 2 or len(out) != 3:
        dims = f"{len(a_ind)}-D x {len(b_ind)}-D"
        return f"a batched or {dims} product (only matrix products are coded)"
    elif tuple(a_ind) != (out[0], out[1]) or tuple(b_ind) != (out[1], out[2]):
        return "contracts other axes"
    ann = layer.collection_annotations or {}
    if ann.get("chunk_type") != "numpy.ndarray":
        return f"chunks of type {ann.get('chunk_type')}"
    if a_name not in hlg.layers or b_name not in hlg.layers:
        return "operand layers not in the graph"
    if _promoted_from_1d(a_name, hlg):  # x @ A: one row block, nothing to code across
        return "a vector left operand (x @ A has a single row block to code)"
    try:
        check_dtype("product", np.dtype(ann.get("dtype")))
    except TypeError:
        return f"dtype {ann.get('dtype')} is not floating or complex"
    chain: list[str] = []
    current = name
    while True:
        following = dependents.get(current, set())
        if len(following) != 1 or current in wanted:
            return "intermediate results are used elsewhere"
        (current,) = following
        if key_split(current) not in _REDUCTIONS:
            return f"unexpected layer {current} after the product"
        chain.append(current)
        out_ann = hlg.layers[current].collection_annotations or {}
        if len(out_ann.get("shape", ())) == (1 if vector else 2):
            break
    chunks = ann.get("chunks")
    if chunks is None or any(math.isnan(c) for axis in chunks for c in axis):
        return "unknown chunk sizes"
    if tuple(out_ann.get("chunks", ())) != ((chunks[0],) if vector else (chunks[0], chunks[2])):
        return "the reduction's output does not match the product"
    return chain, a_name, b_name, out_ann


def _promoted_from_1d(name: str, hlg: HighLevelGraph) -> bool:
    """Whether ``name`` is the ``x[np.newaxis]`` that Dask's matmul adds to a 1-D operand."""
    if key_split(name) != "getitem" or len(hlg.dependencies.get(name, ())) != 1:
        return False
    (source,) = hlg.dependencies[name]
    shape = (hlg.layers[name].collection_annotations or {}).get("shape", ())
    source_shape = (hlg.layers[source].collection_annotations or {}).get("shape", ())
    return len(source_shape) == 1 and len(shape) == 2 and 1 in shape


def _coded_layer(
    layer: Blockwise, a_name: str, b_name: str, out_ann: dict, out_name: str,
    a_dtype: Any = None,
    annotations: Mapping[str, Any] | None = None,
) -> MaterializedLayer | None:
    options = CodedOptions.resolve()
    vector = len(out_ann["chunks"]) == 1
    row_chunks, col_chunks = (*out_ann["chunks"], (1,))[:2]
    rows, inner = layer.numblocks[a_name]
    a_keys = tuple(tuple((a_name, i, j) for j in range(inner)) for i in range(rows))
    if vector:  # B's blocks as one column, the product's blocks as the 1-D output's
        column = (f"polar-column-{tokenize(out_name, b_name)}", 0, 0)
        b_keys: tuple = ((column,),)
    else:
        _, cols = layer.numblocks[b_name]
        b_keys = tuple(tuple((b_name, j, c) for c in range(cols)) for j in range(inner))
    dtype = np.dtype(out_ann["dtype"])
    inner_size = int(sum(layer.collection_annotations["chunks"][1]))
    planned, given = None, options
    if options.code == "auto":
        options, planned = plan_product(
            options, k=rows, rows=max(row_chunks), inner=inner_size, cols=max(col_chunks),
            itemsize=dtype.itemsize,
        )
    if options is None:  # plain is the fastest: Dask's product, timed for the statistics
        faults = fault_plan(given.stragglers, rows, given.seed)
        token = tokenize(out_name, "plain", faults)
        product_name = f"plain-product-{token}" if vector else out_name
        coded = MaterializedLayer(
            plain_layer(a_keys, b_keys, product_name, token, faults, dtype),
            annotations=dict(annotations or {}) or None, collection_annotations=out_ann,
        )
    else:
        try:
            code = options.make_code(rows)
        except ValueError as error:  # e.g. more row blocks than polar.max-tasks: Dask's product
            logger.info("dask_polar: skipping %s: %s", out_name, error)
            return None
        faults = fault_plan(options.stragglers, code.n, options.seed)
        token = tokenize(out_name, repr(code), getattr(code, "info_set", None), faults, options)
        product_name = f"polar-product-{token}" if vector else out_name
        spec = ProductSpec(
            a_keys=a_keys, b_keys=b_keys, row_chunks=tuple(row_chunks),
            col_chunks=tuple(col_chunks), dtype=dtype, a_dtype=a_dtype, inner=inner_size,
            code=code, faults=faults, options=options, out_name=product_name, token=token,
        )
        coded = product_layer(
            spec, annotations=dict(annotations or {}), collection_annotations=out_ann
        )
    if planned is not None:
        note_plan(token, planned.to_dict())
    if not vector:
        return coded
    tasks = dict(coded.mapping)
    tasks[column] = Task(column, _as_column, *(TaskRef((b_name, j)) for j in range(inner)))
    for i in range(rows):
        key = (out_name, i)
        tasks[key] = Task(key, _first_column, TaskRef((product_name, i, 0)))
    return MaterializedLayer(
        tasks, annotations=coded.annotations, collection_annotations=out_ann
    )


def _as_column(*blocks: np.ndarray) -> np.ndarray:
    """A vector's blocks as one column: the ``B`` of a matrix-vector product."""
    return np.concatenate(blocks)[:, np.newaxis]


def _first_column(block: np.ndarray) -> np.ndarray:
    return block[:, 0]


_PREVIOUS: list[Any] = []


def enable(**options: Any) -> None:
    """Code every eligible matrix product from now on (one line turns it on).

    Parameters
    ----------
    **options
        Any of `coded_matmul`'s options (``code``, ``redundancy``, ``straggler_prob``,
        ``runtimes``, ``stragglers``, ``seed``, ``retries``, ``backup``, ``timeout``,
        ``executor``, ``local_workers``, ``panel_rows``) and ``min_size``: products with
        ``m * p * q`` below it stay as they are (``polar.min-size``, default 1e6). They are
        stored in Dask's config under ``polar.*``.

    Notes
    -----
    Under dask.distributed the graph is materialized, and so optimized, on the scheduler:
    there dask_polar must be installed and enabled too. A LocalCluster shares this process's
    config. For a remote scheduler start it with ``--preload dask_polar.preload`` (or call
    ``client.run_on_scheduler(dask_polar.enable)``).

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> import dask_polar
    >>> dask_polar.enable(min_size=0)
    >>> A = da.ones((64, 8), chunks=(8, 8))
    >>> float((A @ A.T).sum().compute())
    32768.0
    >>> dask_polar.disable()
    """
    settings = {"array_optimize": optimize, **_settings(options)}
    _PREVIOUS.append({key: dask.config.get(key, None) for key in settings})
    dask.config.set(settings)


def disable() -> None:
    """Undo the last `enable` (its optimizer and options); with none in force, a no-op."""
    if _PREVIOUS:
        dask.config.set(_PREVIOUS.pop())


def enabled() -> bool:
    """Whether the rewrite is in force."""
    return dask.config.get("array_optimize", None) is optimize


@contextlib.contextmanager
def coded(**options: Any) -> Iterator[None]:
    """Code every eligible matrix product inside the ``with`` block (options as `enable`)."""
    with dask.config.set({"array_optimize": optimize, **_settings(options)}):
        yield


def _settings(options: Mapping[str, Any]) -> dict[str, Any]:
    settings = {}
    for name, value in options.items():
        key = name.replace("_", "-")
        if key not in _OPTION_NAMES or key == "n":
            raise TypeError(f"unknown option {name!r}; expected one of {sorted(_OPTION_NAMES - {'n'})}")
        settings[f"polar.{key}"] = value
    # validate now, not inside a later compute
    with dask.config.set(settings):
        CodedOptions.resolve()
        if not isinstance(config.get("min-size"), (int, float)) or config.get("min-size") < 0:
            raise ValueError(f"min_size must be a number >= 0, got {config.get('min-size')!r}")
    return settings
