"""``python -m dask_polar simulate``: the simulator from the command line.

Example::

    python -m dask_polar simulate --workers 1024 --trials 100 --model lambda \\
        --param tail_prob=0.05 --json out.json --plot polarization.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .._validation import cli_int, cli_writable_path
from ..stragglers import Bimodal, Pareto, RuntimeModel, ShiftedExponential
from .core import MAX_WORKERS, METHODS, simulate
from .models import Heterogeneity, LambdaLike

__all__ = ["MODELS", "add_parser", "make_model", "run"]

logger = logging.getLogger(__name__)

#: Model names on the command line -> (class, default parameters): task times around 1 s
MODELS: dict[str, tuple[type[RuntimeModel], dict[str, float]]] = {
    "shifted-exponential": (ShiftedExponential, {"shift": 1.0, "scale": 0.2}),
    "pareto": (Pareto, {"shift": 1.0, "scale": 0.1, "alpha": 1.5}),
    "bimodal": (Bimodal, {"base": 1.0, "slow_prob": 0.05, "slowdown": 5.0, "jitter": 0.1}),
    "lambda": (LambdaLike, {}),
}


def make_model(name: str, params: dict[str, float] | None = None) -> RuntimeModel:
    """A runtime model from its command-line name and parameter overrides.

    Examples
    --------
    >>> make_model("pareto", {"alpha": 2.0})
    Pareto(shift=1.0, scale=0.1, alpha=2.0)
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    cls, defaults = MODELS[name]
    try:
        return cls(**{**defaults, **(params or {})})
    except TypeError as err:  # an unknown parameter name
        raise ValueError(f"bad parameter for model {name!r}: {err}") from err


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number") from None


def _groups(text: str) -> tuple[int, float, float]:
    parts = text.split(":")
    try:
        size, prob, factor = int(parts[0]), float(parts[1]), float(parts[2])
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"expected SIZE:PROB:FACTOR (e.g. 8:0.05:4), got {text!r}"
        ) from None
    return size, prob, factor


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to an argparse subparsers object."""
    parser = sub.add_parser(
        "simulate",
        help="simulate coded jobs on many workers (no cluster needed)",
        description="Latency of uncoded, backup, replication, local product, MDS and polar "
        "jobs on simulated workers; prints median/p99 per method, ratios to uncoded and "
        "results needed / k.",
    )
    parser.add_argument("--workers", type=cli_int(1, MAX_WORKERS), default=1024,
                        help="pool size N = polar/MDS n, a power of two (default 1024)")
    parser.add_argument("--k", type=cli_int(1), default=None, help="data blocks (default N/2)")
    parser.add_argument("--trials", type=cli_int(1), default=100)
    parser.add_argument("--model", choices=sorted(MODELS), default="shifted-exponential",
                        help="task-time model (default shifted-exponential, shift=1 scale=0.2)")
    parser.add_argument("--param", type=_param, action="append", default=[],
                        metavar="NAME=VALUE", help="model parameter (repeatable), e.g. scale=0.5")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--seed", type=cli_int(0), default=0)
    parser.add_argument("--block-bytes", type=cli_int(0), default=8192,
                        help="bytes of one result block, for the decode costs (default 8192)")
    parser.add_argument("--no-costs", action="store_true", help="ignore encode/decode costs")
    parser.add_argument("--exact-trials", type=cli_int(1), default=None,
                        help="run polar (inactivation) on this many trials only")
    parser.add_argument("--straggler-prob", type=float, default=None,
                        help="polar design straggler probability (default: per decoder)")
    parser.add_argument("--speed-spread", type=float, default=0.0,
                        help="log-normal sigma of fixed per-worker speed factors")
    parser.add_argument("--slow-groups", type=_groups, default=None, metavar="SIZE:PROB:FACTOR",
                        help="groups of SIZE workers slow down by FACTOR with probability PROB")
    parser.add_argument("--strided", action="store_true",
                        help="groups take every (N/SIZE)-th worker instead of contiguous runs")
    parser.add_argument("--json", type=cli_writable_path, default=None, metavar="PATH",
                        help="write the results as JSON")
    parser.add_argument("--plot", type=cli_writable_path, default=None, metavar="PATH",
                        help="write the polarization plot of the model (needs matplotlib)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the ``simulate`` subcommand; print the table (and write JSON / the plot)."""
    from .costs import CostModel

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    heterogeneity = None
    try:
        model = make_model(args.model, dict(args.param))
        if args.speed_spread or args.slow_groups:
            size, prob, factor = args.slow_groups or (1, 0.0, 1.0)
            heterogeneity = Heterogeneity(
                speed_spread=args.speed_spread, group_size=size, group_slow_prob=prob,
                group_slowdown=factor, layout="strided" if args.strided else "contiguous",
            )
        result = simulate(
            model, workers=args.workers, k=args.k, trials=args.trials, methods=methods,
            seed=args.seed, heterogeneity=heterogeneity, block_bytes=args.block_bytes,
            cost=CostModel.free() if args.no_costs else None, exact_trials=args.exact_trials,
            straggler_prob=args.straggler_prob,
        )
    except (TypeError, ValueError) as err:  # bad arguments: say which, without a traceback
        print(f"python -m dask_polar simulate: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{result.workers} workers, k={result.k}, {result.trials} trials, model {result.model}"
        + (f", {heterogeneity}" if heterogeneity else "")
    )
    print(result.table())
    spent = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.seconds.items())
    print(f"simulated in: {spent}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result.to_dict(), out, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            import matplotlib
        except ImportError as err:
            raise ImportError("--plot needs matplotlib: pip install dask_polar[plot]") from err
        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt

        from .polarization import plot_polarization

        fig = plot_polarization(model, args.workers, path=args.plot)
        plt.close(fig)
        print(f"wrote {args.plot}")
    return 0
