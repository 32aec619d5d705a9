"""Checkpoints: a directory of config.json + model.safetensors (+ train_state.* for resume). No pickle.

Written to a temporary sibling directory and renamed into place (`atomic_output`, shared with the converters), so
a crash never leaves a half-written checkpoint. The format carries a version number; loaders reject what they
cannot read with the file and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robopolicy import __version__
from robopolicy.atomic import atomic_output
from robopolicy.errors import CheckpointError
from robopolicy.specs import ConfigError, PolicyConfig, from_dict, to_dict

FORMAT = "robopolicy-policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_TENSORS_FILE = "train_state.safetensors"
TRAIN_JSON_FILE = "train_state.json"
EMA_PREFIX = "ema."


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without aliases (cameras that share a trunk), contiguous, detached on the CPU."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.numel())
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().cpu().contiguous()
    return out


def save_checkpoint(path: str | Path, policy: torch.nn.Module, ema_state: Mapping[str, torch.Tensor] | None = None,
                    train_tensors: Mapping[str, torch.Tensor] | None = None,
                    train_json: Mapping[str, Any] | None = None, extra_config: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically. `ema_state` maps parameter names to EMA weights;
    `extra_config` adds top-level entries to config.json (the trainer records its settings there)."""
    dst = Path(path)
    with atomic_output(dst, overwrite=True) as tmp:
        tmp.mkdir()
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "robopolicy_version": __version__,
                  "policy": to_dict(policy.config), **(extra_config or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        tensors = unique_state(policy)
        for name, value in (ema_state or {}).items():
            tensors[EMA_PREFIX + name] = value.detach().cpu().contiguous()
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": FORMAT})
        if train_tensors is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in train_tensors.items()},
                      str(tmp / TRAIN_TENSORS_FILE))
        if train_json is not None:
            (tmp / TRAIN_JSON_FILE).write_text(json.dumps(train_json, indent=2))
    return dst


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json, checked for format and version."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: not found (is {path} a robopolicy checkpoint directory?)")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{file}: field 'format' expected {FORMAT!r}, got {got!r}")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: field 'format_version' expected an integer <= {FORMAT_VERSION}, got {version!r}"
        )
    if "policy" not in config:
        raise CheckpointError(f"{file}: field 'policy' is missing")
    return config


def read_policy_config(path: str | Path) -> PolicyConfig:
    """The validated PolicyConfig stored in a checkpoint directory."""
    config = read_config(path)
    try:
        return from_dict(PolicyConfig, config["policy"], "policy")
    except ConfigError as exc:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: {exc}") from exc


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: not found")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: unreadable or corrupt safetensors file ({exc})") from exc


def _checked_state(path: Path, policy: torch.nn.Module, tensors: Mapping[str, torch.Tensor],
                   use_ema: bool) -> dict[str, torch.Tensor]:
    """The raw (or EMA where saved) state dict, checked name by name and shape by shape against `policy`."""
    state = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    if use_ema:
        state.update({k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)})
    expected = unique_state(policy)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(policy.state_dict()))
    if missing or unexpected:
        raise CheckpointError(f"{path / MODEL_FILE}: tensors do not match the config "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, value in state.items():
        if name in expected and value.shape != expected[name].shape:
            raise CheckpointError(f"{path / MODEL_FILE}: tensor {name!r} has shape {tuple(value.shape)}, "
                                  f"expected {tuple(expected[name].shape)}")
    return state


def load_state(path: str | Path, module: torch.nn.Module, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict for `module` (EMA weights where saved and `use_ema`), checked against it.
    Load it with ``strict=False``: aliases of shared tensors are stored once."""
    path = Path(path)
    return _checked_state(path, module, _load_tensors(path / MODEL_FILE), use_ema)


def load_weights(path: str | Path, policy: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(raw, EMA) state dicts of a checkpoint, checked against `policy`, from one read of the weights file."""
    path = Path(path)
    tensors = _load_tensors(path / MODEL_FILE)
    return _checked_state(path, policy, tensors, use_ema=False), _checked_state(path, policy, tensors, use_ema=True)


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) saved for exact resume."""
    path = Path(path)
    json_file = path / TRAIN_JSON_FILE
    if not json_file.is_file():
        raise CheckpointError(f"{json_file}: not found (checkpoint has no training state to resume from)")
    try:
        meta = json.loads(json_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{json_file}: not valid JSON ({exc})") from exc
    return _load_tensors(path / TRAIN_TENSORS_FILE), meta
