"""Constraint-aware sampling (as in Diffusion Predictive Control with Constraints): every denoising or flow step's
chunk is projected onto the shield's joint and workspace limits, so the sampled chunk is feasible by construction
and the shield has little left to correct.

The projection works on a chunk of absolute joint positions, action by action from the last commanded motion
(:attr:`ChunkProjection.anchor`, a :class:`~robopolicy.hal.shield.stages.Motion` set before each plan): the
shield's own joint stages (soft position limits with the braking bound, velocity, acceleration, jerk), then its
workspace stage (the step scaled back on the shadow model until the end effector and its stopping point are
inside); where that breaks a rate limit, the shield's deceleration instead. A chunk executed from that motion is
then one the shield passes unchanged, short of a stop the deceleration cannot make inside the workspace. The head
sees the projection through ``Head.step_projection`` and works in normalized actions, so it unnormalizes,
projects and normalizes back.

Use :func:`constrained_infer` to get an executor ``infer`` function that sets the anchor and samples with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from robopolicy.hal.shield import stages
from robopolicy.hal.shield.kinematics import workspace_stage
from robopolicy.hal.shield.pipeline import Shield
from robopolicy.hal.shield.stages import Motion

ACTION_KEY = "action"


class ChunkProjection:
    """Callable on normalized chunks (B, T, D) -> projected normalized chunks, for ``Head.step_projection``."""

    def __init__(self, policy, shield: Shield, workspace: bool = True) -> None:
        if shield.config.control_mode != "joint_position":
            raise ValueError("constraint-aware sampling projects absolute joint positions (joint_position mode)")
        self.policy, self.shield = policy, shield
        self.workspace = workspace and shield.config.workspace is not None
        self.anchor: Motion | None = None
        self.calls = 0

    def project_positions(self, chunk: np.ndarray) -> np.ndarray:
        """Project one chunk (T, n_joints) of absolute joint positions, executed from ``anchor`` on."""
        lim = self.shield.limits
        motion: Motion = self.anchor  # type: ignore[assignment]
        box, shadow = self.shield.config.workspace, self.shield.shadow

        def inside(x: np.ndarray) -> bool:
            return box.contains(shadow.ee_position(x))  # type: ignore[union-attr]

        out = np.empty_like(chunk)
        for t, q in enumerate(chunk):
            q = np.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0)
            for name in stages.enabled_bounds(lim):
                q = stages.clip_stage(name)(q, motion, lim).command
            if self.workspace:
                q = workspace_stage(q, motion, shadow, box, lim.dt, lim.acceleration).command  # type: ignore[arg-type]
                if stages.joint_violations(q, motion, lim):  # scaling the step back broke a rate limit
                    slower = stages.decelerate(motion, lim)
                    safe = inside(slower) and not stages.joint_violations(slower, motion, lim)
                    q = slower if safe else motion.q
            out[t] = q
            motion = motion.advance(q, lim.dt)
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.anchor is None:
            raise RuntimeError("ChunkProjection: set .anchor (the last commanded Motion) before sampling")
        self.calls += 1
        normalizer = self.policy.normalizer
        actions = normalizer.unnormalize(ACTION_KEY, x).detach().cpu().numpy().astype(np.float64)
        n = self.shield.limits.n
        for b in range(actions.shape[0]):
            actions[b, :, :n] = self.project_positions(actions[b, :, :n])
        return normalizer.normalize(ACTION_KEY, torch.as_tensor(actions, dtype=x.dtype, device=x.device))


def constrained_infer(policy, projection: ChunkProjection, anchor_key: str = "joint_position",
                      device: str | torch.device = "cpu") -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """An executor ``infer``: anchors the projection at rest at the newest observed joint positions (the chunk's
    first actions are for that observation's tick) and samples with it."""
    from robopolicy.hal.policy_adapter import policy_infer

    infer = policy_infer(policy, device)

    def constrained(history: dict[str, np.ndarray]) -> np.ndarray:
        q = np.asarray(history[anchor_key][-1], float)[: projection.shield.limits.n]
        projection.anchor = Motion.at_rest(q)
        policy.head.step_projection = projection
        try:
            return infer(history)
        finally:
            policy.head.step_projection = None

    return constrained
