"""The exceptions dask_polar raises; each subclasses a builtin so plain handlers still work."""

from __future__ import annotations

__all__ = ["NotDecodableError", "CodedJobError", "CodedJobTimeout", "RemoteDecodeError"]


class NotDecodableError(ValueError):
    """The results received so far do not determine every data block.

    Parameters
    ----------
    received : int
        How many coded results the decoder had.
    needed : int
        The number of data blocks ``k`` (no code decodes from fewer results).
    missing : sequence of int
        Indices of the data blocks that the received results do not determine.
    code : str, optional
        Short description of the code, used in the message.

    Attributes
    ----------
    received, needed : int
    missing : tuple of int
    code : str
    """

    def __init__(
        self, received: int, needed: int, missing: tuple[int, ...] | list[int], code: str = ""
    ) -> None:
        self.received = int(received)
        self.needed = int(needed)
        self.missing = tuple(int(i) for i in missing)
        self.code = str(code)
        shown = ", ".join(map(str, self.missing[:20]))
        if len(self.missing) > 20:
            shown += ", ..."
        where = f"{code}: " if code else ""
        super().__init__(
            f"{where}not decodable from {self.received} results (k={self.needed}); "
            f"{len(self.missing)} data block(s) still unknown: [{shown}]"
        )

    def __reduce__(self):  # keep attributes across pickling (distributed, Lambda)
        return (type(self), (self.received, self.needed, self.missing, self.code))


class CodedJobError(RuntimeError):
    """A coded job could not collect a decodable set of results, even after retries.

    Parameters
    ----------
    token : str
        The job's name.
    failures : mapping of int -> str
        Failed coded task index -> its last error (type and message).
    received : int
        Results that did arrive.
    needed : int
        The code's ``k``.

    Attributes
    ----------
    token : str
    failures : dict of int -> str
    received, needed : int
    """

    def __init__(self, token: str, failures: dict[int, str], received: int, needed: int) -> None:
        self.token = token
        self.failures = dict(failures)
        self.received = int(received)
        self.needed = int(needed)
        super().__init__(
            f"coded job {token}: {self.received} results are not decodable (k={self.needed}) "
            f"after retries; {self._failed()}"
        )

    def _failed(self) -> str:
        """``"<count> task(s) failed: task j: error; ..."`` (the first ten)."""
        listed = "; ".join(f"task {j}: {err}" for j, err in sorted(self.failures.items())[:10])
        more = f" (and {len(self.failures) - 10} more)" if len(self.failures) > 10 else ""
        return f"{len(self.failures)} task(s) failed: {listed}{more}"

    def __reduce__(self):
        return (type(self), (self.token, self.failures, self.received, self.needed))


class CodedJobTimeout(CodedJobError):
    """A coded job did not collect a decodable set of results within its ``timeout``.

    Raised after the job cancelled every task still pending.

    Parameters
    ----------
    token : str
        The job's name.
    timeout : float
        The job's time limit in seconds, measured from its start.
    pending : sequence of int
        Coded task indices still running (or queued) when the time ran out.
    failures : mapping of int -> str
        Failed coded task index -> its last error, for tasks not re-run since.
    received : int
        Results that did arrive.
    needed : int
        The code's ``k``.

    Attributes
    ----------
    token : str
    timeout : float
    pending : tuple of int
    failures : dict of int -> str
    received, needed : int
    """

    def __init__(
        self,
        token: str,
        timeout: float,
        pending: tuple[int, ...] | list[int],
        failures: dict[int, str],
        received: int,
        needed: int,
    ) -> None:
        self.token = token
        self.timeout = float(timeout)
        self.pending = tuple(sorted(int(j) for j in pending))
        self.failures = dict(failures)
        self.received = int(received)
        self.needed = int(needed)
        shown = ", ".join(map(str, self.pending[:20])) + (", ..." if len(self.pending) > 20 else "")
        failed = f"; {self._failed()}" if self.failures else ""
        # RuntimeError's own __init__: the message differs from CodedJobError's
        RuntimeError.__init__(
            self,
            f"coded job {token}: timed out after {self.timeout:g} s with {self.received} results, "
            f"not decodable (k={self.needed}); {len(self.pending)} task(s) still pending: "
            f"[{shown}]{failed}",
        )

    def __reduce__(self):
        return (
            type(self),
            (self.token, self.timeout, self.pending, self.failures, self.received, self.needed),
        )


class RemoteDecodeError(RuntimeError):
    """A decode task that ran remotely (a Lambda function decoding one row panel) failed.

    Raised after its retries, or at once for a failure a retry cannot change (a rejected
    payload, refused S3 credentials, a result object that does not match its digest, a
    malformed panel); the task's own exception is the ``__cause__``. The job returns no
    array: the other panels are discarded.

    Parameters
    ----------
    panel : int
        The panel's number.
    rows : tuple of int
        Its rows ``(start, stop)`` of every data block's result.
    attempts : int
        Invocations made for it.
    error : str
        The last error (type and message).

    Attributes
    ----------
    panel, attempts : int
    rows : tuple of int
    error : str
    """

    def __init__(self, panel: int, rows: tuple[int, int], attempts: int, error: str) -> None:
        self.panel = int(panel)
        self.rows = (int(rows[0]), int(rows[1]))
        self.attempts = int(attempts)
        self.error = str(error)
        super().__init__(
            f"decode task of panel {self.panel} (rows {self.rows[0]}:{self.rows[1]}) failed "
            f"after {self.attempts} attempt(s): {self.error}"
        )

    def __reduce__(self):
        return (type(self), (self.panel, self.rows, self.attempts, self.error))
