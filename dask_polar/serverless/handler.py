"""The Lambda handler: ``dask_polar.serverless.handler.handle``.

Per invocation:

1. verify the envelope's HMAC-SHA256 signature with the function's key (environment variable
   ``DASK_POLAR_LAMBDA_KEY``, or an SSM SecureString named by
   ``DASK_POLAR_LAMBDA_KEY_PARAMETER``, read once per execution environment). An unsigned,
   wrongly signed or altered payload raises `PayloadRejectedError` **before anything is
   unpickled**; Lambda reports it as a function error of that type;
2. reject, with the same error, an expired call (signed more than ``config.CALL_LIFETIME``
   seconds ago) and a replayed one: this execution environment remembers the ids of the
   calls it ran (a bounded `ReplayCache`, each id kept until its call expires), and every
   call claims its id in S3 with a conditional put (``If-None-Match: *``, `claim_call`)
   before it runs, so a captured payload cannot run twice, here or in another environment
   of the function, even after its executor shut down;
3. fetch the body from S3 if it did not travel inline, check its signed digest, unpickle
   ``(fn, args, kwargs)`` with cloudpickle; `S3Reference` arguments are downloaded, checked
   against their signed digest and unpickled (raw bytes are cached per environment, so a
   warm environment reuses blocks across products, e.g. for `CodedMatrix`);
4. run ``fn(*args, **kwargs)``; an exception it raises is caught and returned, pickled, with
   its traceback (the executor raises it again with its remote type);
5. pickle the result (or the exception), sign it, and return it inline or, when larger than
   the call's ``inline_limit``, write it to the call's ``result_key`` in S3 (an idempotent
   key: a retried invocation overwrites the same object).

The handler needs cloudpickle and everything ``fn`` imports (numpy and dask_polar for the
coded products): see `dask_polar.serverless.deploy` for packaging.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import traceback
from typing import Any

import cloudpickle

from . import config, protocol
from .exceptions import PayloadRejectedError, RemoteError

__all__ = ["ReplayCache", "handle"]

logger = logging.getLogger("dask_polar.serverless")

#: Bytes of referenced objects kept per execution environment (env var overrides, in MB).
CACHE_ENV = "DASK_POLAR_LAMBDA_CACHE_MB"
DEFAULT_CACHE_MB = 256
#: Call ids remembered per execution environment: one environment runs one call at a time,
#: so this many within ``config.CALL_LIFETIME`` is more than 200 calls a second (~10 MB).
REPLAY_CACHE_SIZE = 65536

_STATE: dict[str, Any] = {"cold": True}
_LOCK = threading.Lock()


def _signing_key() -> bytes:
    key = _STATE.get("key")
    if key is None:
        parameter = os.environ.get(config.KEY_PARAMETER_ENV)
        if parameter:
            import boto3

            response = boto3.client("ssm").get_parameter(Name=parameter, WithDecryption=True)
            key = protocol.as_key(response["Parameter"]["Value"])
        else:
            try:
                key = protocol.as_key(None)
            except ValueError as err:  # a misconfigured function rejects everything, clearly
                raise PayloadRejectedError(
                    f"the function has no usable signing key ({err}); set {config.KEY_ENV} "
                    f"or {config.KEY_PARAMETER_ENV} in its configuration"
                ) from None
        _STATE["key"] = key
    return key


def _s3() -> Any:
    with _LOCK:
        client = _STATE.get("s3")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                config=Config(
                    retries={"mode": "adaptive", "total_max_attempts": config.DEFAULT_MAX_ATTEMPTS},
                    max_pool_connections=16, tcp_keepalive=True,
                ),
            )
            _STATE["s3"] = client
        return client


class _Resolver:
    """Loads `S3Reference` values for one environment, with an LRU cache of raw bytes."""

    def __init__(self, s3: Any, capacity: int) -> None:
        self.s3 = s3
        self.capacity = capacity
        self.cache: collections.OrderedDict[tuple[str, str, str], bytes] = collections.OrderedDict()
        self.cached = 0
        self.downloaded = 0  # bytes fetched by the current invocation
        self.hits = 0

    def fetch(self, bucket: str, key: str, sha256: str, cache: bool = True) -> bytes:
        ident = (bucket, key, sha256)  # content-addressed: a hit is the verified bytes
        data = self.cache.get(ident)
        if data is not None:
            self.cache.move_to_end(ident)
            self.hits += 1
            return data
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise protocol.s3_error(exc, "GetObject", bucket, key, "function") from exc
        protocol.check_digest(data, sha256, f"s3://{bucket}/{key}")
        self.downloaded += len(data)
        if cache and len(data) <= self.capacity:
            self.cache[ident] = data
            self.cached += len(data)
            while self.cached > self.capacity:
                _, dropped = self.cache.popitem(last=False)
                self.cached -= len(dropped)
        return data

    def load(self, bucket: str, key: str, sha256: str, size: int) -> Any:
        return cloudpickle.loads(self.fetch(bucket, key, sha256))


class ReplayCache:
    """The ids of the calls an execution environment ran, each kept until its call expires.

    Parameters
    ----------
    capacity : int
        Most ids kept. When full, the oldest id is forgotten before its call expired; from
        then on calls expiring no later than it did are refused (they could be a replay of
        it): sound, and legitimate calls, signed later, expire later.
    """

    def __init__(self, capacity: int = REPLAY_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._expiry: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._horizon = -float("inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def admit(self, call_id: str, expires: float, now: float | None = None) -> None:
        """Remember ``call_id`` until ``expires``, or raise if it may have run already.

        Raises
        ------
        PayloadRejectedError
            The id was seen, or (after an overflow) could have been.
        """
        now = time.time() if now is None else now
        with self._lock:
            while self._expiry and next(iter(self._expiry.values())) < now:
                self._expiry.popitem(last=False)  # expired: verify_call refuses it anyway
            if call_id in self._expiry:
                raise PayloadRejectedError(
                    f"replayed call {call_id!r}: this function environment already ran it"
                )
            if expires <= self._horizon:
                raise PayloadRejectedError(
                    f"call {call_id!r} cannot be checked for replay (the environment's replay "
                    f"cache overflowed); send a newly signed call"
                )
            self._expiry[call_id] = expires
            while len(self._expiry) > self.capacity:
                _, dropped = self._expiry.popitem(last=False)
                self._horizon = max(self._horizon, dropped)


def _resolver() -> _Resolver:
    resolver = _STATE.get("resolver")
    if resolver is None:
        megabytes = float(os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB))
        resolver = _Resolver(_s3(), int(megabytes * 1024 * 1024))
        _STATE["resolver"] = resolver
    return resolver


def _qualified(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _pickle_exception(exc: BaseException) -> bytes:
    try:
        data = cloudpickle.dumps(exc)
        cloudpickle.loads(data)  # a class whose __init__ does not round-trip fails here
        return data
    except Exception:
        return cloudpickle.dumps(RemoteError(_qualified(exc), str(exc)))


def claim_call(s3: Any, call: protocol.Call) -> BaseException | None:
    """Claim ``call``'s id with a conditional put (``If-None-Match: *``), or raise
    `PayloadRejectedError` if another execution environment of the function claimed it
    first: a signed call runs once in all, whatever environments its copies reach.

    Returns None, or the error of any other S3 failure (the call must not run then: it
    cannot be shown to be new), for the handler to report as the task's failure.
    """
    from botocore.exceptions import ClientError

    key = protocol.claim_key(call.result_key, call.call_id)
    try:
        s3.put_object(Bucket=call.bucket, Key=key, Body=b"", IfNoneMatch="*")
    except Exception as exc:  # refused, unreachable, timed out
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code in ("PreconditionFailed", "412"):
            raise PayloadRejectedError(
                f"replayed call {call.call_id!r}: another environment of the function ran it"
            ) from None
        return protocol.s3_error(exc, "PutObject", call.bucket, key, "function")
    return None


def handle(event: Any, context: Any = None) -> dict[str, Any]:
    """Run one signed call (see the module docstring); returns the signed result envelope.

    Raises
    ------
    PayloadRejectedError
        Unsigned, wrongly signed, altered, expired or replayed payloads (nothing was
        unpickled or run).
    """
    started = time.time()
    cold = _STATE["cold"]
    _STATE["cold"] = False
    key = _signing_key()
    call = protocol.verify_call(key, event)  # raises before anything is unpickled
    replays = _STATE.setdefault("replays", ReplayCache())
    replays.admit(call.call_id, call.expires)
    request_id = getattr(context, "aws_request_id", None)
    resolver = _resolver()
    claim_error = claim_call(resolver.s3, call)  # single use across environments too
    resolver.downloaded = 0
    stats: dict[str, Any] = {"cold": cold, "request_id": request_id, "started": started}
    try:
        if claim_error is not None:  # S3 refused the claim: the task fails with its error
            raise claim_error
        body = call.body
        if body is None:
            body = resolver.fetch(call.bucket, call.body_key, call.body_sha256, cache=False)
        with protocol.resolving(resolver):
            fn, args, kwargs = cloudpickle.loads(body)
        stats["loaded"] = time.time()
        value = fn(*args, **kwargs)
        ok, tb, error = True, None, None
        data = cloudpickle.dumps(value)
    except Exception as exc:  # the task's failure travels back as data, with its traceback
        ok, tb, error = False, traceback.format_exc(), f"{_qualified(exc)}: {exc}"
        data = _pickle_exception(exc)
        logger.info("task %s raised %s", call.task, error)
    stats["ran"] = time.time()
    stats["downloaded"] = resolver.downloaded
    value_key = None
    if len(data) > call.inline_limit:
        value_key = call.result_key
        try:
            resolver.s3.put_object(Bucket=call.bucket, Key=value_key, Body=data)
        except Exception as exc:  # the result is lost: report why, inline
            failure = protocol.s3_error(exc, "PutObject", call.bucket, value_key, "function")
            ok, tb, error = False, traceback.format_exc(), f"{_qualified(failure)}: {failure}"
            data, value_key = _pickle_exception(failure), None
    stats["finished"] = time.time()
    return protocol.encode_result(
        key, task=call.task, ok=ok, value=data, value_key=value_key, traceback=tb,
        error=error, stats=stats,
    )


if "AWS_LAMBDA_RUNTIME_API" in os.environ:  # inside Lambda: pay for the client during init
    _s3()
