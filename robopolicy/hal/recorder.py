"""Recording a run to a zarr dataset that ``robopolicy data inspect`` reads and ``robopolicy train`` trains on.

Per step: the observation (``joint_position``, ``joint_velocity``, ``joint_torque``, ``ee_position`` when the
backend measures it, ``<camera>_image``, extras under their own keys), ``action`` (the shielded command that was
sent: what the robot did, so what a policy should learn), ``commanded_action`` (the policy's raw action),
``shield_intervened`` and ``t`` (the observation's monotonic capture time). Steps are kept in memory and each
episode is appended when it ends, by :meth:`Recorder.end_episode`, which the executor calls from its ``finally``
path: a run that ends in a fault is recorded up to the fault. (A killed process loses the episode in progress;
the store keeps every earlier one.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.data.spec import build_attrs
from robopolicy.hal.backend import Observation
from robopolicy.hal.spec import HardwareSpec


def observation_arrays(obs: Observation) -> dict[str, np.ndarray]:
    """The flat per-step arrays of one observation, under the keys datasets and policies use."""
    out = {"joint_position": np.asarray(obs.position, np.float32),
           "joint_velocity": np.asarray(obs.velocity, np.float32),
           "joint_torque": np.asarray(obs.torque, np.float32)}
    if obs.ee_position is not None:
        out["ee_position"] = np.asarray(obs.ee_position, np.float32)
    for name, frame in obs.images.items():
        out[f"{name}_image"] = np.asarray(frame, np.uint8)
    for key, value in obs.extras.items():
        out[key] = np.asarray(value)
    return out


class Recorder:
    """Appends episodes of executor steps to the store at ``path`` (created on the first episode)."""

    def __init__(self, path: str | Path, spec: HardwareSpec, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.spec = spec
        self._rows: list[dict[str, np.ndarray]] = []
        self._rb: ReplayBuffer | None = None
        if self.path.exists():
            if not overwrite:
                self._rb = ReplayBuffer.open(self.path, mode="a")
            else:
                self._rb = ReplayBuffer.create(self.path, overwrite=True)
        self.episodes = 0

    def add(self, obs: Observation, commanded: np.ndarray, shielded: np.ndarray, intervened: bool) -> None:
        row = observation_arrays(obs)
        row["action"] = np.asarray(shielded, np.float32)
        raw = np.asarray(commanded, np.float32).reshape(-1)
        row["commanded_action"] = raw if raw.shape == row["action"].shape else np.full_like(row["action"], np.nan)
        row["shield_intervened"] = np.asarray(intervened, np.uint8)
        row["t"] = np.asarray(obs.t_capture, np.float64)
        self._rows.append(row)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def end_episode(self, outcome: dict[str, Any] | None = None) -> int:
        """Append the steps recorded since the last call as one episode; returns its length (0: nothing kept)."""
        rows, self._rows = self._rows, []
        if not rows:
            return 0
        episode = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
        if self._rb is None or (self._rb.n_episodes == 0 and not self._rb.keys):
            obs_keys = [k for k in episode if k not in ("action", "commanded_action", "shield_intervened", "t")]
            attrs = build_attrs(episode, obs_keys, fps=self.spec.control_rate_hz,
                                convention={"mode": "absolute" if self.spec.control_mode == "joint_position"
                                            else "delta", "rotation": "none", "control_mode": self.spec.control_mode},
                                names={"action": self.spec.joints + ["gripper"] * self.spec.gripper},
                                source={"format": "robopolicy-hal", "hardware": self.spec.name,
                                        "backend": self.spec.backend.name},
                                command=" ".join(sys.argv))
            if self._rb is None:
                self._rb = ReplayBuffer.create(self.path, attrs=attrs)
            else:
                self._rb.update_attrs(attrs)
        self._rb.add_episode(episode)
        outcomes = list(self._rb.attrs.get("episode_outcomes", []))
        self._rb.update_attrs({"episode_outcomes": [*outcomes, dict(outcome or {}, length=len(rows))]})
        self.episodes += 1
        return len(rows)

    def close(self) -> None:
        if self._rb is not None:
            self._rb.close()
