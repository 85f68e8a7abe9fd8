"""Benchmarks of dask_polar: ``python -m benchmarks [--quick] [names...]`` (see ``__main__``).

Injected stragglers are real ones by default: their delays are spent blocked in
``time.sleep`` (``Faults(mode="block")``), looking at no cancel flag, so a method finishes
early only if it does not wait for them. `straggling` wraps a runtime model that way.
"""

from __future__ import annotations

from typing import Any

#: How the benchmarks' injected delays are spent (see `dask_polar.stragglers.Faults`).
STRAGGLER_MODE = "block"


def straggling(model: Any) -> Any:
    """``model``'s delays as real stragglers (`STRAGGLER_MODE`); None stays None."""
    from dask_polar.stragglers import Faults

    return None if model is None else Faults(model, mode=STRAGGLER_MODE)
