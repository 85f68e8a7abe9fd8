"""Argument checks shared by the public functions: type first, then value, naming the argument."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

__all__ = ["check_int", "check_probability", "check_power_of_two"]


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
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
