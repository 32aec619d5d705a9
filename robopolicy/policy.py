"""Policy = normalizer + visuomotor encoder + head + chunking settings.

It is the one object that training, fine-tuning, evaluation and deployment pass around and the one
thing a checkpoint holds. Observations go in unnormalized (rgb uint8 HWC, low-dim float) and actions
come out unnormalized; normalization happens only here, so it cannot differ between train and deploy.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robopolicy.aot import PolicySnapshot
from robopolicy.checkpoint import load_state, read_policy_config, save_checkpoint
from robopolicy.chunking import ChunkQueue, FrameHistory
from robopolicy.heads import Chain, build_head
from robopolicy.heads.base import randn
from robopolicy.nn.encoder import ObsEncoder
from robopolicy.nn.normalizer import Normalizer
from robopolicy.specs import PolicyConfig

ACTION_KEY = "action"


def _compile_options() -> dict:
    """Static shapes, no redundant input checks; module guards skipped and per-policy recompile counts where
    this torch has them."""
    # inductor's size asserts re-check what Dynamo's tensor guards already check (shapes are static): ~15 us a call
    inductor: dict = {"size_asserts": False}
    skip_module_guards = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)  # recent torch
    if skip_module_guards is not None:
        inductor["guard_filter_fn"] = skip_module_guards
    options: dict = {"dynamic": False, "options": inductor}
    if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
        options["isolate_recompiles"] = True  # compiling several policies would otherwise share one recompile budget
    return options


def _can_trace_autograd() -> bool:
    """Whether Dynamo can put torch.autograd.grad (the energy head's input gradients) into a graph (recent torch)."""
    return hasattr(torch._dynamo.config, "trace_autograd_ops")  # imports Dynamo: call only when compiling


def _tracing_autograd(compiled):
    """`compiled`, called with Dynamo tracing autograd ops (the flag is set only around these calls)."""
    return torch._dynamo.config.patch(trace_autograd_ops=True)(compiled)


class Policy(nn.Module):
    _device_anchor: torch.Tensor  # buffer

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        dims = {k: o.shape[0] for o in config.obs if o.kind == "low_dim" for k in [o.key]}
        self.normalizer = Normalizer({**dims, ACTION_KEY: config.action.dim})
        self.encoder = ObsEncoder(config.obs, config.n_obs_steps, config.encoder)
        self.head = build_head(config.head.name, config.head.params, config.action.dim, config.horizon,
                               self.encoder.out_dim, config.backbone)
        # a zero-size buffer that follows .to(): O(1) device look-up (parameters() iteration costs ~50 us per call)
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        # select_action's state: features of the observation window and the planned actions (the queue counts
        # the steps: a per-step attribute write would cost ~3 us in nn.Module.__setattr__)
        self._frame_features: FrameHistory[torch.Tensor] = FrameHistory(config.n_obs_steps)
        self._planned: ChunkQueue[torch.Tensor] = ChunkQueue()
        self._compiled_act: Callable[..., torch.Tensor] | None = None  # set by compile(): sampling + unnormalization
        # set by compile() for camera-free policies: all of predict_action
        self._compiled_predict: Callable[..., torch.Tensor] | None = None
        self._snapshot: PolicySnapshot | None = None  # set by compile(ahead_of_time=True)

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    def fit_normalizer(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Fit from dataset statistics ({key: {min, max, mean, std}}) for every low-dim key and the action."""
        self.normalizer.fit(stats, self.config.normalization)

    # ---- encoding -------------------------------------------------------------------------------------------

    def _check_obs(self, obs: Mapping[str, torch.Tensor], steps: int) -> None:
        for spec in self.config.obs:
            if spec.key not in obs:
                expected = [o.key for o in self.config.obs]
                raise KeyError(f"observation is missing key {spec.key!r} (policy expects {expected})")
            shape = tuple(obs[spec.key].shape[2:])
            if shape != spec.shape or obs[spec.key].ndim != len(spec.shape) + 2 or obs[spec.key].shape[1] != steps:
                raise ValueError(f"observation {spec.key!r}: expected shape (B, {steps}, "
                                 f"{', '.join(map(str, spec.shape))}), got {tuple(obs[spec.key].shape)}")

    def encode_frames(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-frame features (B, t, F) from raw observations of shape (B, t, ...), any t.

        Frames are encoded independently, so features of a frame can be computed once and reused.
        """
        self._check_obs(obs, next(iter(obs.values())).shape[1] if obs else 0)
        return self._frame_features_of(obs)

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Conditioning vectors (B, C) from raw observations of shape (B, n_obs_steps, ...)."""
        self._check_obs(obs, self.config.n_obs_steps)
        return self._frame_features_of(obs).flatten(1)

    def _frame_features_of(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = self.device
        normed = {}
        for spec in self.config.obs:
            x = torch.as_tensor(obs[spec.key], device=device)
            normed[spec.key] = x if spec.kind == "rgb" else self.normalizer.normalize(spec.key, x.float())
        return self.encoder.frame_features(normed)

    # ---- training -------------------------------------------------------------------------------------------

    def loss(self, batch: Mapping[str, object]) -> torch.Tensor:
        """Scalar loss of a batch {"obs": {key: (B, To, ...)}, "action": (B, horizon, D)}."""
        cond = self.encode(batch["obs"])  # type: ignore[arg-type]
        actions = self.normalizer.normalize(ACTION_KEY, torch.as_tensor(batch[ACTION_KEY], device=cond.device).float())
        return self.head.loss(cond, actions)

    def forward(self, batch: Mapping[str, object]) -> torch.Tensor:
        """Same as `loss`, so DistributedDataParallel can wrap the policy."""
        return self.loss(batch)

    # ---- inference ------------------------------------------------------------------------------------------

    def unnormalize_action(self, chunk: torch.Tensor) -> torch.Tensor:
        return self.normalizer.unnormalize(ACTION_KEY, chunk)

    # Inference entry points use `with torch.no_grad()` rather than the decorator, which builds a fresh context
    # manager per call (6-8 us instead of ~3 us: a few percent of a 1-step head on a small MLP).

    def predict_action(self, obs: Mapping[str, torch.Tensor], steps: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Unnormalized action chunk (B, horizon, action_dim); index 0 is the action for the current step."""
        # cameras first: with them `_act` checks the snapshot, and the check sums every tensor's version
        if not self.encoder.rgb_keys and self._snapshot_is_current():
            self._check_obs(obs, self.config.n_obs_steps)
            observations = [torch.as_tensor(obs[spec.key], device=self.device).float() for spec in self.config.obs]
            steps, noise = self._sampling_noise(observations[0].shape[0], steps, generator, observations[0])
            return self._snapshot.predict(observations, noise, steps)  # type: ignore[union-attr]
        if self._compiled_predict is not None and generator is None:
            steps = self.head.resolve_steps(steps)  # None and the default share one graph
            self.head.prepare_sampling(steps)
            return self._compiled_predict(obs, steps)
        with torch.no_grad():
            return self._act(self.encode(obs), steps, generator)

    def _predict_eagerly(self, obs: Mapping[str, torch.Tensor], steps: int | None) -> torch.Tensor:
        with torch.no_grad():
            return self._act_eagerly(self.encode(obs), steps, None)

    def act(self, cond: torch.Tensor, steps: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Unnormalized action chunk from conditioning vectors (B, C) (what `encode` returns)."""
        with torch.no_grad():
            return self._act(cond, steps, generator)

    def _act(self, cond: torch.Tensor, steps: int | None, generator: torch.Generator | None) -> torch.Tensor:
        compiled = self._snapshot.act if self._snapshot_is_current() else self._compiled_act  # type: ignore[union-attr]
        if compiled is None:
            return self._act_eagerly(cond, steps, generator)
        steps, noise = self._sampling_noise(cond.shape[0], steps, generator, cond)
        return compiled(cond, noise, steps)

    def _sampling_noise(self, batch: int, steps: int | None, generator: torch.Generator | None,
                        like: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The step count and all the noise one sampling call consumes, drawn as `Head.sample` draws it (so
        compiled and eager sampling give the same actions for the same generator or global seed)."""
        steps = self.head.resolve_steps(steps)
        self.head.prepare_sampling(steps)
        return steps, randn(self.head.noise_shape(batch, steps), generator, like)

    def _snapshot_is_current(self) -> bool:
        """Whether an ahead-of-time snapshot exists and still holds the current weights; a stale one is dropped."""
        if self._snapshot is None:
            return False
        if self._snapshot.fresh():
            return True
        warnings.warn("Policy: weights changed since compile(ahead_of_time=True); inference runs eagerly until "
                      "compile is called again", stacklevel=3)
        self._snapshot = None
        return False

    def _act_eagerly(self, cond: torch.Tensor, steps: int | None, generator: torch.Generator | None) -> torch.Tensor:
        return self.unnormalize_action(self.head.sample(cond, steps=steps, generator=generator))

    def _act_from_noise(self, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        return self.unnormalize_action(self.head.sample_from_noise(cond, noise, steps))

    # returns the policy, unlike nn.Module.compile (which returns None), so that `Policy(...).compile()` chains
    def compile(self, ahead_of_time: bool = False, cache_dir: str | Path | None = None,  # type: ignore[override]
                **compile_kwargs: Any) -> Policy:
        """Compile inference for deployment; returns self, in eval mode. Actions stay those of eager inference for
        the same `generator` or the same global seed. The first call per (batch size, steps) compiles.

        `ahead_of_time=True` (AOTInductor; heads that sample from up-front noise, i.e. all but energy): a frozen
        snapshot of the current weights. With an MLP backbone and no cameras all of `predict_action`
        (normalization, encoder, sampling loop, unnormalization) becomes one shared library called with a list of
        tensors, 2-3x faster than calling the bare networks eagerly, even for 1-step heads on a 0.2 ms MLP (with
        cameras the encoder stays eager and the loop is compiled); 7-14 s to compile, 70 s for DDPM-100. With a
        UNet one network call is compiled (~25 s, every step count) and the loop stays in Python (see
        `PolicySnapshot`). With `cache_dir` the packages are kept there, keyed by a hash of config and weights,
        so a robot's next start loads them in milliseconds. Changing the weights afterwards (in place, as
        optimizers, `load_state_dict` and `fit_normalizer` do) is noticed on the next call: a warning, then eager
        inference until `compile` is called again. Moving the policy (`.to()`) drops the snapshot too.

        Default (`torch.compile`; weights stay live, so training may go on): camera-free policies compile all of
        `predict_action` into one graph for every head (the energy head's input gradients are traced with
        Dynamo's `trace_autograd_ops` where the installed torch has it; without a generator the noise is drawn
        inside the graph from torch's global generator). With cameras the encoder stays eager (inductor's CPU
        convolutions were slower than eager for ResNet-18/GN here) and the sampling loop plus unnormalization
        are compiled; the energy head then stays eager (a warning says so). Multi-step sampling on small
        networks gets 30-50 % faster than the bare networks called eagerly, energy descent ~3x; each call pays
        ~30-60 us in torch.compile's Python wrappers, so 1-step heads on a 0.2 ms MLP gain nothing. Guards on
        module attributes are skipped, so the graph keeps eval-mode behaviour. Keyword arguments go to
        `torch.compile` (on a GPU, mode="reduce-overhead" adds CUDA graphs; untested here).
        Figures: scripts/bench_inference.py --compile --aot.
        """
        self.eval()
        self._compiled_act = self._compiled_predict = self._snapshot = None
        differentiates = self.head.samples_with_autograd  # energy heads take input gradients while sampling
        if ahead_of_time and not differentiates:
            self._snapshot = PolicySnapshot(self, cache_dir)
            return self
        if ahead_of_time:
            warnings.warn(f"Policy.compile: the {self.head.name} head samples with autograd, which torch.export "
                          "cannot capture; compiling with torch.compile instead", stacklevel=2)
        compilable_predict = not self.encoder.rgb_keys and (not differentiates or _can_trace_autograd())
        if differentiates and not compilable_predict:
            why = "it has cameras" if self.encoder.rgb_keys else "this torch cannot trace torch.autograd.grad"
            warnings.warn(f"Policy.compile: the {self.head.name} head samples with autograd and {why}; "
                          "it stays eager", stacklevel=2)
            return self
        options = {**_compile_options(), **compile_kwargs}
        # closures over the policy, not bound methods: Dynamo then treats the policy as a module whose guards
        # are skipped, while a bound method's `self` keeps ~20 us per call of attribute guards
        policy = self
        if not differentiates:
            def act(cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
                return policy._act_from_noise(cond, noise, steps)

            self._compiled_act = torch.compile(act, **options)
        if compilable_predict:
            # fallback_random makes inductor draw with torch's own generator, so compiled and eager actions agree
            # under the same torch.manual_seed
            inductor = {**options.get("options", {}), "fallback_random": True}
            predict = torch.compile(lambda obs, steps: policy._predict_eagerly(obs, steps),
                                    **{**options, "options": inductor})
            self._compiled_predict = _tracing_autograd(predict) if differentiates else predict
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Policy:
        """Device and dtype conversions (`.to()`, `.double()`, ...) replace the tensors a snapshot was compiled
        from; drop it rather than run stale weights on the old device."""
        if self._snapshot is not None:
            warnings.warn("Policy: moved or converted after compile(ahead_of_time=True); the compiled snapshot is "
                          "dropped (call compile again)", stacklevel=3)
            self._snapshot = None
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def sample_chain(self, obs: Mapping[str, torch.Tensor], steps: int | None = None,
                     generator: torch.Generator | None = None) -> Chain:
        """Stochastic denoising chain for RL fine-tuning; chain.actions are normalized."""
        return self.head.sample_chain(self.encode(obs), steps=steps, generator=generator)

    def chain_log_prob(self, obs: Mapping[str, torch.Tensor], chain: Chain,
                       step_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities of a stored chain under the current weights, with gradient: (B, K), or (M,) for
        subsampled (row, step) pairs (`Head.chain_log_prob`)."""
        return self.head.chain_log_prob(self.encode(obs), chain, step_idx)

    def reset(self) -> None:
        """Forget the observation history and queued actions (call at the start of each episode)."""
        self._frame_features.clear()
        self._planned = ChunkQueue()

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """One step of closed-loop control: obs values are (B, ...) for the current step; returns (B, action_dim).

        Replans every n_action_steps steps from the last n_obs_steps observations (the first one repeated at
        episode start) and executes the head of each chunk. Each frame is encoded once, on arrival, and only
        if the next plan will use it: with two camera frames, replanning then costs one image encoding instead
        of two, while the total work stays the same.
        """
        step = self._planned.next_tick
        queued = self._planned.remaining(step)
        if queued < self.config.n_obs_steps:  # this frame is among the next plan's last n_obs_steps
            frame = {k: torch.as_tensor(v).unsqueeze(1) for k, v in obs.items()}
            self._frame_features.push(self.encode_frames(frame)[:, 0])
        if not queued:
            cond = torch.stack(self._frame_features.frames, 1).flatten(1)
            chunk = self.act(cond, generator=generator)
            self._planned.put(chunk[:, : self.config.n_action_steps].unbind(1), step)  # one (B, D) action a step
        action = self._planned.pop(step)
        assert action is not None  # a plan covering `step` was just put when none was queued
        return action

    # ---- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path, ema_state: Mapping[str, torch.Tensor] | None = None) -> Path:
        return save_checkpoint(path, self, ema_state=ema_state)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> Policy:
        return load_policy(path, device=device, use_ema=use_ema)


def load_policy(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> Policy:
    """Rebuild a Policy from a checkpoint directory; EMA weights are used when present and `use_ema`."""
    policy = Policy(read_policy_config(path))
    policy.load_state_dict(load_state(path, policy, use_ema), strict=False)
    return policy.to(device).eval()
