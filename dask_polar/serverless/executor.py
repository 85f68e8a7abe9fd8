"""`LambdaExecutor`: a ``concurrent.futures.Executor`` whose tasks run on AWS Lambda.

Each ``submit(fn, *args, **kwargs)`` pickles the call with cloudpickle, signs it
(HMAC-SHA256), and invokes the function synchronously (``RequestResponse``) from one of
``max_concurrency`` client threads; the future resolves to the function's result, read inline
or from S3. The function is `dask_polar.serverless.handler.handle`, deployed with
``python -m dask_polar lambda deploy`` (`dask_polar.serverless.deploy`).

Three ways to use it:

* ``coded_matmul(A, B, executor=ex)`` / ``CodedMatrix(A, executor=ex)``: a coded job with
  early completion. The coded blocks and ``B`` are stored in S3 once (`reference`); each
  invocation reads its block and ``B`` from S3 and computes its product; at the first
  decodable set the job sets its cancel flag (`cancel_flag`: an S3 marker object the
  remaining tasks poll), and the stragglers' results are ignored and their objects deleted.
  With ``decode="functions"`` (default) each product stays in S3 (the task returns a
  receipt), and once the receipts are decodable Lambda functions decode it, one row panel
  each (`remote_results`, `dask_polar.serverless.results`): the client downloads the
  decoded ``C`` only. With ``decode="client"`` the products come back to the client, which
  decodes them.
* ``dask.compute(x, scheduler=ex)``: any Dask graph, one invocation per task (Dask waits for
  every task; no early completion).
* directly: ``ex.submit(fn, *args)``, ``ex.map(fn, items)``.

Objects in S3
-------------
Everything lives under ``<prefix>/<session>/`` (``prefix`` defaults to ``dask-polar``, one
session per executor): ``refs/`` holds referenced blocks (deleted when their reference object
is dropped, e.g. when the job that made them ends or a `CodedMatrix` is closed);
``jobs/<job>/`` holds one coded job's cancel marker, its large calls and results, and with
``decode="functions"`` its products (``jobs/<job>/results/``), deleted when the job has
finished (decoded or failed) and its last invocation is back; ``tasks/`` the large calls and
results of plain submissions (deleted once read). `shutdown` deletes whatever is left of
the session. An S3 lifecycle rule expiring ``dask-polar/`` after a day is a good safety net
for clients that die.

Failures
--------
* The task's function raised: the same exception (remote type and message) is raised by
  ``future.result()``, its ``__cause__`` a `RemoteTraceback` holding the remote traceback.
* Lambda failed: `LambdaTimeoutError` (``Sandbox.Timedout``), `LambdaCrashError` (the
  runtime exited), `LambdaThrottledError` (HTTP 429 still, after botocore's adaptive
  retries), `PayloadTooLargeError` (413), `LambdaFunctionError` (any other function error).
* Security: `PayloadRejectedError` when the function rejected the call (keys differ, or the
  payload was altered) or a response did not verify; `S3AccessError` when S3 refused the
  executor's or the function's credentials.

A coded job treats every failure as an erasure: it decodes without the task or re-runs it.
A decode function that times out, crashes or is throttled is re-invoked (twice); if it
still fails, or fails in a way a retry cannot change, the job raises
`dask_polar.RemoteDecodeError` (its cause the function's error), never a partial array.

Security
--------
Calls and results are pickles, so both ends verify an HMAC-SHA256 signature under a shared
key (``key=`` or ``DASK_POLAR_LAMBDA_KEY``; the function reads its copy from the same
variable or an SSM SecureString) *before* unpickling anything; referenced objects and
results in S3 are checked against SHA-256 digests carried inside the signed envelopes. Keep
the key secret: anyone holding it can run code in the function. A least-privilege policy for
the principal that runs the executor (function ``dask-polar``, bucket ``BUCKET``, default
prefix)::

    {"Version": "2012-10-17",
     "Statement": [
      {"Sid": "Invoke", "Effect": "Allow",
       "Action": ["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
       "Resource": "arn:aws:lambda:REGION:ACCOUNT:function:dask-polar"},
      {"Sid": "Objects", "Effect": "Allow",
       "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
       "Resource": "arn:aws:s3:::BUCKET/dask-polar/*"},
      {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket",
       "Resource": "arn:aws:s3:::BUCKET",
       "Condition": {"StringLike": {"s3:prefix": "dask-polar/*"}}}]}

and for the function's execution role: ``s3:GetObject`` and ``s3:PutObject`` on
``arn:aws:s3:::BUCKET/dask-polar/*``, plus the usual ``logs:CreateLogStream`` and
``logs:PutLogEvents`` on its log group (``AWSLambdaBasicExecutionRole``), and
``ssm:GetParameter`` on the key's parameter if the key comes from SSM. The role needs no
``s3:ListBucket``: a missing cancel marker then answers 403 instead of 404, which the
tasks read as "not cancelled".

Examples
--------
>>> import dask_polar, numpy as np
>>> from dask_polar.serverless import LambdaExecutor
>>> ex = LambdaExecutor("dask-polar", "my-bucket", max_concurrency=64)  # doctest: +SKIP
>>> ex.submit(pow, 2, 10).result()  # doctest: +SKIP
1024
>>> C = dask_polar.coded_matmul(A, B, executor=ex).compute()  # doctest: +SKIP

Locally, without AWS: ``with dask_polar.serverless.local.local_serverless() as local:`` and
``local.executor()`` (see `dask_polar.serverless.local`).
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures as cf
import itertools
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle
import numpy as np

from .._validation import check_bool, check_int, check_positive
from . import config, protocol
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
)
from .protocol import S3CancelFlag, S3Reference
from .results import FunctionDecode, S3ResultStore, panel_splits

__all__ = ["LambdaExecutor"]

logger = logging.getLogger("dask_polar.serverless")


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as err:  # an optional dependency
        raise ImportError(
            "the Lambda executor needs boto3: pip install 'dask_polar[aws]'"
        ) from err
    return boto3


class _Job:
    """Client-side state of one coded job (one cancel flag)."""

    __slots__ = ("prefix", "marker", "outstanding", "closed")

    def __init__(self, prefix: str, marker: str) -> None:
        self.prefix, self.marker = prefix, marker
        self.outstanding = 0
        self.closed = False


class LambdaExecutor(cf.Executor):
    """Run tasks on an AWS Lambda function that serves `dask_polar.serverless.handler`.

    Parameters
    ----------
    function_name : str
        The function (name or ARN), deployed with ``python -m dask_polar lambda deploy``.
    bucket : str
        S3 bucket for large arguments and results, cancel markers and referenced blocks.
    prefix : str, optional
        Key prefix of everything this executor writes (default ``"dask-polar"``); each
        executor adds its own session below it.
    region : str, optional
        AWS region (default: the session's, else ``us-east-1``).
    max_concurrency : int
        Invocations in flight at once (client threads and HTTP connections).
    session : boto3.Session, optional
        Credentials and region to use (default: boto3's default chain).
    key : str or bytes, optional
        HMAC-SHA256 signing key shared with the function (default: the
        ``DASK_POLAR_LAMBDA_KEY`` environment variable); at least 16 bytes.
    function_timeout : int, optional
        The function's timeout in seconds; default: read from the function's configuration
        (900 if that is not allowed). The HTTP read timeout is set 30 s above it.
    max_attempts : int
        botocore attempts per call, first one included (throttling, S3 5xx, connection
        errors are retried).
    retry_mode : {"adaptive", "standard"}
        botocore's retry mode. ``"adaptive"`` (default) also rate-limits the client once
        Lambda throttles it (fewest 429s, but it ramps back up slowly: see
        ``benchmarks/bench_lambda.py``); ``"standard"`` only backs off exponentially.
    inline_reference_bytes : int
        `reference` keeps smaller values inline in every call instead of storing them in S3.
    inline_payload_bytes : int
        Calls and results whose pickle is larger travel through S3 (at most 4 MiB: Lambda's
        6 MB payload limit, less base64).
    poll_interval : float
        Seconds between two polls of a job's cancel flag inside a task.
    log_tail : bool
        Ask Lambda for the tail of each invocation's log (``LogType="Tail"``) and attach it
        to `LambdaError` exceptions as ``.log``.
    endpoint_urls : mapping, optional
        ``{"lambda": url, "s3": url}`` for local or compatible services (boto3 also honours
        ``AWS_ENDPOINT_URL_LAMBDA`` / ``AWS_ENDPOINT_URL_S3``).
    decode : {"functions", "client"}
        Where coded jobs decode. ``"functions"`` (default): products stay in S3 and Lambda
        functions decode them, one row panel each; the client downloads about ``|C|``
        bytes, not the ``n`` products (``n / k`` times as much, and the client's link is
        the bottleneck at scale), for one more round of invocations (a few ms warm on a
        small product) and one S3 PUT per task. ``"client"``: products come back to the
        client (inline when small), which decodes them; the fewest round trips, best
        for small products or a client next to the data.
    decode_panel_bytes : int
        With ``decode="functions"``: decoded bytes per decode function (see
        ``config.DECODE_PANEL_BYTES``); the panels are row ranges, at most
        ``max_concurrency`` of them.
    wait_for_cleanup : bool
        Whether a coded job returns only once its invocations are all back and its S3
        objects (inputs, results, cancel marker, call claims) are deleted: then nothing of
        the job is left when ``compute()`` returns, at the price of waiting for stragglers
        that look at no cancel marker (up to the function's timeout). Default False: the
        job returns at its decodable moment and its objects go as its stragglers return
        (`wait_idle` waits for that; `shutdown` sweeps the session). Blocks stored by
        `reference` are deleted once released, either way.

    Attributes
    ----------
    function_name, bucket : str
    session_prefix : str
        ``<prefix>/<session>``: where this executor's objects live.
    stats : collections.Counter
        Invocations, failures, cold starts, objects and bytes moved (``bytes_received``:
        response payloads; ``bytes_downloaded``: the client's S3 GETs), decode panels and
        their retries (benchmarks, tests).

    Raises
    ------
    TypeError, ValueError
        Bad arguments, no signing key, a missing or inactive function, a missing bucket.
    S3AccessError
        If S3 refuses the executor's credentials for the bucket.

    Notes
    -----
    Cancelling a running invocation is impossible on Lambda: ``future.cancel()`` only stops
    calls not yet sent. Coded tasks stop early by polling their job's `S3CancelFlag`.
    """

    def __init__(
        self,
        function_name: str,
        bucket: str,
        *,
        prefix: str | None = None,
        region: str | None = None,
        max_concurrency: int = config.DEFAULT_MAX_CONCURRENCY,
        session: Any = None,
        key: str | bytes | None = None,
        function_timeout: int | None = None,
        max_attempts: int = config.DEFAULT_MAX_ATTEMPTS,
        retry_mode: str = "adaptive",
        inline_reference_bytes: int = config.INLINE_REFERENCE_BYTES,
        inline_payload_bytes: int = config.INLINE_PAYLOAD_BYTES,
        poll_interval: float = config.POLL_INTERVAL,
        log_tail: bool = False,
        endpoint_urls: Mapping[str, str] | None = None,
        decode: str = "functions",
        decode_panel_bytes: int = config.DECODE_PANEL_BYTES,
        wait_for_cleanup: bool = False,
    ) -> None:
        for name, value in (("function_name", function_name), ("bucket", bucket)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__}")
            if not value:
                raise ValueError(f"{name} must not be empty")
        if prefix is None:
            prefix = config.DEFAULT_PREFIX
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
        prefix = prefix.strip("/")
        if not prefix:
            raise ValueError(
                "prefix must not be empty (the executor deletes what it writes under it)"
            )
        self._max_workers = check_int("max_concurrency", max_concurrency, minimum=1)
        self._key = protocol.as_key(key)
        self._max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        if retry_mode not in ("adaptive", "standard"):
            raise ValueError(f"retry_mode must be 'adaptive' or 'standard', got {retry_mode!r}")
        self._inline_reference = check_int(
            "inline_reference_bytes", inline_reference_bytes, minimum=0
        )
        self._inline_payload = check_int("inline_payload_bytes", inline_payload_bytes, minimum=0)
        if self._inline_payload > config.INLINE_PAYLOAD_BYTES:
            raise ValueError(
                f"inline_payload_bytes must be <= {config.INLINE_PAYLOAD_BYTES} (Lambda's 6 MB "
                f"payload limit, less base64), got {self._inline_payload}"
            )
        self._poll = check_positive("poll_interval", poll_interval)
        if decode not in ("functions", "client"):
            raise ValueError(f"decode must be 'functions' or 'client', got {decode!r}")
        self.decode = decode
        self.wait_for_cleanup = check_bool("wait_for_cleanup", wait_for_cleanup)
        self._panel_bytes = check_int("decode_panel_bytes", decode_panel_bytes, minimum=1)
        self._log_tail = bool(log_tail)
        endpoints = dict(endpoint_urls or {})
        unknown = set(endpoints) - {"lambda", "s3"}
        if unknown:
            raise ValueError(
                f"endpoint_urls takes the keys 'lambda' and 's3', got {sorted(unknown)}"
            )
        self.function_name, self.bucket = function_name, bucket
        self.session_prefix = f"{prefix}/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.stats: collections.Counter[str] = collections.Counter()

        boto3 = _boto3()
        from botocore.config import Config

        session = session if session is not None else boto3.Session(region_name=region)
        self.region = region or session.region_name or "us-east-1"
        retries = {"mode": retry_mode, "total_max_attempts": self._max_attempts}
        self._s3 = session.client(
            "s3", endpoint_url=endpoints.get("s3"),
            config=Config(
                region_name=self.region, retries=retries, connect_timeout=10, read_timeout=120,
                max_pool_connections=self._max_workers + 20, tcp_keepalive=True,
            ),
        )
        self._clients = [self._s3]
        try:
            if function_timeout is None:
                function_timeout = self._function_timeout(session, endpoints.get("lambda"), retries)
            self.function_timeout = config.check_timeout(function_timeout)
            self._lambda = session.client(
                "lambda", endpoint_url=endpoints.get("lambda"),
                config=Config(
                    region_name=self.region, retries=retries, connect_timeout=10,
                    read_timeout=self.function_timeout + config.READ_TIMEOUT_MARGIN,
                    max_pool_connections=self._max_workers, tcp_keepalive=True,
                ),
            )
            self._clients.append(self._lambda)
            self._check_bucket()
        except BaseException:
            self._close_clients()
            raise

        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._chores = 0
        self._jobs: dict[str, _Job] = {}
        self._deletes: list[str] = []
        self._counter = itertools.count()
        self._shutdown = False
        self._uploads: dict[str, cf.Future] = {}
        self._pool = cf.ThreadPoolExecutor(
            self._max_workers, thread_name_prefix="dask-polar-lambda"
        )
        # references upload in parallel; a call waits only for the ones it contains
        self._uploader = cf.ThreadPoolExecutor(
            min(16, max(4, self._max_workers // 4)), thread_name_prefix="dask-polar-upload"
        )
        # one thread, FIFO: a job's marker is written before the sweep that deletes it
        self._housekeeper = cf.ThreadPoolExecutor(1, thread_name_prefix="dask-polar-s3")
        self._finalizer = weakref.finalize(
            self, LambdaExecutor._finalize, self._pool, self._uploader, self._housekeeper
        )

    # -- setup --------------------------------------------------------------------------

    def _function_timeout(self, session: Any, endpoint: str | None, retries: dict) -> int:
        from botocore.config import Config
        from botocore.exceptions import ClientError

        probe = session.client(
            "lambda", endpoint_url=endpoint,
            config=Config(
                region_name=self.region, retries=retries, connect_timeout=10, read_timeout=60
            ),
        )
        try:
            conf = probe.get_function_configuration(FunctionName=self.function_name)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "ResourceNotFoundException":
                where = f" at {endpoint}" if endpoint else ""
                raise ValueError(
                    f"Lambda function {self.function_name!r} not found (region {self.region}"
                    f"{where}); deploy it with `python -m dask_polar lambda deploy "
                    f"--function-name {self.function_name}`"
                ) from None
            if code in ("AccessDeniedException", "AccessDenied"):
                logger.debug(
                    "cannot read the function's timeout (%s); assuming %d s", code,
                    config.MAX_TIMEOUT,
                )
                return config.MAX_TIMEOUT
            raise
        finally:
            probe.close()
        state = conf.get("State", "Active")
        if state != "Active":
            raise ValueError(
                f"Lambda function {self.function_name!r} is {state} "
                f"({conf.get('StateReason', 'no reason given')}); wait until it is Active"
            )
        return int(conf.get("Timeout", config.MAX_TIMEOUT))

    def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:  # ListBucket on our own prefix: allowed by the least-privilege policy
            self._s3.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.session_prefix}/", MaxKeys=1
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchBucket":
                raise ValueError(f"S3 bucket {self.bucket!r} does not exist") from None
            raise protocol.s3_error(exc, "ListObjectsV2", self.bucket, None, "executor") from exc

    # -- the Executor interface ---------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Invoke ``fn(*args, **kwargs)`` on Lambda; returns a ``concurrent.futures.Future``.

        The call is pickled here, in the caller's thread (so later changes to the arguments
        do not leak into it); it is sent from one of ``max_concurrency`` threads. The
        future's result is ``fn``'s return value; its exception is ``fn``'s own (remote type
        and message, the remote traceback as ``__cause__``) or one of the errors listed in
        the module docstring. A call of a coded job that already decoded is not sent (its
        future raises ``concurrent.futures.CancelledError``).

        Raises
        ------
        RuntimeError
            After `shutdown`.
        """
        job = self._job_of(args, kwargs)
        with protocol.collecting() as references:
            body = cloudpickle.dumps((fn, args, kwargs), protocol=5)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task = f"{next(self._counter):06d}"
            self._inflight += 1
            if job is not None:
                job.outstanding += 1
            uploads = [self._uploads[k] for k in references if k in self._uploads]
        base = job.prefix if job is not None else f"{self.session_prefix}/tasks"
        try:
            future = self._pool.submit(self._run, task, base, body, job, uploads)
        except BaseException:
            self._finished(job, None)
            raise
        future.add_done_callback(lambda _, job=job: self._finished(job, _))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks and delete every object of this executor's session.

        With ``wait=True`` (default), wait for the invocations in flight and the deletions.
        """
        with self._lock:
            if self._shutdown:
                already = True
            else:
                already, self._shutdown = False, True
        if already:
            if wait:
                self._housekeeper.shutdown(wait=True)
            return
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._uploader.shutdown(wait=wait)
        self._chore(self._sweep, f"{self.session_prefix}/")
        self._housekeeper.shutdown(wait=wait)
        if wait:
            self._close_clients()

    # -- coded jobs: references and cancel flags ----------------------------------------

    def reference(self, key: Any, value: Any) -> Any:
        """What a task receives for ``value``: an `S3Reference` if large, else ``value``.

        A large value is pickled and stored in S3 once (named after the graph ``key`` if
        given), in the background: the upload overlaps with the next ones, and a call waits
        only for the references it contains (an upload error fails those calls, e.g. with
        `S3AccessError`). The object is deleted when the returned reference is
        garbage-collected (or at `shutdown`). Used by coded jobs for the coded blocks and
        ``B``.
        """
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int) and nbytes < self._inline_reference:
            return value
        data = cloudpickle.dumps(value, protocol=5)
        if len(data) < self._inline_reference:
            return value
        slug = protocol.slug(key)
        name = f"{self.session_prefix}/refs/{uuid.uuid4().hex[:12]}{'-' + slug if slug else ''}"
        ref = S3Reference(self.bucket, name, protocol.digest(data), len(data))
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot store references after shutdown")
            upload = self._uploader.submit(self._put, name, data)
            self._uploads[name] = upload
        upload.add_done_callback(lambda _, name=name: self._uploaded(name))
        weakref.finalize(ref, LambdaExecutor._release, weakref.ref(self), name)
        return ref

    def cancel_flag(self) -> S3CancelFlag:
        """A new job's cancel flag; setting it ends the job (see `S3CancelFlag`).

        Tasks submitted with the flag among their arguments belong to the job: their large
        calls and results go under the job's prefix, and once the flag is set and their
        invocations are back, the job's objects are deleted.
        """
        job_id = uuid.uuid4().hex[:12]
        prefix = f"{self.session_prefix}/jobs/{job_id}"
        flag = S3CancelFlag(self.bucket, f"{prefix}/cancel", self._poll, on_set=self._job_done)
        with self._lock:
            self._jobs[flag.key] = _Job(prefix, flag.key)
        return flag

    def remote_results(
        self, code: Any, flag: S3CancelFlag, result_shape: tuple[int, ...], dtype: Any
    ) -> FunctionDecode | None:
        """How the job of ``flag`` keeps and decodes its results: in S3 and in functions
        (`FunctionDecode`), or None with ``decode="client"`` (they come back to the client).

        The job's objects are kept until the returned object is closed, even after the
        flag is set (the decode functions read them then).

        Raises
        ------
        ValueError
            If ``flag`` is not a running job's flag of this executor.
        """
        if self.decode == "client":
            return None
        dtype = np.dtype(dtype)
        row_bytes = code.k * int(np.prod(result_shape[1:], dtype=np.int64)) * dtype.itemsize
        splits = panel_splits(result_shape[0], row_bytes, self._panel_bytes, self._max_workers)
        with self._lock:
            job = self._jobs.get(getattr(flag, "key", None))
            if job is None or job.closed:
                raise ValueError(f"flag must be a running job's flag of this executor, got {flag!r}")
            job.outstanding += 1  # a hold, as if an invocation were in flight
        store = S3ResultStore(self.bucket, job.prefix, result_shape, dtype, splits, s3=self._s3)
        return FunctionDecode(
            self, store, retries=config.DECODE_RETRIES, release=lambda: self._leave(job),
            count=self._count,
        )

    def wait_job(self, flag: S3CancelFlag, timeout: float | None = None) -> bool:
        """With ``wait_for_cleanup``, wait until the job of ``flag`` has no invocation in
        flight and its objects are deleted (at most ``timeout`` seconds; default the
        function's timeout and a margin). Called by the job's loop once it has decoded.

        Returns
        -------
        bool
            False if the wait timed out (the rest is deleted as it comes back).
        """
        if not self.wait_for_cleanup:
            return True
        if timeout is None:
            timeout = self.function_timeout + config.READ_TIMEOUT_MARGIN
        deadline = time.monotonic() + timeout
        with self._idle:
            while flag.key in self._jobs or self._chores:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning(
                        "job %s: objects not all deleted after %.0f s (invocations still "
                        "running); they go as those come back", flag.key, timeout,
                    )
                    return False
                self._idle.wait(remaining)
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no invocation is in flight and all pending S3 deletions are done.

        Returns
        -------
        bool
            False if ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._inflight or self._chores or self._uploads:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def __dask_tokenize__(self) -> tuple:
        return ("LambdaExecutor", self.function_name, self.bucket, self.session_prefix)

    def __reduce__(self):
        raise TypeError(
            "a LambdaExecutor cannot be pickled: create it in the process that drives the jobs"
        )

    def __repr__(self) -> str:
        return (
            f"<LambdaExecutor function={self.function_name!r} bucket={self.bucket!r} "
            f"prefix={self.session_prefix!r} max_concurrency={self._max_workers}>"
        )

    # -- one invocation -----------------------------------------------------------------

    def _run(self, task: str, base: str, body: bytes, job: _Job | None, uploads: list) -> Any:
        for upload in uploads:  # the references this call contains must be in S3
            upload.result()
        if job is not None and job.closed:  # decoded while this call waited for a thread
            raise cf.CancelledError(f"task {task}: its job finished before it was sent")
        body_key = None
        if len(body) > self._inline_payload:
            body_key = f"{base}/{task}.in"
            self._put(body_key, body)
        call = protocol.encode_call(
            self._key, task=task, bucket=self.bucket, body=body, body_key=body_key,
            result_key=f"{base}/{task}.out", inline_limit=self._inline_payload,
        )
        leftovers = [body_key] if body_key else []
        if job is None:  # a job's claims go with its prefix; a lone call's with the call
            leftovers.append(protocol.claim_key(call["result_key"], call["call_id"]))
        try:
            payload, function_error, log, request_id = self._invoke(json.dumps(call).encode())
            if function_error:
                raise self._function_error(payload, log, request_id)
            try:
                envelope = json.loads(payload)
            except ValueError:
                raise PayloadRejectedError("the function's response is not JSON") from None
            result = protocol.verify_result(self._key, envelope, task)
            self._count(cold_starts=int(bool(result.stats.get("cold"))))
            data = result.value
            if result.value_key is not None:
                leftovers.append(result.value_key)
                if job is not None and job.closed:  # a straggler of a finished job
                    raise cf.CancelledError(f"task {task}: its job finished; result discarded")
                data = self._get(result.value_key)
                where = f"s3://{self.bucket}/{result.value_key}"
                protocol.check_digest(data, result.value_sha256, where)
            value = cloudpickle.loads(data)
        except BaseException:
            self._count(failures=1)
            raise
        finally:
            if leftovers:
                self._delete(leftovers)
        if result.ok:
            return value
        if not isinstance(value, BaseException):
            value = RemoteError("unknown", repr(value))
        note = getattr(value, "add_note", None)
        if note is not None:
            note(f"(raised in Lambda function {self.function_name!r}, task {task})")
        raise value from RemoteTraceback(result.traceback or "")

    def _invoke(self, payload: bytes) -> tuple[bytes, str | None, str | None, str | None]:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        self._count(invocations=1, bytes_sent=len(payload))
        try:
            response = self._lambda.invoke(
                FunctionName=self.function_name, InvocationType="RequestResponse",
                LogType="Tail" if self._log_tail else "None", Payload=payload,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", str(exc))
            request_id = exc.response.get("ResponseMetadata", {}).get("RequestId")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "TooManyRequestsException" or status == 429:
                self._count(throttled=1)
                cls: type[LambdaError] = LambdaThrottledError
            elif code == "RequestTooLargeException" or status == 413:
                cls = PayloadTooLargeError
            else:
                cls = LambdaError
            raise cls(self.function_name, message, error_type=code, request_id=request_id) from None
        except ReadTimeoutError as exc:
            raise LambdaTimeoutError(
                self.function_name, f"no answer within the read timeout ({exc})",
                error_type="ReadTimeout",
            ) from None
        except BotoCoreError as exc:  # connection refused or reset, after the retries
            raise LambdaError(self.function_name, str(exc), error_type=type(exc).__name__) from None
        data = response["Payload"].read()
        self._count(bytes_received=len(data))
        log = response.get("LogResult")
        if log is not None:
            log = base64.b64decode(log).decode("utf-8", "replace")
        request_id = response.get("ResponseMetadata", {}).get("RequestId")
        return data, response.get("FunctionError"), log, request_id

    def _function_error(
        self, payload: bytes, log: str | None, request_id: str | None
    ) -> BaseException:
        try:
            error = json.loads(payload)
        except ValueError:
            error = {"errorMessage": payload.decode("utf-8", "replace")}
        if not isinstance(error, dict):
            error = {"errorMessage": str(error)}
        kind = str(error.get("errorType") or "")
        message = str(error.get("errorMessage") or "")
        extra = {"error_type": kind or None, "request_id": request_id, "log": log}
        if kind == "PayloadRejectedError":
            return PayloadRejectedError(
                "the function refused the call: " + message.removeprefix("payload rejected: ")
            )
        if kind == "Sandbox.Timedout" or "Task timed out" in message:
            return LambdaTimeoutError(self.function_name, message, **extra)
        if kind.startswith("Runtime.Exit") or kind == "Runtime.OutOfMemory":
            return LambdaCrashError(self.function_name, message, **extra)
        return LambdaFunctionError(
            self.function_name, message, stack_trace=error.get("stackTrace"), **extra
        )

    # -- bookkeeping --------------------------------------------------------------------

    def _job_of(self, args: tuple, kwargs: dict) -> _Job | None:
        for value in itertools.chain(args, kwargs.values()):
            if isinstance(value, S3CancelFlag):
                with self._lock:
                    return self._jobs.get(value.key)
        return None

    def _job_done(self, flag: S3CancelFlag) -> None:
        with self._lock:
            job = self._jobs.get(flag.key)
            if job is None or job.closed:
                return
            job.closed = True
            finished = job.outstanding == 0
            if finished:
                del self._jobs[flag.key]
        self._chore(self._put, flag.key, b"")  # the running tasks see this marker
        if finished:
            self._chore(self._sweep, f"{job.prefix}/")

    def _finished(self, job: _Job | None, future: cf.Future | None) -> None:
        if job is not None:  # first: a sweep it starts counts as a chore before we look idle
            self._leave(job)
        with self._lock:
            self._inflight -= 1
            self._idle.notify_all()

    def _leave(self, job: _Job) -> None:
        """One invocation (or hold) of ``job`` is over; sweep the job if it was the last."""
        with self._lock:
            job.outstanding -= 1
            last = job.closed and job.outstanding == 0 and self._jobs.pop(job.marker, None)
        if last:
            self._chore(self._sweep, f"{job.prefix}/")

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self.stats.update(amounts)

    def _chore(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._chores += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # housekeeping must not kill the thread
                logger.warning("S3 housekeeping failed (%s%s): %s", fn.__name__, args[:1], exc)
            finally:
                with self._lock:
                    self._chores -= 1
                    self._idle.notify_all()

        try:
            self._housekeeper.submit(run)
        except RuntimeError:  # after shutdown: nothing more to do
            with self._lock:
                self._chores -= 1
                self._idle.notify_all()

    def _delete(self, keys: list[str]) -> None:
        with self._lock:
            flush = not self._deletes
            self._deletes.extend(keys)
        if flush:
            self._chore(self._flush_deletes)

    def _flush_deletes(self) -> None:
        with self._lock:
            keys, self._deletes = self._deletes, []
        self._delete_now(keys)

    def _delete_now(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            self._s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            self._count(objects_deleted=len(batch))

    def _sweep(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (stragglers may have left results)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        keys = [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
        self._delete_now(keys)

    def _put(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception as exc:
            raise protocol.s3_error(exc, "PutObject", self.bucket, key, "executor") from exc
        self._count(objects_put=1, bytes_uploaded=len(data))

    def _get(self, key: str) -> bytes:
        try:
            data = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise protocol.s3_error(exc, "GetObject", self.bucket, key, "executor") from exc
        self._count(bytes_downloaded=len(data))
        return data

    def _uploaded(self, key: str) -> None:
        with self._lock:
            self._uploads.pop(key, None)
            self._idle.notify_all()

    @staticmethod
    def _release(executor: weakref.ref, key: str) -> None:
        self = executor()
        if self is None or self._shutdown:
            return
        with self._lock:
            upload = self._uploads.get(key)
        if upload is None:
            self._delete([key])
        else:  # still uploading: delete once it is there (runs at once if it just finished)
            upload.add_done_callback(lambda _: self._delete([key]))

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()

    @staticmethod
    def _finalize(pool: cf.Executor, uploader: cf.Executor, housekeeper: cf.Executor) -> None:
        # garbage-collected without shutdown(): stop the threads; the session's objects stay
        # (a lifecycle rule on the prefix removes them)
        pool.shutdown(wait=False, cancel_futures=True)
        uploader.shutdown(wait=False)
        housekeeper.shutdown(wait=False)
