"""Keep layer annotations through Dask's low-level array optimization.

Dask's array optimizer fuses linear chains of tasks after flattening the graph to one dict
(``optimization.fuse.active``, on by default), which drops every layer's annotations: a
user's ``dask.annotate(retries=...)`` and the ``workers`` placement of a coded product's
encode tasks alike never reach the scheduler. `keep_annotations` evaluates the annotations
per key before the optimizer runs and puts them back on its output, for the keys that
survive fusion (a fused chain keeps its last key, and so that key's annotations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

__all__ = ["annotations_by_key", "keep_annotations"]


def annotations_by_key(graph: HighLevelGraph) -> dict[str, dict[Any, Any]]:
    """Annotation name -> {key: value} over ``graph``'s layers (callables evaluated per key,
    None values left out: the scheduler reads None as no annotation)."""
    by_key: dict[str, dict[Any, Any]] = {}
    for layer in graph.layers.values():
        for name, value in (layer.annotations or {}).items():
            values = by_key.setdefault(name, {})
            for key in layer:
                resolved = value(key) if callable(value) else value
                if resolved is not None:
                    values[key] = resolved
    return {name: values for name, values in by_key.items() if values}


def keep_annotations(
    optimizer: Callable[..., Any], dsk: Any, keys: Any, **kwargs: Any
) -> Any:
    """``optimizer(dsk, keys, **kwargs)``, with ``dsk``'s layer annotations kept.

    Parameters
    ----------
    optimizer : callable
        A Dask array optimizer, e.g. ``dask.array.optimization.optimize``.
    dsk : HighLevelGraph or mapping
        The graph.
    keys : the output keys
    **kwargs
        Passed on to ``optimizer``.

    Returns
    -------
    The optimized graph; a one-layer `HighLevelGraph` carrying the annotations when the
    optimizer flattened an annotated graph.
    """
    if not isinstance(dsk, HighLevelGraph):
        return optimizer(dsk, keys, **kwargs)
    by_key = annotations_by_key(dsk)
    optimized = optimizer(dsk, keys, **kwargs)
    if not by_key or isinstance(optimized, HighLevelGraph):
        return optimized
    tasks = dict(optimized)
    kept = {
        name: {key: value for key, value in values.items() if key in tasks}
        for name, values in by_key.items()
    }
    # a dict's bound .get is a picklable per-key annotation (None: not annotated)
    annotations = {name: values.get for name, values in kept.items() if values}
    name = f"annotated-{id(tasks)}"
    return HighLevelGraph(
        {name: MaterializedLayer(tasks, annotations=annotations or None)}, {name: set()}
    )
