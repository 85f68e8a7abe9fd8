"""Benchmarks of dask_polar: ``python -m benchmarks [--quick] [names...]`` (see ``__main__``)."""
