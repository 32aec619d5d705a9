"""Policy = normalizer + visuomotor encoder + head + chunking settings.

It is the one object that training, fine-tuning, evaluation and deployment pass around and the one
thing a checkpoint holds. Observations go in unnormalized (rgb uint8 HWC, low-dim float) and actions
come out unnormalized; normalization happens only here, so it cannot differ between train and deploy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robopolicy.heads import Chain, build_head
from robopolicy.nn.encoder import ObsEncoder
from robopolicy.nn.normalizer import Normalizer
from robopolicy.specs import PolicyConfig

ACTION_KEY = "action"


class Policy(nn.Module):
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
        self._obs_history: deque[dict[str, torch.Tensor]] = deque(maxlen=config.n_obs_steps)
        self._action_queue: deque[torch.Tensor] = deque()

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    def fit_normalizer(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Fit from dataset statistics ({key: {min, max, mean, std}}) for every low-dim key and the action."""
        self.normalizer.fit(stats, self.config.normalization)

    # ---- encoding -------------------------------------------------------------------------------------------

    def _check_obs(self, obs: Mapping[str, torch.Tensor]) -> None:
        for spec in self.config.obs:
            if spec.key not in obs:
                raise KeyError(f"observation is missing key {spec.key!r} (policy expects {[o.key for o in self.config.obs]})")
            shape = tuple(obs[spec.key].shape[2:])
            if shape != spec.shape or obs[spec.key].ndim != len(spec.shape) + 2 or \
                    obs[spec.key].shape[1] != self.config.n_obs_steps:
                raise ValueError(f"observation {spec.key!r}: expected shape (B, {self.config.n_obs_steps}, "
                                 f"{', '.join(map(str, spec.shape))}), got {tuple(obs[spec.key].shape)}")

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Conditioning vectors (B, C) from raw observations of shape (B, n_obs_steps, ...)."""
        self._check_obs(obs)
        device = self.device
        normed = {}
        for spec in self.config.obs:
            x = torch.as_tensor(obs[spec.key], device=device)
            normed[spec.key] = x if spec.kind == "rgb" else self.normalizer.normalize(spec.key, x.float())
        return self.encoder(normed)

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

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, torch.Tensor], steps: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Unnormalized action chunk (B, horizon, action_dim); index 0 is the action for the current step."""
        cond = self.encode(obs)
        return self.unnormalize_action(self.head.sample(cond, steps=steps, generator=generator))

    @torch.no_grad()
    def sample_chain(self, obs: Mapping[str, torch.Tensor], steps: int | None = None,
                     generator: torch.Generator | None = None) -> Chain:
        """Stochastic denoising chain for RL fine-tuning; chain.actions are normalized."""
        return self.head.sample_chain(self.encode(obs), steps=steps, generator=generator)

    def reset(self) -> None:
        """Forget the observation history and queued actions (call at the start of each episode)."""
        self._obs_history.clear()
        self._action_queue.clear()

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """One step of closed-loop control: obs values are (B, ...) for the current step; returns (B, action_dim).

        Keeps the last n_obs_steps observations (repeating the first one at episode start) and replans
        every n_action_steps steps, executing the head of each predicted chunk.
        """
        self._obs_history.append({k: torch.as_tensor(v) for k, v in obs.items()})
        while len(self._obs_history) < self.config.n_obs_steps:
            self._obs_history.appendleft(self._obs_history[0])
        if not self._action_queue:
            stacked = {k: torch.stack([h[k] for h in self._obs_history], 1) for k in self._obs_history[0]}
            chunk = self.predict_action(stacked, generator=generator)
            self._action_queue.extend(chunk[:, : self.config.n_action_steps].unbind(1))
        return self._action_queue.popleft()

    # ---- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path, ema_state: Mapping[str, torch.Tensor] | None = None) -> Path:
        from robopolicy.checkpoint import save_checkpoint

        return save_checkpoint(path, self, ema_state=ema_state)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> "Policy":
        from robopolicy.checkpoint import load_policy

        return load_policy(path, device=device, use_ema=use_ema)
