"""``python -m dask_polar lambda {deploy,remove,local,demo}``.

Examples::

    export DASK_POLAR_LAMBDA_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')
    python -m dask_polar lambda deploy --role arn:aws:iam::123456789012:role/dask-polar-lambda
    python -m dask_polar lambda remove
    python -m dask_polar lambda local --stragglers shifted-exponential \\
        --param shift=0 --param scale=0.5
    python -m dask_polar lambda demo --workers 32
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._validation import cli_int, cli_positive
from . import config

__all__ = ["add_parser", "run"]


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``lambda`` subcommand to an ``add_subparsers()`` object."""
    from ..simulate.cli import MODELS, _param

    parser = sub.add_parser(
        "lambda", help="AWS Lambda: deploy or remove the handler, run local Lambda + S3, demo",
        description=__doc__.splitlines()[0],
    )
    actions = parser.add_subparsers(dest="action", required=True)

    deploy = actions.add_parser("deploy", help="create or update the Lambda function")
    deploy.add_argument("--function-name", default=config.DEFAULT_FUNCTION_NAME)
    deploy.add_argument("--role", help="execution role ARN (required to create the function)")
    deploy.add_argument("--timeout", type=cli_int(1, 900), default=config.DEFAULT_TIMEOUT,
                        help="seconds, <= 900")
    deploy.add_argument("--memory", type=cli_int(128, 10240), default=config.DEFAULT_MEMORY,
                        help="MB")
    deploy.add_argument("--concurrency", type=cli_int(1), help="reserved concurrency")
    deploy.add_argument("--image-uri", help="deploy this container image instead of a zip")
    deploy.add_argument("--layer", action="append", default=[], help="layer ARN (repeatable)")
    deploy.add_argument("--env", action="append", default=[], type=_assignment,
                        metavar="NAME=VALUE", help="extra environment variable (repeatable)")
    deploy.add_argument("--key-file", type=Path,
                        help=f"file holding the signing key (default: ${config.KEY_ENV})")
    deploy.add_argument("--zip", type=Path, metavar="PATH",
                        help="only build the package and write it to PATH")
    remove = actions.add_parser("remove", help="delete the Lambda function")
    remove.add_argument("--function-name", default=config.DEFAULT_FUNCTION_NAME)
    for action in (deploy, remove):
        action.add_argument("--region")
        action.add_argument("--endpoint-url", help="Lambda endpoint (or $AWS_ENDPOINT_URL_LAMBDA)")

    local = actions.add_parser("local", help="run S3 and Lambda on 127.0.0.1 until interrupted")
    local.add_argument("--s3", choices=["seaweedfs", "moto"], default="seaweedfs")
    local.add_argument("--concurrency", type=cli_int(1), default=64)
    local.add_argument("--timeout", type=cli_int(1), default=60,
                       help="the function's timeout, seconds")
    local.add_argument("--bucket", default="dask-polar")
    local.add_argument("--function-name", default=config.DEFAULT_FUNCTION_NAME)
    local.add_argument("--stragglers", choices=sorted(MODELS),
                       help="inject a delay drawn from this model into every invocation")
    local.add_argument("--param", action="append", default=[], type=_param, metavar="NAME=VALUE",
                       help="straggler model parameter (repeatable)")
    local.add_argument("--seed", type=cli_int(0), default=0)
    local.add_argument("--duration", type=cli_positive, help="stop after this many seconds")

    demo = actions.add_parser("demo", help="coded vs uncoded A @ B on local Lambda workers")
    demo.add_argument("--workers", type=cli_int(2), default=32, help="coded tasks n (k = n / 2)")
    demo.add_argument("--trials", type=cli_int(1), default=3)
    demo.add_argument("--seed", type=cli_int(0), default=0)
    demo.add_argument("--s3", choices=["seaweedfs", "moto"], default="seaweedfs")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``lambda`` command; returns the exit status (1 with a message on
    stderr if AWS or the arguments refuse it)."""
    try:
        return _run(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"python -m dask_polar lambda {args.action}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(err, (BotoCoreError, ClientError)):
            raise
        print(f"python -m dask_polar lambda {args.action}: error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.action == "deploy":
        from .deploy import build_package, deploy_function

        if args.zip is not None:
            data = build_package(args.zip)
            print(f"wrote {args.zip} ({len(data)} bytes)")
            return 0
        key = args.key_file.read_text().strip() if args.key_file else os.environ.get(config.KEY_ENV)
        deploy_function(
            args.function_name, role=args.role, key=key, timeout=args.timeout,
            memory=args.memory, environment=dict(args.env), image_uri=args.image_uri,
            layers=args.layer, concurrency=args.concurrency, region=args.region,
            endpoint_url=args.endpoint_url,
        )
        return 0
    if args.action == "remove":
        from .deploy import remove_function

        remove_function(args.function_name, region=args.region, endpoint_url=args.endpoint_url)
        return 0
    if args.action == "local":
        from ..simulate.cli import make_model
        from .local import main

        stragglers = make_model(args.stragglers, dict(args.param)) if args.stragglers else None
        return main(
            s3=args.s3, concurrency=args.concurrency, timeout=args.timeout, stragglers=stragglers,
            seed=args.seed, bucket=args.bucket, function_name=args.function_name,
            duration=args.duration,
        )
    from .demo import lambda_demo

    lambda_demo(workers=args.workers, trials=args.trials, seed=args.seed, s3=args.s3)
    return 0
