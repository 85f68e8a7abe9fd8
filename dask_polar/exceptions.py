"""The exceptions dask_polar raises; each subclasses a builtin so plain handlers still work."""

from __future__ import annotations

__all__ = ["NotDecodableError"]


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
    """

    def __init__(
        self, received: int, needed: int, missing: tuple[int, ...] | list[int], code: str = ""
    ) -> None:
        self.received = int(received)
        self.needed = int(needed)
        self.missing = tuple(int(i) for i in missing)
        shown = ", ".join(map(str, self.missing[:20]))
        if len(self.missing) > 20:
            shown += ", ..."
        where = f"{code}: " if code else ""
        super().__init__(
            f"{where}not decodable from {self.received} results (k={self.needed}); "
            f"{len(self.missing)} data block(s) still unknown: [{shown}]"
        )

    def __reduce__(self):  # keep attributes across pickling (distributed, Lambda)
        return (type(self), (self.received, self.needed, self.missing))
