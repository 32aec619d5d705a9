"""Ahead-of-time compiled functions (torch.export + AOTInductor) for deployment.

Why not only torch.compile: on a small CPU each torch.compile call pays 30-60 us in Dynamo's guards and
AOTAutograd's Python wrappers, more than 10 % of a 0.2 ms network. An AOTInductor package is one shared
library whose runner takes a list of tensors (~5 us a call) and holds the weights as constants: a frozen
snapshot, compiled once per input shape, that a later process loads from disk without compiling again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from robopolicy import __version__
from robopolicy.atomic import atomic_output
from robopolicy.specs import to_dict

log = logging.getLogger(__name__)


class AOTFunction:
    """A loaded AOTInductor package: fixed input shapes and dtypes in, the function's one output tensor out."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # the package's own __call__ re-parses its pytree specs on every call (~40 us); the runner is called directly
        self._run: Callable[[list[torch.Tensor]], list[torch.Tensor]] = \
            torch._inductor.aoti_load_package(str(self.path)).loader.boxed_run

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self._run(list(tensors))[0]


def compile_function(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path) -> AOTFunction:
    """Export `module(*inputs)` for exactly these shapes, compile it with AOTInductor and write it to `path`
    (a `.pt2` file; written atomically, so a cache never holds half a package)."""
    if Path(path).suffix != ".pt2":
        raise ValueError(f"{path}: an AOTInductor package path must end in .pt2")
    log.info("compiling %s ahead of time (seconds to a minute; done once per batch size)", path)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            exported = torch.export.export(module, inputs)
            with atomic_output(path, overwrite=True) as tmp:
                torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    except Exception as exc:  # export and inductor raise many kinds; all mean the same to the caller
        raise RuntimeError(f"{path}: ahead-of-time compilation failed ({type(exc).__name__}: {exc}); it needs a "
                           "C++ compiler (g++); Policy.compile() without ahead_of_time, or eager inference, "
                           "work without one") from exc
    log.info("compiled %s in %.1f s", Path(path).name, time.perf_counter() - start)
    return AOTFunction(path)


def load_or_compile(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path) -> AOTFunction:
    """The package at `path` if an earlier run compiled it, otherwise compile it there now (also when the file
    there cannot be loaded: it is replaced, with a warning naming it)."""
    if Path(path).is_file():
        try:
            return AOTFunction(path)
        except Exception as exc:  # torch raises RuntimeError or its own errors for unreadable packages
            warnings.warn(f"{path}: cannot load this AOTInductor package ({type(exc).__name__}: {exc}); "
                          "compiling it again", stacklevel=2)
    return compile_function(module, inputs, path)


def state_fingerprint(module: torch.nn.Module, *extra: object) -> str:
    """Hex digest of every state tensor (names, dtypes, shapes, values), the torch and robopolicy versions and
    `extra` (JSON-serializable): equal fingerprints mean a cached package computes the same function."""
    # the CPU's instruction set too (a package built for AVX-512 would crash a robot computer without it), and the
    # thread count, which inductor writes into its parallel loops
    build = [torch.__version__, __version__, platform.machine(), torch.backends.cpu.get_cpu_capability(),
             torch.get_num_threads()]
    digest = hashlib.sha256(json.dumps([*build, *extra], default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _ActFromNoise(torch.nn.Module):
    """(cond, noise) -> unnormalized chunk: what `Policy.act` runs, as an export target."""

    def __init__(self, policy: torch.nn.Module, steps: int) -> None:
        super().__init__()
        self.policy, self.steps = policy, steps

    def forward(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy._act_from_noise(cond, noise, self.steps)


def _observation_dict(policy: torch.nn.Module, observations: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {spec.key: x for spec, x in zip(policy.config.obs, observations)}


class _PredictFromNoise(_ActFromNoise):
    """(low-dim observations in spec order ..., noise) -> unnormalized chunk: predict_action without cameras."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *observations, noise = inputs
        return super().forward(self.policy.encode(_observation_dict(self.policy, observations)), noise)


class _NetworkForward(_ActFromNoise):
    """(x, t as a 1-element tensor, cond) -> the head network's output: one network call, for every step count."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        net = self.policy.head.net
        return type(net).forward(net, x, t, cond)  # the class's forward: the instance's is this package while sampling


class PolicySnapshot:
    """A policy's sampling compiled ahead of time from its weights as they are now, compiled on first use (or
    loaded from `cache_dir` when an earlier run compiled the same weights there).

    MLP heads get one package per batch size and step count holding the whole unrolled sampling loop: their
    networks are so small that per-call Python would dominate. UNet heads get one package per batch size for a
    single network call and keep the loop in Python: an unrolled multi-step UNet compiles for many minutes (DDIM-10
    had not finished after 13 here), one forward in ~25 s, and ~20 us of loop overhead a step is noise next to a
    several-millisecond UNet forward.

    `fresh()` tells whether the weights are still those: in-place updates (optimizer steps, `load_state_dict`,
    `fit_normalizer`) bump tensor version counters, and their sum is compared on every call (~0.1 us a tensor).
    Writes that bypass the counters (through `param.data`, or `load_state_dict(assign=True)`) are not seen.
    """

    def __init__(self, policy: torch.nn.Module, cache_dir: str | Path | None) -> None:
        self._policy = policy
        self._tensors = list(policy.state_dict(keep_vars=True).values())
        self._version_sum = self._current_version_sum()
        self._tmp = tempfile.TemporaryDirectory(prefix="robopolicy-aot-") if cache_dir is None else None
        self.dir = Path(cache_dir if cache_dir is not None else self._tmp.name)  # type: ignore[union-attr]
        self._fingerprint = state_fingerprint(policy, to_dict(policy.config), str(policy.device))[:16]
        self._functions: dict[tuple[type, int, int | None], AOTFunction] = {}
        self._per_network_call = policy.config.backbone.kind == "unet"

    def _current_version_sum(self) -> int:
        return sum(t._version for t in self._tensors)

    def fresh(self) -> bool:
        return self._current_version_sum() == self._version_sum

    def _function(self, kind: type[_ActFromNoise], inputs: tuple[torch.Tensor, ...],
                  steps: int | None) -> AOTFunction:
        key = (kind, inputs[0].shape[0], steps)
        function = self._functions.get(key)
        if function is None:
            name = f"{kind.__name__.strip('_')}-b{key[1]}{'' if steps is None else f'-s{steps}'}-{self._fingerprint}"
            function = load_or_compile(kind(self._policy, steps or 0), inputs, self.dir / f"{name}.pt2")
            self._functions[key] = function
        return function

    def act(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        if not self._per_network_call:
            return self._function(_ActFromNoise, (cond, noise), steps)(cond, noise)
        net = self._policy.head.net
        net.forward = self._network_forward  # shadows the class's forward for this call only: training stays eager
        try:
            with torch.no_grad():
                return self._policy._act_from_noise(cond, noise, steps)
        finally:
            del net.forward

    def _network_forward(self, x: torch.Tensor, t: float, cond: torch.Tensor) -> torch.Tensor:
        """The head network on one batch-wide time (the only kind sampling loops pass)."""
        time = torch.full((1,), float(t), dtype=x.dtype, device=x.device)
        return self._function(_NetworkForward, (x, time, cond), None)(x, time, cond)

    def predict(self, observations: list[torch.Tensor], noise: torch.Tensor, steps: int) -> torch.Tensor:
        if not self._per_network_call:
            return self._function(_PredictFromNoise, (*observations, noise), steps)(*observations, noise)
        with torch.no_grad():
            cond = self._policy.encode(_observation_dict(self._policy, observations))
        return self.act(cond, noise, steps)
