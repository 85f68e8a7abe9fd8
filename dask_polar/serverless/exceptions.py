"""Exceptions of the Lambda backend; each subclasses a builtin, so plain handlers still work.

A task submitted to `LambdaExecutor` fails in one of three ways:

* its function raised: the *remote* exception is raised again, with its own type and message,
  and the remote traceback chained as its ``__cause__`` (a `RemoteTraceback`); an exception
  that cannot be pickled back becomes a `RemoteError`;
* Lambda could not run it to the end: a `LambdaError` subclass (`LambdaTimeoutError`,
  `LambdaCrashError`, `LambdaThrottledError`, `PayloadTooLargeError`, or
  `LambdaFunctionError` for any other error the Lambda service reports);
* a signature or storage check failed: `PayloadRejectedError` (the function rejected an
  unsigned or tampered payload, or the executor rejected a response) or `S3AccessError`
  (S3 refused the credentials).

In a coded job each of them is an erasure: the job decodes without that task, or re-runs it.

Examples
--------
>>> err = LambdaTimeoutError(
...     "dask-polar", "Task timed out after 3.00 seconds", error_type="Sandbox.Timedout")
>>> isinstance(err, TimeoutError), isinstance(err, LambdaError)
(True, True)
>>> print(err)
Lambda function 'dask-polar' (Sandbox.Timedout): Task timed out after 3.00 seconds
"""

from __future__ import annotations

__all__ = [
    "LambdaCrashError",
    "LambdaError",
    "LambdaFunctionError",
    "LambdaThrottledError",
    "LambdaTimeoutError",
    "PayloadRejectedError",
    "PayloadTooLargeError",
    "RemoteError",
    "RemoteTraceback",
    "S3AccessError",
]


class LambdaError(RuntimeError):
    """An invocation that Lambda could not run to a result.

    Parameters
    ----------
    function : str
        The function name.
    message : str
        What Lambda reported.
    error_type : str, optional
        Lambda's error type (``"Sandbox.Timedout"``, ``"Runtime.ExitError"``,
        ``"TooManyRequestsException"``, ...).
    request_id : str, optional
        The invocation's request id (to find its log).
    log : str, optional
        The tail of the invocation's log, when the executor asked for it (``log_tail=True``).

    Attributes
    ----------
    function, message, error_type, request_id, log
    """

    def __init__(
        self,
        function: str,
        message: str,
        *,
        error_type: str | None = None,
        request_id: str | None = None,
        log: str | None = None,
    ) -> None:
        self.function = function
        self.message = message
        self.error_type = error_type
        self.request_id = request_id
        self.log = log
        kind = f" ({error_type})" if error_type else ""
        super().__init__(f"Lambda function {function!r}{kind}: {message}")

    def __reduce__(self):
        return (_rebuild, (type(self), (self.function, self.message), self._keywords()))

    def _keywords(self) -> dict:
        return {
            "error_type": self.error_type, "request_id": self.request_id, "log": self.log,
        }


class LambdaFunctionError(LambdaError):
    """The function failed outside the task (e.g. ``Runtime.ImportModuleError``).

    Attributes
    ----------
    stack_trace : list of str
        The stack trace Lambda reported, if any.
    """

    def __init__(self, function: str, message: str, *, stack_trace: list[str] | None = None,
                 **kwargs) -> None:
        self.stack_trace = list(stack_trace or [])
        super().__init__(function, message, **kwargs)

    def _keywords(self) -> dict:
        return {**super()._keywords(), "stack_trace": self.stack_trace}


class LambdaTimeoutError(LambdaError, TimeoutError):
    """The invocation ran past the function's timeout (``Sandbox.Timedout``)."""


class LambdaCrashError(LambdaError):
    """The execution environment died mid-invocation (``Runtime.ExitError``: exit, signal,
    out of memory)."""


class LambdaThrottledError(LambdaError):
    """Still throttled (HTTP 429, ``TooManyRequestsException``) after botocore's retries."""


class PayloadTooLargeError(LambdaError, ValueError):
    """The request exceeded Lambda's payload limit (HTTP 413)."""


class PayloadRejectedError(PermissionError):
    """A payload failed its HMAC-SHA256 signature or digest check, so it was not unpickled.

    Raised by the function for an unsigned or tampered request (the executor re-raises it),
    and by the executor for a response that does not verify. Usual cause: the executor's key
    differs from the function's ``DASK_POLAR_LAMBDA_KEY``.

    Attributes
    ----------
    reason : str
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"payload rejected: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason,))


class S3AccessError(PermissionError):
    """S3 refused a request: wrong secret (``SignatureDoesNotMatch``), unknown key id, or a
    policy that denies it.

    Attributes
    ----------
    operation : str
        The S3 operation, e.g. ``"PutObject"``.
    bucket : str
    key : str or None
    code : str
        S3's error code (``"SignatureDoesNotMatch"``, ``"AccessDenied"``, ``"403"``, ...).
    who : str
        ``"executor"`` or ``"function"``: whose credentials were refused.
    """

    def __init__(self, operation: str, bucket: str, key: str | None, code: str, who: str) -> None:
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.code = code
        self.who = who
        where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
        hint = (
            "check the executor's AWS credentials (session, AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY) and its IAM policy"
            if who == "executor"
            else "check the function's execution role (or its AWS_* environment variables)"
        )
        super().__init__(f"S3 refused {operation} on {where} ({code}) for the {who}: {hint}")

    def __reduce__(self):
        return (type(self), (self.operation, self.bucket, self.key, self.code, self.who))


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside a Lambda invocation (its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(RuntimeError):
    """A remote exception whose object could not travel back; its type name and message did.

    Attributes
    ----------
    type_name : str
        ``module.QualifiedName`` of the remote exception.
    message : str
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self):
        return (type(self), (self.type_name, self.message))


def _rebuild(cls: type, args: tuple, keywords: dict) -> BaseException:
    return cls(*args, **keywords)
