"""Demonstration datasets: the native zarr store, the sequence sampler, and converters between formats."""
