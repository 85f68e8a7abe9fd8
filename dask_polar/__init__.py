"""dask_polar: straggler-resilient matrix products for Dask, with polar codes."""

from . import codes
from .exceptions import NotDecodableError

__version__ = "0.1.0.dev0"

__all__ = ["NotDecodableError", "codes", "__version__"]
