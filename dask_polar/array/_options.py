"""The options of a coded product: `CodedOptions` (keywords over ``polar.*`` config), the
code they make (`make_code`), the operands' checks and the choice of layout."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import dask.array as da
import numpy as np
from dask.utils import typename

from .. import config
from .._validation import check_bool, check_int, check_positive
from ..codes import (
    ErasureCode,
    LocalProductCode,
    MDSCode,
    PolarCode,
    ReplicationCode,
    UncodedCode,
)
from ..codes.construction import check_runtimes
from ..stragglers.faults import as_faults

__all__ = [
    "CODE_NAMES", "LAYOUTS", "MAX_REDUNDANCY", "CodedOptions", "as_matrix", "make_code",
    "split_rows", "use_cluster_layout",
]

CODE_NAMES = ("auto", "polar", "mds", "replication", "uncoded", "local-product")
LAYOUTS = ("auto", "cluster", "driver")


def make_code(
    code: str | ErasureCode,
    k: int,
    *,
    n: int | None = None,
    redundancy: float | None = None,
    straggler_prob: float | None = None,
    runtimes: Any = None,
    systematic: bool = False,
) -> ErasureCode:
    """Build the code for ``k`` data blocks from a name (or check a code object).

    Parameters
    ----------
    code : {"polar", "mds", "replication", "uncoded", "local-product"} or ErasureCode
        (``"auto"`` is chosen per product before a code is made: `CodedOptions.make_code`)
    k : int
        Number of data blocks.
    n : int, optional
        Number of coded tasks. Default: the next power of two >= ``redundancy * k`` for polar,
        ``round(redundancy * k)`` for MDS, ``k * round(redundancy)`` for replication.
    redundancy : float, optional
        ``n / k`` to aim for (default from ``polar.redundancy``, 2).
    straggler_prob, runtimes
        Polar design inputs (see `dask_polar.codes.PolarCode`).
    systematic : bool
        Whether a polar code is systematic (``A``'s own row blocks at its information
        positions) or not (see `dask_polar.codes.PolarCode`).

    Returns
    -------
    ErasureCode
    """
    if isinstance(code, ErasureCode):
        if code.k != k:
            raise ValueError(f"code has k={code.k} data blocks but the product has k={k}")
        if n is not None and n != code.n:
            raise ValueError(f"n={n} disagrees with the code's n={code.n}")
        return code
    if not isinstance(code, str):
        raise TypeError(
            f"code must be one of {CODE_NAMES} or a dask_polar.codes code, got {type(code).__name__}"
        )
    _check_code_name(code)
    redundancy = _check_redundancy(config.get("redundancy", redundancy))
    if code != "polar" and (straggler_prob is not None or runtimes is not None):
        raise ValueError("straggler_prob and runtimes design polar codes only")
    max_tasks = check_int("polar.max-tasks", config.get("max-tasks"), minimum=1)

    def bounded(count: int, what: str = "n") -> int:
        """``count`` coded tasks, if no more than ``polar.max-tasks`` (checked before the
        code is built: a dense code of a million rows would not finish building)."""
        return check_int(what, count, minimum=k, maximum=max_tasks, limit="polar.max-tasks")

    if n is not None:
        n = bounded(n)
    if code == "polar":
        if n is None:
            n = 1 << max(0, math.ceil(math.log2(math.ceil(redundancy * k - 1e-9))))
            bounded(n, f"n (the next power of two >= redundancy x k = {redundancy:g} x {k})")
        return PolarCode(
            n, k, straggler_prob=straggler_prob, runtimes=runtimes, systematic=systematic
        )
    if code == "mds":
        return MDSCode(n if n is not None else bounded(max(k, round(redundancy * k))), k)
    if code == "replication":
        if n is not None and n % k:
            raise ValueError(f"replication needs n to be a multiple of k={k}, got n={n}")
        replicas = n // k if n is not None else max(1, round(redundancy))
        bounded(k * replicas)
        return ReplicationCode(k, replicas)
    if code == "uncoded":
        if n is not None and n != k:
            raise ValueError(f"uncoded has n = k = {k}, got n={n}")
        return UncodedCode(bounded(k, "k"))
    made = LocalProductCode(k)
    bounded(made.n)
    if n is not None and n != made.n:
        raise ValueError(f"local-product with k={k} has n={made.n}, got n={n}")
    return made


def as_matrix(name: str, x: Any, *, vector: bool = False) -> da.Array:
    """``x`` as a 2-D dask array of a numeric dtype with numpy chunks of known sizes, or a
    TypeError/ValueError naming ``name``. With ``vector``, a 1-D ``x`` is accepted too, as
    one column."""
    if getattr(x, "dtype", None) == object:  # before da.asarray, which would blame the type
        raise TypeError(f"{name} must have a numeric dtype, got object")
    if not isinstance(x, da.Array):
        try:
            x = da.asarray(x)
        except Exception as exc:  # anything numpy cannot make an array of
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    if type(x._meta) is not np.ndarray:
        # a coded product would drop a mask (numpy's and Dask's @ raise) or densify sparse data
        raise TypeError(
            f"{name} must be a dense array with numpy chunks, got chunks of type "
            f"{typename(type(x._meta))}; masked and sparse arrays are not supported "
            "(use a plain A @ B)"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"{name} must have a numeric dtype, got {x.dtype}")
    if vector and x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        dims = "1-D or 2-D" if vector else "2-D"
        raise ValueError(f"{name} must be {dims}, got {x.ndim}-D with shape {x.shape}")
    if any(math.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )
    return x


#: The largest ``redundancy`` (``n / k``) accepted: more coded tasks than this per data block
#: cost more than any straggler could (and 1e9 would exhaust memory building the code).
MAX_REDUNDANCY = 64


def _check_code_name(code: str) -> None:
    if code not in CODE_NAMES:
        raise ValueError(f"code must be one of {CODE_NAMES}, got {code!r}")


def _check_redundancy(redundancy: Any) -> float:
    """``redundancy`` as a float in ``[1, MAX_REDUNDANCY]``, or a TypeError/ValueError."""
    if isinstance(redundancy, bool) or not isinstance(redundancy, numbers.Real):
        raise TypeError(f"redundancy must be a real number, got {type(redundancy).__name__}")
    if not 1 <= redundancy <= MAX_REDUNDANCY:
        raise ValueError(f"redundancy must be between 1 and {MAX_REDUNDANCY}, got {redundancy}")
    return float(redundancy)


@dataclass(frozen=True)
class CodedOptions:
    """How coded products are built and run, validated, with ``polar.*`` config defaults.

    Shared by `coded_matmul` and the graph rewrite (`dask_polar.optimize`); see
    `coded_matmul` for the meaning of each field.
    """

    code: str | ErasureCode = "auto"
    n: int | None = None
    redundancy: float = 2.0
    straggler_prob: float | None = None
    runtimes: Any = None
    systematic: bool | None = None
    executor: Any = None
    stragglers: Any = None
    seed: int = 0
    retries: int = 2
    backup: float | None = None
    timeout: float | None = None
    local_workers: int | None = None
    panel_rows: int | None = None
    layout: str = "auto"

    @classmethod
    def resolve(cls, **given: Any) -> CodedOptions:
        """Options from keyword arguments, falling back to ``polar.<name>`` config values."""
        values = {}
        for f in fields(cls):
            value = given.pop(f.name, None)
            if value is None and f.name != "n":
                value = config.get(f.name.replace("_", "-"))
            values[f.name] = f.default if value is None else value
        if given:
            raise TypeError(f"unexpected option(s): {sorted(given)}")
        if not isinstance(values["code"], (str, ErasureCode)):
            raise TypeError(
                f"code must be one of {CODE_NAMES} or a dask_polar.codes code, "
                f"got {type(values['code']).__name__}"
            )
        if isinstance(values["code"], str):  # checked now, not at a later compute
            _check_code_name(values["code"])
        values["redundancy"] = _check_redundancy(values["redundancy"])
        if values["systematic"] is not None:
            values["systematic"] = check_bool("systematic", values["systematic"])
        as_faults(values["stragglers"])  # its type now; its length once n is known
        if values["runtimes"] is not None:
            check_runtimes(values["runtimes"])
        values["seed"] = check_int("seed", values["seed"], minimum=0)
        values["retries"] = check_int("retries", values["retries"], minimum=0)
        for name in ("local_workers", "panel_rows"):
            if values[name] is not None:
                values[name] = check_int(name, values[name], minimum=1)
        if values["layout"] not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {values['layout']!r}")
        executor = values["executor"]
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(
                "executor must be a concurrent.futures.Executor (an object with submit), "
                f"got {type(executor).__name__}"
            )
        backup = values["backup"]
        if backup is not None:
            if (
                isinstance(backup, bool) or not isinstance(backup, numbers.Real)
                or not math.isfinite(backup) or backup <= 1
            ):
                raise ValueError(f"backup must be a factor > 1 (e.g. 3.0), got {backup!r}")
            values["backup"] = float(backup)
        if values["timeout"] is not None:
            values["timeout"] = check_positive("timeout", values["timeout"])
        return cls(**values)

    def make_code(self, k: int) -> ErasureCode:
        """The code for ``k`` data blocks.

        ``systematic=None`` (the default) makes a polar code systematic: its data blocks'
        own products run first, and its parity only where they leave a gap.
        """
        systematic = True if self.systematic is None else self.systematic
        # "auto" is planned per product (`dask_polar.array._auto`) before its code is made;
        # where no plan runs (a CodedMatrix, the estimators' coded gradients) it is polar
        return make_code(
            "polar" if self.code == "auto" else self.code, k, n=self.n, redundancy=self.redundancy,
            straggler_prob=self.straggler_prob, runtimes=self.runtimes, systematic=systematic,
        )


def use_cluster_layout(options: CodedOptions) -> bool:
    """Whether a product is laid out as cluster tasks (`dask_polar.array._cluster`).

    ``layout="auto"`` chooses it when the graph will run on dask.distributed (a default
    client, or ``polar.layout: cluster`` set on a remote scheduler by
    `dask_polar.preload`), unless the job needs its driver: an ``executor`` or ``backup``
    copies, which a driving task submits as it goes.
    """
    if options.layout != "auto":
        return options.layout == "cluster"
    if options.executor is not None or options.backup is not None:
        return False
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)  # Client.get of a default client
    return type(owner).__module__.split(".")[0] == "distributed"


def split_rows(m: int, k: int) -> tuple[int, ...]:
    """``m`` rows in ``k`` blocks of ``ceil(m / k)`` rows, the last one shorter."""
    size = -(-m // k)
    sizes = [size] * (m // size) + ([m % size] if m % size else [])
    if len(sizes) != k:
        # e.g. m=10, k=4: ceil gives 3,3,3,1; fewer full blocks than k needs balancing
        base, extra = divmod(m, k)
        sizes = [base + 1] * extra + [base] * (k - extra)
    return tuple(sizes)
