"""Episode validation, in one place for every way into a dataset: the convert pipeline checks each episode a
reader yields, the store checks what other code appends, and each episode is checked once.

Messages follow DataError's style: the file, the episode (and key) in brackets, what is wrong; what was expected.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from robopolicy.errors import DataError

Schema = dict[str, tuple[tuple[int, ...], str]]
"""Per-step shape and dtype of every array of an episode."""


def features_of(episode: Mapping[str, np.ndarray]) -> Schema:
    return {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in episode.items()}


def validate_episode(
    path: Path | str,
    where: str,
    episode: Mapping[str, np.ndarray],
    action_key: str = "action",
    expected: Schema | None = None,
    reference: str = "the first episode",
) -> Schema:
    """Reject what would poison training: no actions, ragged or empty arrays, non-finite actions, and arrays
    that differ from `expected` (the keys, shapes and dtypes of `reference`). Returns the episode's schema."""
    if not episode:
        raise DataError(path, where, "episode has no arrays; expected per-step arrays and actions")
    if action_key not in episode:
        raise DataError(path, f"{where}/{action_key}", "missing; expected the episode's actions")
    n = len(episode[action_key]) if np.ndim(episode[action_key]) else -1
    for key, arr in episode.items():
        rows = len(arr) if np.ndim(arr) else -1
        if rows != n:
            raise DataError(path, f"{where}/{key}", f"has {rows} rows; expected {n} (the length of {action_key!r}): "
                                                   "all arrays share their first (time) axis")
    if n <= 0:
        raise DataError(path, where, "empty episode: expected at least one step")
    actions = episode[action_key]
    if np.issubdtype(actions.dtype, np.floating) and not np.isfinite(actions).all():
        step = int(np.argwhere(~np.isfinite(actions))[0][0])
        raise DataError(path, f"{where}/{action_key}", f"NaN or inf at step {step}; expected finite actions")
    schema = features_of(episode)
    if expected:
        if set(schema) != set(expected):
            raise DataError(path, where, f"keys {sorted(schema)} differ from {reference}'s {sorted(expected)}")
        for key, (shape, dtype) in schema.items():
            if (shape, dtype) != expected[key]:
                want_shape, want_dtype = expected[key]
                raise DataError(path, f"{where}/{key}",
                                f"shape {shape} {dtype}; expected {want_shape} {want_dtype} as in {reference}")
    return schema
