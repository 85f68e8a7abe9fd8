"""Run the benchmarks and write their results as JSON.

Usage: ``python -m benchmarks [--quick] [names...]``. Every module ``benchmarks/bench_<name>.py``
exposes ``run(quick: bool) -> dict``; each selected one runs (all of them when no name is given)
and its result is written to ``benchmarks/results/<name>.json`` together with a record of the
machine and the command line, since absolute times mean little without them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import STRAGGLER_MODE

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PREFIX = "bench_"


def available() -> list[str]:
    """Names of the benchmark modules, without the ``bench_`` prefix."""
    return sorted(
        info.name[len(PREFIX) :]
        for info in pkgutil.iter_modules([str(HERE)])
        if info.name.startswith(PREFIX)
    )


def machine(argv: list[str]) -> dict[str, Any]:
    """Where and how the numbers were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, "-m", "benchmarks", *argv]),
    }


def _jsonable(value: Any) -> Any:
    # benchmarks may return numpy scalars and arrays
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument(
        "names", nargs="*", metavar="name",
        help=f"benchmarks to run (default: all of {', '.join(names)})",
    )
    args = parser.parse_args(argv)
    selected = [name.removeprefix(PREFIX) for name in args.names] or names
    unknown = sorted(set(selected) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")
    RESULTS.mkdir(exist_ok=True)
    for name in selected:
        module = importlib.import_module(f"{__package__ or 'benchmarks'}.{PREFIX}{name}")
        print(
            f"=== {name} ({'quick' if args.quick else 'full'}; injected stragglers: "
            f"mode={STRAGGLER_MODE!r}) ===", flush=True,
        )
        start = time.perf_counter()
        result = module.run(quick=args.quick)
        wall = time.perf_counter() - start
        record = {
            "benchmark": name,
            "quick": args.quick,
            "straggler_mode": STRAGGLER_MODE,
            "wall_seconds": round(wall, 3),
            "machine": machine(argv),
            "results": result,
        }
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
        print(f"=== {name}: {wall:.1f} s, wrote {path.relative_to(HERE.parent)} ===", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
