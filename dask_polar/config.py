"""dask_polar's defaults in Dask's config, under ``polar.*`` (see ``polar.yaml``).

Every key can be set as usual: ``dask.config.set({"polar.redundancy": 3})``, a YAML file in
``~/.config/dask/``, or the environment (``DASK_POLAR__REDUNDANCY=3``).
"""

from __future__ import annotations

import pathlib
from typing import Any

import dask.config
import yaml

__all__ = ["get"]

_DEFAULTS = pathlib.Path(__file__).with_name("polar.yaml")
with _DEFAULTS.open() as f:
    dask.config.update_defaults(yaml.safe_load(f))


def get(key: str, override: Any = None) -> Any:
    """``override`` if given, else the config value ``polar.<key>``."""
    return dask.config.get(f"polar.{key}") if override is None else override
