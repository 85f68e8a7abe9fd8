"""Argument checks shared by the public functions: type first, then value, naming the argument."""

from __future__ import annotations

import argparse
import numbers
import os
import reprlib
from collections.abc import Callable, Iterable

import numpy as np

__all__ = [
    "as_real_array",
    "check_bool",
    "check_int",
    "check_positive",
    "check_power_of_two",
    "check_probability",
    "check_real",
    "check_seed",
    "check_shape",
    "cli_int",
    "cli_positive",
    "cli_writable_path",
]


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` as a bool if it is one (numpy's included), else raise naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
    limit: str = "",
) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``, or raise naming ``name`` (and
    ``limit``, what sets the maximum)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(
            f"{name} must be <= {maximum}{f' ({limit})' if limit else ''}, got {value}"
        )
    return value


def check_power_of_two(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a positive power of two, else raise naming ``name``."""
    value = check_int(name, value, minimum=1)
    if value & (value - 1):
        lower = 1 << (value.bit_length() - 1)
        raise ValueError(
            f"{name} must be a power of two, got {value} (nearest: {lower} or {2 * lower})"
        )
    return value


def check_probability(name: str, value: object, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1]), else raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be in {bounds}, got {value}")
    return value


def check_real(
    name: str, value: object, *, minimum: float = -np.inf, strict: bool = False
) -> float:
    """Return ``value`` as a finite float ``>= minimum`` (``> minimum`` if ``strict``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value}")
    return value


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float ``> 0`` (or ``>= 0``), else raise naming ``name``."""
    return check_real(name, value, minimum=0.0, strict=not allow_zero)


def check_shape(name: str, value: object) -> tuple[int, ...]:
    """Return ``value`` (an int or a tuple of ints, each ``>= 0``) as a shape tuple."""
    items = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) or isinstance(value, numbers.Integral):
        return tuple(check_int(name, item, minimum=0) for item in items)
    raise TypeError(
        f"{name} must be an integer or a tuple of integers, got {type(value).__name__} {value!r}"
    )


def check_seed(name: str, value: object) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``None``, an int ``>= 0``, a SeedSequence or a Generator.

    A Generator is returned as is (draws advance it); the others make a new one, so equal
    seeds give equal draws.
    """
    if value is None or isinstance(value, np.random.SeedSequence):
        return np.random.default_rng(value)
    if isinstance(value, np.random.Generator):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be None, an integer >= 0, a numpy.random.Generator or SeedSequence, "
            f"got {type(value).__name__} {value!r}"
        )
    return np.random.default_rng(check_int(name, value, minimum=0))


def as_real_array(name: str, value: object, *, allow_nan: bool = False) -> np.ndarray:
    """Return ``value`` (a real number or array of them) as a float64 array, naming ``name``."""
    def message() -> str:  # only on error: the repr of a large array costs milliseconds
        return f"{name} must be real numbers, got {type(value).__name__} {reprlib.repr(value)}"

    if isinstance(value, (bool, np.bool_)):
        raise TypeError(message())
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested sequences
        raise TypeError(message()) from err
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{message()} (dtype {array.dtype})")
    array = array.astype(np.float64, copy=False)
    if not allow_nan and np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN, got {reprlib.repr(value)}")
    return array


def as_index_mask(name: str, received: object, n: int) -> np.ndarray:
    """A boolean mask of length ``n`` from a mask or an iterable of indices.

    Booleans arrays must have length ``n``; integer indices must lie in ``[0, n)``.
    """
    if isinstance(received, np.ndarray) and received.dtype == bool:
        if received.shape != (n,):
            raise ValueError(f"{name} mask must have shape ({n},), got {received.shape}")
        return received.copy()
    if not isinstance(received, (Iterable, np.ndarray)):
        raise TypeError(
            f"{name} must be a boolean mask of length {n} or an iterable of indices, "
            f"got {type(received).__name__}"
        )
    items = list(received)
    if items and all(isinstance(i, (bool, np.bool_)) for i in items):
        if len(items) != n:
            raise ValueError(f"{name} mask must have length {n}, got {len(items)}")
        return np.asarray(items, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    for i in items:
        index = check_int(f"index in {name}", i)
        if not 0 <= index < n:
            raise ValueError(f"index in {name} must be in [0, {n}), got {index}")
        mask[index] = True
    return mask


# -- argparse types: a bad command-line value is a usage error naming the option, not a traceback


def cli_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def cli_positive(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def cli_writable_path(text: str) -> str:
    """An argparse ``type``: a file path whose directory exists and is writable (checked
    before a long run, not after it)."""
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise argparse.ArgumentTypeError(f"directory {directory!r} is not writable")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    return text
