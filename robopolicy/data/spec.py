"""The self-describing attributes of a native store: what each key is, at what rate, and where it came from.

Root attributes (all JSON):
  format_version: int
  fps: float | None
  obs: {key: {shape, dtype, kind: "rgb"|"low_dim", units, names}}
  action: {key, shape, dtype, units, names, convention: {mode: absolute|delta|unknown, rotation: ...}}
  extras: {key: {shape, dtype}}       per-step arrays that are neither observation nor action
  source: {format, path, ...}         what the data was converted from, with format-specific provenance
  provenance: [{tool, version, time, command}]
Stores written by other tools (diffusion_policy) have none of this; `describe` then infers it.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robopolicy import __version__
from robopolicy.data.replay_buffer import ReplayBuffer, looks_like_rgb

DEFAULT_ACTION_KEY = "action"
# Per-step arrays that are not observations even when the store does not say so.
_NON_OBS_KEYS = {"reward", "rewards", "done", "dones", "terminated", "truncated", "terminations", "truncations"}


def feature(
    arr: np.ndarray, kind: str | None = None, names: Sequence[str] | None = None, units: str | None = None
) -> dict[str, Any]:
    """Describe a per-step array (time axis first) as a feature entry."""
    shape = list(arr.shape[1:])
    if kind is None:
        kind = "rgb" if looks_like_rgb(tuple(shape), arr.dtype) else "low_dim"
    return {"shape": shape, "dtype": str(arr.dtype), "kind": kind, "units": units,
            "names": list(names) if names else None}


def build_attrs(
    episode: Mapping[str, np.ndarray],
    obs_keys: Sequence[str],
    action_key: str = DEFAULT_ACTION_KEY,
    fps: float | None = None,
    convention: Mapping[str, str] | None = None,
    names: Mapping[str, Sequence[str]] | None = None,
    source: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Attributes for a store whose episodes look like `episode` (the first one is enough)."""
    names = names or {}
    obs = {k: feature(episode[k], names=names.get(k)) for k in obs_keys}
    action = {"key": action_key, **feature(episode[action_key], kind="low_dim", names=names.get(action_key))}
    action["convention"] = dict(convention or {"mode": "unknown", "rotation": "unknown"})
    extras = {
        k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype)}
        for k, v in episode.items()
        if k not in obs and k != action_key
    }
    stamp = {
        "tool": "robopolicy",
        "version": __version__,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    return {
        "fps": fps,
        "obs": obs,
        "action": action,
        "extras": extras,
        "source": dict(source or {}),
        "provenance": [stamp],
    }


def describe(rb: ReplayBuffer) -> dict[str, Any]:
    """The store's obs/action description: from its attributes, or inferred for foreign stores."""
    attrs = rb.attrs
    if "obs" in attrs and "action" in attrs:
        return {"obs": attrs["obs"], "action": attrs["action"], "fps": attrs.get("fps")}
    action_key = DEFAULT_ACTION_KEY
    obs = {}
    for key in rb.keys:
        if key == action_key or key in _NON_OBS_KEYS:
            continue
        arr = rb.array(key)
        obs[key] = feature(np.empty((0, *arr.shape[1:]), dtype=arr.dtype))
    action: dict[str, Any] = {"key": action_key}
    if action_key in rb.keys:
        arr = rb.array(action_key)
        action.update(feature(np.empty((0, *arr.shape[1:]), dtype=arr.dtype), kind="low_dim"))
    return {"obs": obs, "action": action, "fps": attrs.get("fps")}
