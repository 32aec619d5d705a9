"""The end-to-end main job (`robopolicy demo`): collect -> zarr -> BC -> fine-tune -> evaluate -> deploy -> report."""
