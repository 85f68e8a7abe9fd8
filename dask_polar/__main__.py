"""Command line: ``python -m dask_polar demo``."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dask_polar", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compare the codes on random blocks with stragglers")
    demo.add_argument("--k", type=int, default=64, help="data blocks (default 64)")
    demo.add_argument("--n", type=int, default=128, help="coded blocks (default 128)")
    demo.add_argument("--trials", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "demo":
        from .demo import codes_demo

        codes_demo(k=args.k, n=args.n, trials=args.trials, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
