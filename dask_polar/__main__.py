"""Command line: ``python -m dask_polar demo`` and ``python -m dask_polar simulate``."""

from __future__ import annotations

import argparse
import logging
import sys

from ._validation import cli_int, cli_writable_path
from .serverless import cli as serverless_cli
from .simulate import cli as simulate_cli


def configure_logging(*, verbose: bool = False) -> None:
    """Log to stderr: everything at DEBUG if ``verbose``, else warnings and dask_polar's own.

    ``logging.basicConfig`` alone would let distributed's INFO lines through (hundreds per
    demo, between its tables): distributed sets its loggers to INFO when imported and,
    seeing the root handler, propagates to it. A filter on that handler keeps them out,
    whenever distributed is imported.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        return
    for handler in root.handlers:
        if handler not in before:  # ours only: not handlers someone else installed
            handler.addFilter(_for_users)


def _for_users(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.partition(".")[0] == "dask_polar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dask_polar", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="coded A @ B with stragglers, side by side")
    demo.add_argument(
        "what", nargs="?", default="matmul", choices=["matmul", "codes", "adversarial"],
        help="matmul (default): the methods side by side; codes: the codes alone; "
        "adversarial: a black-box attack on a digit classifier with coded gradients",
    )
    demo.add_argument("--k", type=cli_int(1), default=None, help="data blocks")
    demo.add_argument("--trials", type=cli_int(1), default=None)
    demo.add_argument("--seed", type=cli_int(0), default=0)
    demo.add_argument(
        "--cluster", action="store_true",
        help="matmul: on a LocalCluster (cluster layout) instead of the threads scheduler",
    )
    demo.add_argument(
        "--plot", type=cli_writable_path, default=None,
        help="where to write the plot (default: dask_polar_demo.png; adversarial: "
        "dask_polar_adversarial.png)",
    )
    plan = sub.add_parser("plan", help="what code=\"auto\" would choose for A @ B, and why")
    plan.add_argument("--shape-a", type=cli_int(1), nargs=2, metavar=("M", "P"), required=True)
    plan.add_argument("--shape-b", type=cli_int(1), nargs=2, metavar=("P", "Q"), required=True)
    plan.add_argument("--k", type=cli_int(1), default=None, help="row blocks of A")
    plan.add_argument("--workers", type=cli_int(1), default=None,
                      help="plan for this many single-threaded workers (default: this machine's threads)")
    plan.add_argument("--dtype", default="float64", choices=["float32", "float64", "complex64", "complex128"])
    simulate_cli.add_parser(sub)
    serverless_cli.add_parser(sub)
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if args.command == "demo":
        from . import demo as demos

        options = {"seed": args.seed}
        if args.k is not None:
            options["k"] = args.k
        if args.trials is not None:
            options["trials"] = args.trials
        if args.what == "codes":
            demos.codes_demo(**options)
        elif args.what == "adversarial":
            from .blackbox.adversarial import adversarial_demo

            if "k" in options:
                parser.error("--k does not apply to the adversarial demo (k = 64 pixels)")
            adversarial_demo(plot=args.plot or "dask_polar_adversarial.png", **options)
        else:
            demos.matmul_demo(
                plot=args.plot or "dask_polar_demo.png", cluster=args.cluster, **options
            )
    elif args.command == "plan":
        from .array import plan_matmul

        if args.shape_a[1] != args.shape_b[0]:
            parser.error(f"--shape-a {args.shape_a} and --shape-b {args.shape_b} do not align")
        made = plan_matmul(tuple(args.shape_a), tuple(args.shape_b), k=args.k,
                           dtype=args.dtype, workers=args.workers)
        print(f"A {args.shape_a[0]} x {args.shape_a[1]} @ B {args.shape_b[0]} x {args.shape_b[1]} "
              f"({args.dtype}); median task {made.task_seconds * 1e3:.2f} ms, "
              f"{made.slots} plain / {made.coded_slots} coded slots, stragglers {made.stragglers}")
        print(made.table())
        print(f"chosen: {made.chosen.name} {made.chosen.options or ''}")
    elif args.command == "simulate":
        return simulate_cli.run(args)
    elif args.command == "lambda":
        return serverless_cli.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
