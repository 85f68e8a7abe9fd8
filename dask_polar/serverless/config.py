"""Limits and defaults of the Lambda backend (AWS's published quotas, and our choices).

AWS Lambda quotas that shape the design (as of 2026):

* Synchronous invocation payload: 6 MB for the request and for the response
  (``PAYLOAD_LIMIT``); an asynchronous (``Event``) request: 1 MB (``EVENT_PAYLOAD_LIMIT``).
  Calls and results bigger than ``INLINE_PAYLOAD_BYTES`` therefore travel through S3; base64
  in the JSON envelope adds a third, so the inline limit sits well below 6 MB.
* Function timeout: 1 to 900 seconds (``MIN_TIMEOUT``, ``MAX_TIMEOUT``). The boto3 read
  timeout must exceed it, or botocore gives up on (and retries!) a running invocation.
* Memory: 128 to 10240 MB (``MIN_MEMORY``, ``MAX_MEMORY``); CPU is proportional to memory,
  one full vCPU at 1769 MB (``DEFAULT_MEMORY``).
* A zip uploaded directly: 50 MB (``ZIP_UPLOAD_LIMIT``); 250 MB unzipped including layers.
  Bigger dependencies (numpy, scipy and dask together) call for the container-image route
  (see `dask_polar.serverless.deploy`).
* Account concurrency: 1000 by default; beyond it (or a function's reserved concurrency)
  Invoke answers ``429 TooManyRequestsException``, which botocore's adaptive retry mode
  backs off from.

Everything here is a plain constant, so this module imports nothing heavy.

Examples
--------
>>> PAYLOAD_LIMIT
6291456
>>> check_timeout(900), check_memory(1769)
(900, 1769)
"""

from __future__ import annotations

import sys

from .._validation import check_int

__all__ = [
    "CALL_LIFETIME",
    "DECODE_PANEL_BYTES",
    "DECODE_RETRIES",
    "DEFAULT_FUNCTION_NAME",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MEMORY",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "EVENT_PAYLOAD_LIMIT",
    "HANDLER",
    "INLINE_PAYLOAD_BYTES",
    "INLINE_REFERENCE_BYTES",
    "KEY_ENV",
    "KEY_PARAMETER_ENV",
    "MAX_CALL_LIFETIME",
    "MAX_MEMORY",
    "MAX_TIMEOUT",
    "MIN_MEMORY",
    "MIN_TIMEOUT",
    "PAYLOAD_LIMIT",
    "POLL_INTERVAL",
    "READ_TIMEOUT_MARGIN",
    "RUNTIME",
    "ZIP_UPLOAD_LIMIT",
    "check_memory",
    "check_timeout",
]

#: Largest synchronous Invoke request and response, bytes (6 MB).
PAYLOAD_LIMIT = 6 * 1024 * 1024
#: Largest asynchronous (``InvocationType="Event"``) request, bytes.
EVENT_PAYLOAD_LIMIT = 1024 * 1024
#: A pickled call or result up to this size travels inline (base64) in the JSON envelope;
#: beyond it, through S3. 4 MiB of base64 is 5.3 MiB, under ``PAYLOAD_LIMIT`` with room for
#: the envelope.
INLINE_PAYLOAD_BYTES = 4 * 1024 * 1024
#: `LambdaExecutor.reference` keeps values smaller than this inline in every call (a copy per
#: task is cheaper than an S3 round trip); larger ones are stored in S3 once.
INLINE_REFERENCE_BYTES = 256 * 1024

MIN_TIMEOUT = 1
MAX_TIMEOUT = 900
#: Default function timeout of `deploy_function`, seconds.
DEFAULT_TIMEOUT = 300
MIN_MEMORY = 128
MAX_MEMORY = 10240
#: One full vCPU.
DEFAULT_MEMORY = 1769
#: Largest zip accepted inline by CreateFunction/UpdateFunctionCode.
ZIP_UPLOAD_LIMIT = 50 * 1000 * 1000

#: The handler inside the package, as Lambda's ``Handler`` setting spells it.
HANDLER = "dask_polar.serverless.handler.handle"
#: The Lambda runtime matching this interpreter (the zip holds pure Python only, but pickles
#: must load on the other side: keep the same minor version).
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_FUNCTION_NAME = "dask-polar"
#: Every object the executor writes lives under ``<prefix>/<session>/``.
DEFAULT_PREFIX = "dask-polar"

#: Environment variable holding the HMAC-SHA256 key that signs payloads (client and function).
KEY_ENV = "DASK_POLAR_LAMBDA_KEY"
#: On the function: name of an SSM SecureString parameter holding the key (read at cold
#: start, instead of ``KEY_ENV``).
KEY_PARAMETER_ENV = "DASK_POLAR_LAMBDA_KEY_PARAMETER"

#: A signed call is valid for this many seconds after it was signed (just before it is
#: sent): long enough for botocore's retries and a cold start, short enough that a captured
#: payload soon becomes useless. The handler remembers call ids for as long.
CALL_LIFETIME = 300.0
#: The handler rejects calls that expire further ahead (their ids would pin its replay
#: cache); an hour leaves room for a client clock that runs ahead.
MAX_CALL_LIFETIME = 3600.0

#: Work tasks poll their job's cancel flag (an S3 object) at most this often, seconds.
POLL_INTERVAL = 0.25
#: ``LambdaExecutor(decode="functions")``: decoded bytes per decode function (the product
#: is split into row panels of about this size, at most ``max_concurrency`` of them). Each
#: function reads about ``n_used / k`` times as much from S3, in ranged GETs.
DECODE_PANEL_BYTES = 8 * 1024 * 1024
#: Re-invocations of a decode function that timed out, crashed or was throttled.
DECODE_RETRIES = 2
#: Default client-side concurrency of `LambdaExecutor` (threads, HTTP connections).
DEFAULT_MAX_CONCURRENCY = 64
#: botocore attempts per call (first try included), adaptive retry mode.
DEFAULT_MAX_ATTEMPTS = 10
#: Read timeout = function timeout + this, seconds.
READ_TIMEOUT_MARGIN = 30.0


def check_timeout(timeout: object) -> int:
    """A Lambda function timeout in whole seconds, ``1 <= timeout <= 900``."""
    value = check_int("timeout", timeout, minimum=MIN_TIMEOUT)
    if value > MAX_TIMEOUT:
        raise ValueError(f"timeout must be <= {MAX_TIMEOUT} seconds (Lambda's limit), got {value}")
    return value


def check_memory(memory: object) -> int:
    """A Lambda memory size in MB, ``128 <= memory <= 10240``."""
    value = check_int("memory", memory, minimum=MIN_MEMORY)
    if value > MAX_MEMORY:
        raise ValueError(f"memory must be <= {MAX_MEMORY} MB (Lambda's limit), got {value}")
    return value
