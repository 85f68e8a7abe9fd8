"""The polar.* config: YAML defaults in sync with the options that read them."""

from __future__ import annotations

import pathlib

import dask
import yaml

import dask_polar
from dask_polar.array import CodedOptions


def test_yaml_defaults_are_exactly_the_options():
    path = pathlib.Path(dask_polar.__file__).with_name("polar.yaml")
    keys = set(yaml.safe_load(path.read_text())["polar"])
    options = {name.replace("_", "-") for name in CodedOptions.__dataclass_fields__} - {"n"}
    # min-size is the rewrite's, unresponsive the cluster watch's, max-tasks a limit of
    # make_code's, auto the planner's (code="auto"): none is a product option
    assert keys == options | {"min-size", "unresponsive", "max-tasks", "auto"}


def test_defaults_are_loaded_and_keywords_win():
    assert dask.config.get("polar.redundancy") == 2.0
    with dask.config.set({"polar.retries": 5}):
        assert CodedOptions.resolve().retries == 5
        assert CodedOptions.resolve(retries=1).retries == 1
