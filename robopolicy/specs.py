"""Typed, validated configuration: observation/action specs and model/trainer settings.

Everything here is plain dataclasses (stdlib only) so that a checkpoint's JSON config can be read without
torch and a TOML recipe can be checked before any model is built. Validation errors name the field.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""


def _require(cond: bool, field_name: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: expected {expected}, got {got!r}")


@dataclass
class ObsSpec:
    """One observation key. rgb: uint8 HWC image; low_dim: float vector."""

    key: str
    shape: tuple[int, ...]
    kind: Literal["rgb", "low_dim"] = "low_dim"
    units: str = ""

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        _require(bool(self.key), "obs.key", "a non-empty string", self.key)
        _require(self.kind in ("rgb", "low_dim"), f"obs[{self.key}].kind", "'rgb' or 'low_dim'", self.kind)
        _require(all(s > 0 for s in self.shape), f"obs[{self.key}].shape", "positive sizes", self.shape)
        if self.kind == "rgb":
            _require(len(self.shape) == 3 and self.shape[2] == 3, f"obs[{self.key}].shape", "(H, W, 3)", self.shape)
        else:
            _require(len(self.shape) == 1, f"obs[{self.key}].shape", "(D,) for low_dim", self.shape)


@dataclass
class ActionSpec:
    """Action vector layout; bounds are informative (the normalizer uses data statistics)."""

    dim: int
    low: list[float] | None = None
    high: list[float] | None = None
    convention: Literal["absolute", "delta"] = "absolute"

    def __post_init__(self) -> None:
        _require(self.dim > 0, "action.dim", "a positive integer", self.dim)
        for name in ("low", "high"):
            bound = getattr(self, name)
            if bound is not None:
                _require(len(bound) == self.dim, f"action.{name}", f"{self.dim} values", bound)


@dataclass
class EncoderConfig:
    """Visuomotor encoder: ResNet-18/GroupNorm + spatial softmax per camera, MLP or identity for low-dim."""

    crop_shape: tuple[int, int] | None = None
    share_rgb_weights: bool = False
    num_keypoints: int = 32
    rgb_feature_dim: int = 64
    group_norm_groups: int = 16
    low_dim_hidden: list[int] = field(default_factory=list)
    low_dim_out: int = 0

    def __post_init__(self) -> None:
        if self.crop_shape is not None:
            self.crop_shape = (int(self.crop_shape[0]), int(self.crop_shape[1]))
            _require(min(self.crop_shape) >= 8, "encoder.crop_shape", "sizes >= 8", self.crop_shape)
        _require(self.num_keypoints > 0, "encoder.num_keypoints", "> 0", self.num_keypoints)
        _require(self.rgb_feature_dim > 0, "encoder.rgb_feature_dim", "> 0", self.rgb_feature_dim)
        _require(self.low_dim_out >= 0, "encoder.low_dim_out", ">= 0 (0 = identity)", self.low_dim_out)


@dataclass
class BackboneConfig:
    """Denoising/energy network. unet: diffusion_policy's 1-D temporal conditional UNet; residual_mlp: FiLM
    residual layers, for low-dim tasks (``hidden_dims`` all one width); mlp: the plain stack older checkpoints hold."""

    kind: Literal["unet", "residual_mlp", "mlp"] = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256])
    down_dims: list[int] = field(default_factory=lambda: [256, 512, 1024])
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128

    def __post_init__(self) -> None:
        _require(self.kind in ("unet", "residual_mlp", "mlp"), "backbone.kind", "'unet', 'residual_mlp' or 'mlp'",
                 self.kind)
        if self.kind == "residual_mlp":
            _require(len(set(self.hidden_dims)) == 1, "backbone.hidden_dims", "one width for residual_mlp",
                     self.hidden_dims)
        _require(len(self.hidden_dims) > 0, "backbone.hidden_dims", "at least one layer", self.hidden_dims)
        _require(len(self.down_dims) > 0, "backbone.down_dims", "at least one level", self.down_dims)
        _require(self.kernel_size % 2 == 1, "backbone.kernel_size", "an odd number", self.kernel_size)
        _require(all(d % self.n_groups == 0 for d in self.down_dims), "backbone.down_dims",
                 f"multiples of n_groups={self.n_groups}", self.down_dims)


@dataclass
class HeadConfig:
    """Which head and its settings. `params` is validated by the head's own config dataclass."""

    name: str = "diffusion"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ChunkSpec:
    """Action chunking, defined once for tasks, policies, experts and evaluation: the observation history a
    policy sees, the chunk length it predicts and how many of those actions run before it is asked again.

    Keyword-only so that configs extending it (``PolicyConfig``) keep their own positional fields first.
    """

    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8

    _field_prefix: ClassVar[str] = "horizons"  # how errors name these fields

    def __post_init__(self) -> None:
        prefix = self._field_prefix
        _require(self.n_obs_steps >= 1, f"{prefix}.n_obs_steps", ">= 1", self.n_obs_steps)
        _require(self.horizon >= 1, f"{prefix}.horizon", ">= 1", self.horizon)
        _require(1 <= self.n_action_steps <= self.horizon, f"{prefix}.n_action_steps",
                 f"between 1 and horizon={self.horizon}", self.n_action_steps)


@dataclass
class PolicyConfig(ChunkSpec):
    """Everything needed to rebuild a Policy: specs, chunking (from :class:`ChunkSpec`), network and head settings."""

    obs: list[ObsSpec]
    action: ActionSpec
    normalization: Literal["min_max", "mean_std"] = "min_max"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    _field_prefix: ClassVar[str] = "policy"

    def __post_init__(self) -> None:
        _require(len(self.obs) > 0, "policy.obs", "at least one observation key", self.obs)
        keys = [o.key for o in self.obs]
        _require(len(set(keys)) == len(keys), "policy.obs", "unique keys", keys)
        super().__post_init__()
        _require(self.normalization in ("min_max", "mean_std"), "policy.normalization",
                 "'min_max' or 'mean_std'", self.normalization)
        if self.backbone.kind == "unet":
            levels = len(self.backbone.down_dims)
            _require(self.horizon % (2 ** (levels - 1)) == 0, "policy.horizon",
                     f"a multiple of {2 ** (levels - 1)} for a UNet with {levels} levels", self.horizon)

    @property
    def rgb_keys(self) -> list[str]:
        return [o.key for o in self.obs if o.kind == "rgb"]

    @property
    def low_dim_keys(self) -> list[str]:
        return [o.key for o in self.obs if o.kind == "low_dim"]


@dataclass
class TrainConfig:
    """Behavior-cloning run settings."""

    dataset: str = "toy:bimodal"
    out_dir: str = "runs/bc"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    grad_clip: float = 1.0
    use_ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    seed: int = 0
    num_workers: int = 0
    val_ratio: float = 0.0
    log_every: int = 50
    val_every: int = 500
    ckpt_every: int = 1000
    max_episodes: int | None = None
    teacher: str | None = None  # checkpoint to distill from (consistency head, mode = "distillation")
    device: str = "auto"
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        _require(self.steps > 0, "train.steps", "> 0", self.steps)
        _require(self.batch_size > 0, "train.batch_size", "> 0", self.batch_size)
        _require(self.lr > 0, "train.lr", "> 0", self.lr)
        _require(self.warmup_steps >= 0, "train.warmup_steps", ">= 0", self.warmup_steps)
        _require(self.grad_clip > 0, "train.grad_clip", "> 0", self.grad_clip)
        _require(0.0 <= self.val_ratio < 1.0, "train.val_ratio", "in [0, 1)", self.val_ratio)
        for name in ("log_every", "val_every", "ckpt_every"):
            _require(getattr(self, name) > 0, f"train.{name}", "> 0", getattr(self, name))


@dataclass
class RunConfig:
    """A TOML recipe: the policy to build and how to train it."""

    policy: PolicyConfig
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass, with field paths in every error


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: unexpected value {value!r}")
    if origin is Literal:
        _require(value in args, path, f"one of {list(args)}", value)
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _require(isinstance(value, dict), path, "a table/object", value)
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        _require(isinstance(value, (list, tuple)), path, "a list", value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            _require(len(value) == len(args), path, f"{len(args)} items", value)
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _require(isinstance(value, dict), path, "a table/object", value)
        return dict(value)
    if tp is bool:
        _require(isinstance(value, bool), path, "true or false", value)
        return value
    if tp is int:
        _require(isinstance(value, int) and not isinstance(value, bool), path, "an integer", value)
        return value
    if tp is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), path, "a number", value)
        return float(value)
    if tp is str:
        _require(isinstance(value, str), path, "a string", value)
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from plain data, rejecting unknown keys and wrong types by field path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    prefix = f"{path}." if path else ""
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (expected one of {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required field is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` where value is TOML (numbers, true/false, [lists], "strings") or a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` overrides to a nested dict (returns the same dict)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k} is not a table")
        node[keys[-1]] = value
    return data


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as plain data; a missing or malformed file is a ConfigError that names it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def resolve_toml(name_or_path: str | Path, directory: Path, kind: str) -> Path:
    """A path to a TOML file, or the name of one in `directory` (``lift`` -> ``directory/lift.toml``); an unknown
    name is a ConfigError listing the known ones (`kind` names what is looked up: "task", "hardware", ...)."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.exists():
            raise ConfigError(f"{path}: file not found")
        return path
    candidate = directory / f"{name_or_path}.toml"
    if not candidate.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
        raise ConfigError(f"{kind} {str(name_or_path)!r}: no such file {candidate} (known: {known})")
    return candidate


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML recipe (with `[policy]` and `[train]` tables) and validate it."""
    path = Path(path)
    data = read_toml(path)
    apply_overrides(data, overrides or [])
    try:
        return from_dict(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
