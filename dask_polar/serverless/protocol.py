"""The wire format between `LambdaExecutor` and the handler: signed envelopes, S3 references
and the per-job cancel flag.

A call travels as a JSON envelope (Lambda payloads are JSON)::

    {"dask_polar": 2, "kind": "call", "task": "...", "bucket": "...",
     "body": "<base64 cloudpickle of (fn, args, kwargs)>" | null,
     "body_key": "<S3 key of the body when too large to inline>" | null,
     "body_sha256": "...", "result_key": "...", "inline_limit": 4194304,
     "call_id": "<random, unique per call>", "expires": <unix time>, "sig": "..."}

and its answer as ``{"kind": "result", "task": ..., "ok": ..., "value" | "value_key", ...}``.
``sig`` is an HMAC-SHA256, under the shared key, of the canonical JSON of every other field
except the inline body, whose SHA-256 is one of the signed fields. The receiver checks the
signature, then the body's digest (after fetching it from S3 if need be), and only then
unpickles. ``kind`` and ``task`` are signed, so a result cannot be replayed as a call nor
swapped between tasks. ``call_id`` and ``expires`` are signed too, against replays: a call
is valid for ``config.CALL_LIFETIME`` seconds after signing (`verify_call` rejects it later),
and each call id runs once: the handler remembers the ids of the unexpired calls its
execution environment ran, and claims each id in S3 before running it (a conditional put,
``If-None-Match: *``), so a replay that reaches another environment of the function is
refused too.

Large arguments are `S3Reference` objects: stored once, they pickle to their address and
digest (both covered by the call's signature) and turn back into the value inside the
handler, after the downloaded bytes match the digest. Outside a handler they unpickle to
themselves.

A job's cancel flag is an `S3CancelFlag`: setting it on the client writes a small marker
object; in a Lambda task, ``is_set()`` looks for the marker with a HEAD request at most once
per ``poll_interval`` and remembers a positive answer.

Examples
--------
>>> key = b"0123456789abcdef-example-key"
>>> call = encode_call(key, task="t1", bucket="b", body=b"pickled", result_key="r/t1")
>>> verify_call(key, call).body
b'pickled'
>>> call["task"] = "t2"
>>> verify_call(key, call)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dask_polar.serverless.exceptions.PayloadRejectedError: payload rejected: bad signature ...
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._validation import check_positive
from . import config
from .exceptions import PayloadRejectedError, S3AccessError

__all__ = [
    "Call",
    "Result",
    "S3CancelFlag",
    "S3Reference",
    "as_key",
    "claim_key",
    "collecting",
    "digest",
    "encode_call",
    "encode_result",
    "resolving",
    "s3_error",
    "slug",
    "verify_call",
    "verify_result",
]

logger = logging.getLogger("dask_polar.serverless")

#: 2: calls carry a signed ``call_id`` and ``expires`` (version 1 handlers cannot check them).
VERSION = 2
#: S3 error codes meaning "these credentials may not do this".
ACCESS_CODES = frozenset({
    "403", "AccessDenied", "AllAccessDisabled", "AuthorizationHeaderMalformed",
    "ExpiredToken", "InvalidAccessKeyId", "InvalidToken", "SignatureDoesNotMatch",
})
MIN_KEY_BYTES = 16


def as_key(key: str | bytes | None) -> bytes:
    """The signing key as bytes: ``key``, else the ``DASK_POLAR_LAMBDA_KEY`` variable.

    Raises
    ------
    TypeError
        If ``key`` is neither str nor bytes.
    ValueError
        If there is no key, or it is shorter than 16 bytes.
    """
    if key is None:
        key = os.environ.get(config.KEY_ENV)
        if not key:
            raise ValueError(
                f"no signing key: pass key=... or set {config.KEY_ENV} (the same value as the "
                f"function's), e.g. to the output of "
                f"`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def digest(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _signature(key: bytes, fields: Mapping[str, Any]) -> str:
    signed = {name: value for name, value in fields.items() if name not in ("sig", "body", "value")}
    message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_signature(key: bytes, payload: Any, kind: str) -> None:
    if not isinstance(payload, dict) or payload.get("dask_polar") != VERSION:
        raise PayloadRejectedError(f"not a dask_polar {kind} (protocol version {VERSION})")
    if payload.get("kind") != kind:
        raise PayloadRejectedError(f"expected a {kind!r} payload, got {payload.get('kind')!r}")
    sig = payload.get("sig")
    if not isinstance(sig, str) or not sig:
        raise PayloadRejectedError("unsigned payload (no 'sig' field)")
    if not hmac.compare_digest(sig, _signature(key, payload)):
        raise PayloadRejectedError(
            f"bad signature (the key differs from the function's {config.KEY_ENV}, "
            f"or the payload was altered)"
        )


def _inline(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _decode_inline(text: Any, expected: str) -> bytes:
    if not isinstance(text, str):
        raise PayloadRejectedError("inline data is not a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise PayloadRejectedError(f"inline data is not valid base64 ({err})") from None
    check_digest(data, expected, "inline data")
    return data


def check_digest(data: bytes, expected: str, what: str) -> None:
    """Raise `PayloadRejectedError` unless ``sha256(data) == expected``."""
    if not hmac.compare_digest(digest(data), str(expected)):
        raise PayloadRejectedError(f"{what} does not match its signed SHA-256 digest (altered?)")


@dataclass
class Call:
    """A verified call: ``body`` (inline) or ``body_key`` (in S3, check ``body_sha256``)."""

    task: str
    bucket: str
    body: bytes | None
    body_key: str | None
    body_sha256: str
    result_key: str
    inline_limit: int
    call_id: str
    expires: float


def claim_key(result_key: str, call_id: str) -> str:
    """The S3 key that marks call ``call_id`` as run (the handler's conditional put): beside
    its result, under its job's prefix, so the job's cleanup deletes it."""
    folder = result_key.rpartition("/")[0]
    return f"{folder}/claims/{call_id}" if folder else f"claims/{call_id}"


def encode_call(
    key: bytes,
    *,
    task: str,
    bucket: str,
    body: bytes,
    result_key: str,
    body_key: str | None = None,
    inline_limit: int = config.INLINE_PAYLOAD_BYTES,
    lifetime: float = config.CALL_LIFETIME,
) -> dict[str, Any]:
    """The signed envelope of a call; the body travels inline unless ``body_key`` is given.

    It gets a fresh random ``call_id`` and expires ``lifetime`` seconds from now (at most
    ``config.MAX_CALL_LIFETIME``): sign it just before sending it.
    """
    lifetime = check_positive("lifetime", lifetime)
    if lifetime > config.MAX_CALL_LIFETIME:
        raise ValueError(
            f"lifetime must be <= {config.MAX_CALL_LIFETIME:g} seconds, got {lifetime:g}"
        )
    fields = {
        "dask_polar": VERSION,
        "kind": "call",
        "task": task,
        "bucket": bucket,
        "body_key": body_key,
        "body_sha256": digest(body),
        "result_key": result_key,
        "inline_limit": int(inline_limit),
        "call_id": secrets.token_hex(16),
        "expires": round(time.time() + lifetime, 3),
    }
    fields["body"] = None if body_key is not None else _inline(body)
    fields["sig"] = _signature(key, fields)
    return fields


def verify_call(key: bytes, payload: Any, *, now: float | None = None) -> Call:
    """Check a call's signature, expiry (and an inline body's digest) before anything is
    unpickled.

    Parameters
    ----------
    key : bytes
    payload : the JSON envelope
    now : float, optional
        The current Unix time (default ``time.time()``).

    Raises
    ------
    PayloadRejectedError
        Unsigned, wrongly signed, malformed, altered or expired, or expiring more than
        ``config.MAX_CALL_LIFETIME`` seconds ahead.
    """
    _check_signature(key, payload, "call")
    expires = payload.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise PayloadRejectedError(f"malformed call: 'expires' must be a number, got {expires!r}")
    now = time.time() if now is None else now
    if now > expires:
        raise PayloadRejectedError(
            f"expired call (task {payload.get('task')!r}, expired {now - expires:.1f} s ago): a "
            f"replayed payload, or the client's clock is behind the function's"
        )
    if expires - now > config.MAX_CALL_LIFETIME:
        raise PayloadRejectedError(
            f"call expires too far in the future ({expires - now:.0f} s > "
            f"{config.MAX_CALL_LIFETIME:g} s): the client's clock is ahead of the function's"
        )
    try:
        body_key = payload["body_key"]
        body = None
        if body_key is None:
            body = _decode_inline(payload["body"], payload["body_sha256"])
        return Call(
            task=str(payload["task"]), bucket=str(payload["bucket"]), body=body,
            body_key=body_key, body_sha256=str(payload["body_sha256"]),
            result_key=str(payload["result_key"]), inline_limit=int(payload["inline_limit"]),
            call_id=str(payload["call_id"]), expires=float(expires),
        )
    except KeyError as err:
        raise PayloadRejectedError(f"malformed call: missing field {err}") from None


@dataclass
class Result:
    """A verified result: ``value`` (inline) or ``value_key`` (in S3, check ``value_sha256``)."""

    task: str
    ok: bool
    value: bytes | None
    value_key: str | None
    value_sha256: str
    traceback: str | None
    error: str | None
    stats: dict[str, Any]


def encode_result(
    key: bytes,
    *,
    task: str,
    ok: bool,
    value: bytes,
    value_key: str | None = None,
    traceback: str | None = None,
    error: str | None = None,
    stats: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed envelope of a result (``ok``) or of a raised exception (not ``ok``)."""
    fields = {
        "dask_polar": VERSION,
        "kind": "result",
        "task": task,
        "ok": bool(ok),
        "value_key": value_key,
        "value_sha256": digest(value),
        "traceback": traceback,
        "error": error,
        "stats": dict(stats or {}),
    }
    fields["value"] = None if value_key is not None else _inline(value)
    fields["sig"] = _signature(key, fields)
    return fields


def verify_result(key: bytes, payload: Any, task: str) -> Result:
    """Check a result's signature, its task id and an inline value's digest.

    Raises
    ------
    PayloadRejectedError
    """
    _check_signature(key, payload, "result")
    if payload.get("task") != task:
        raise PayloadRejectedError(f"result of task {payload.get('task')!r} returned for {task!r}")
    try:
        value_key = payload["value_key"]
        value = None
        if value_key is None:
            value = _decode_inline(payload["value"], payload["value_sha256"])
        return Result(
            task=task, ok=bool(payload["ok"]), value=value, value_key=value_key,
            value_sha256=str(payload["value_sha256"]), traceback=payload.get("traceback"),
            error=payload.get("error"), stats=dict(payload.get("stats") or {}),
        )
    except KeyError as err:
        raise PayloadRejectedError(f"malformed result: missing field {err}") from None


def slug(key: Any) -> str:
    """A short, S3-safe rendering of a graph key (for readable object names).

    Examples
    --------
    >>> slug(("polar-work-ab12", 3, 0))
    'polar-work-ab12-3-0'
    """
    if key is None:
        return ""
    text = "-".join(map(str, key)) if isinstance(key, tuple) else str(key)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:80].strip("-")


def s3_error(
    exc: BaseException, operation: str, bucket: str, key: str | None, who: str
) -> BaseException:
    """``exc`` as an `S3AccessError` if S3 refused the credentials, else ``exc`` itself."""
    response = getattr(exc, "response", None)
    code = str(((response or {}).get("Error") or {}).get("Code", ""))
    if code in ACCESS_CODES:
        return S3AccessError(operation, bucket, key, code, who)
    return exc


# -- references ---------------------------------------------------------------------------

#: Inside a handler: the object that turns references into values (see `resolving`).
_RESOLVER: contextvars.ContextVar[Any] = contextvars.ContextVar("dask_polar_resolver", default=None)
#: While the executor pickles a call: the keys of the references it contains (see `collecting`).
_COLLECTOR: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "dask_polar_refs", default=None
)


class S3Reference:
    """A value stored once in S3; a task receives the value itself.

    Pickles to its address and digest only. Unpickled inside the handler it becomes the
    value (downloaded, digest checked, then unpickled); anywhere else, itself.

    Parameters
    ----------
    bucket, key : str
    sha256 : str
        Hex digest of the stored bytes.
    size : int
        Bytes stored.
    """

    __slots__ = ("bucket", "key", "sha256", "size", "__weakref__")

    def __init__(self, bucket: str, key: str, sha256: str, size: int) -> None:
        self.bucket, self.key, self.sha256, self.size = bucket, key, sha256, int(size)

    def __reduce__(self):
        collector = _COLLECTOR.get()
        if collector is not None:
            collector.append(self.key)
        return (_load_reference, (self.bucket, self.key, self.sha256, self.size))

    def __repr__(self) -> str:
        return f"<S3Reference s3://{self.bucket}/{self.key} {self.size} bytes>"


def _load_reference(bucket: str, key: str, sha256: str, size: int) -> Any:
    resolver = _RESOLVER.get()
    if resolver is None:
        return S3Reference(bucket, key, sha256, size)
    return resolver.load(bucket, key, sha256, size)


@contextlib.contextmanager
def collecting() -> Iterator[list[str]]:
    """Within the block, pickled references append their keys to the yielded list (so the
    executor knows which uploads a call must wait for, at any nesting depth)."""
    keys: list[str] = []
    token = _COLLECTOR.set(keys)
    try:
        yield keys
    finally:
        _COLLECTOR.reset(token)


@contextlib.contextmanager
def resolving(resolver: Any) -> Iterator[None]:
    """Within the block, unpickled references and flags use ``resolver`` (the handler's):
    ``resolver.load(bucket, key, sha256, size) -> value`` and ``resolver.s3`` (a client)."""
    token = _RESOLVER.set(resolver)
    try:
        yield
    finally:
        _RESOLVER.reset(token)


# -- cancel flag --------------------------------------------------------------------------


class S3CancelFlag:
    """A job's cancel flag: an S3 marker object that Lambda tasks poll, throttled.

    The same interface as ``threading.Event`` (``set``, ``is_set``, ``wait``), which is what
    work tasks use (`dask_polar.array._tasks.coded_product`). On the client `LambdaExecutor`
    creates it per job (`LambdaExecutor.cancel_flag`) and setting it marks the job finished
    (the executor writes the marker and, once the job's invocations are back, deletes the
    job's objects). In a task, ``is_set()`` sends at most one HEAD request per
    ``poll_interval`` and remembers a positive answer; errors count as "not set".

    Parameters
    ----------
    bucket, key : str
        Where the marker is written.
    poll_interval : float
        Seconds between two HEAD requests in a task.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        poll_interval: float = config.POLL_INTERVAL,
        *,
        s3: Any = None,
        on_set: Callable[[S3CancelFlag], None] | None = None,
    ) -> None:
        self.bucket, self.key, self.poll_interval = bucket, key, float(poll_interval)
        self._s3 = s3
        self._on_set = on_set
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self.polls = 0  # HEAD requests sent (tests and benchmarks)

    def set(self) -> None:
        """Set the flag (on the client: the executor writes the marker object)."""
        if self._event.is_set():
            return
        self._event.set()
        if self._on_set is not None:
            self._on_set(self)
        else:
            self._client().put_object(Bucket=self.bucket, Key=self.key, Body=b"")

    def is_set(self) -> bool:
        """Whether the job was cancelled; polls S3 at most once per ``poll_interval``."""
        if self._event.is_set() or self._on_set is not None:
            return self._event.is_set()
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.poll_interval:
                return False
            self._checked = now
            self.polls += 1
        try:
            self._client().head_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # keep working; say why once if it is not the usual answer
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 404: no marker; 403: no marker either, for a role without s3:ListBucket
            if status not in (403, 404) and self.polls == 1:
                logger.warning("cannot poll cancel flag s3://%s/%s: %s", self.bucket, self.key, exc)
            return False
        self._event.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds pass; return ``is_set()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            step = self.poll_interval if remaining is None else min(self.poll_interval, remaining)
            self._event.wait(step)
        return True

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def __reduce__(self):
        return (_load_flag, (self.bucket, self.key, self.poll_interval))

    def __repr__(self) -> str:
        state = "set" if self._event.is_set() else "clear"
        return f"<S3CancelFlag s3://{self.bucket}/{self.key} {state}>"


def _load_flag(bucket: str, key: str, poll_interval: float) -> S3CancelFlag:
    resolver = _RESOLVER.get()
    return S3CancelFlag(bucket, key, poll_interval, s3=getattr(resolver, "s3", None))
