"""``replay`` backend: plays a zarr dataset (``robopolicy.data.ReplayBuffer``) back as if it were a robot.

Each write advances one recorded step; reads return the current step, stamped when read. Every ``uint8`` HWC
key (``<camera>_image``) becomes the frame of ``<camera>``, every other key an extra (so a policy sees the
recorded observations), and ``position_key`` / ``velocity_key`` fill the joint state (the hardware file's home
pose and zeros when the dataset has none). The commands written are kept with the recorded actions beside them,
so a dry run can be compared with what the demonstrator did. At the end of the episode the replay holds the
last step, or moves on to the next episode with ``loop``.
"""

from __future__ import annotations

import numpy as np

from robopolicy.hal.backend import Backend, Command, Observation, clock
from robopolicy.hal.spec import HardwareSpec
from robopolicy.specs import ConfigError


class ReplayBackend(Backend):
    """``dataset``: a zarr store path; ``episode``: the first episode played; ``action_key``: recorded actions."""

    name = "replay"

    def __init__(self, spec: HardwareSpec, dataset: str = "", episode: int = 0, position_key: str = "",
                 velocity_key: str = "", action_key: str = "action", loop: bool = False,
                 stale_periods: float = 5.0, latency_periods: float = 5.0) -> None:
        super().__init__(spec, stale_periods=stale_periods, latency_periods=latency_periods)
        if not dataset:
            raise ConfigError(f"{spec.path or spec.name}: backend.settings.dataset: expected a zarr store path")
        self.dataset, self.episode, self.loop = dataset, episode, loop
        self.position_key, self.velocity_key, self.action_key = position_key, velocity_key, action_key
        self.step = 0
        self.commands: list[tuple[np.ndarray, np.ndarray | None]] = []  # (written, recorded action)
        self._frames: dict[str, np.ndarray] = {}

    def _connect(self) -> None:
        from robopolicy.data.replay_buffer import ReplayBuffer

        with ReplayBuffer.open(self.dataset) as buffer:
            for key in (self.position_key, self.velocity_key):
                if key and key not in buffer.keys:
                    raise ConfigError(f"{self.spec.path or self.spec.name}: backend.settings: {key!r} is not in "
                                      f"{self.dataset} (keys: {buffer.keys})")
            self._buffer_episodes = buffer.n_episodes
            self._load(buffer, self.episode)

    def _load(self, buffer, episode: int) -> None:
        self._frames = buffer.get_episode(episode % buffer.n_episodes)
        self.episode, self.step = episode % buffer.n_episodes, 0

    def _next_episode(self) -> None:
        from robopolicy.data.replay_buffer import ReplayBuffer

        with ReplayBuffer.open(self.dataset) as buffer:
            self._load(buffer, self.episode + 1)

    @property
    def length(self) -> int:
        return len(next(iter(self._frames.values())))

    def _read(self) -> Observation:
        t = clock()
        row = {k: v[self.step] for k, v in self._frames.items()}
        n = self.spec.n_joints
        position = np.asarray(row[self.position_key], np.float64) if self.position_key else np.array(self.spec.home)
        velocity = np.asarray(row[self.velocity_key], np.float64) if self.velocity_key else np.zeros(n)
        cameras = [k for k, v in row.items() if v.dtype == np.uint8 and v.ndim == 3]
        images = {k.removesuffix("_image"): row[k] for k in cameras}  # <camera>_image, as datasets name them
        extras = {k: v for k, v in row.items() if k not in cameras and k != self.action_key}
        stamps = {"position": t, "velocity": t, "torque": t, **{f"images/{k}": t for k in images},
                  **{f"extras/{k}": t for k in extras}}
        return Observation(position, velocity, np.zeros(n), t, self.next_seq(), images=images, extras=extras,
                           stamps=stamps)

    def _write(self, command: Command) -> Command:
        recorded = self._frames.get(self.action_key)
        self.commands.append((command.value.copy(), None if recorded is None else recorded[self.step].copy()))
        if self.step + 1 < self.length:
            self.step += 1
        elif self.loop:
            self._next_episode()
        return Command(command.value.copy(), command.mode, command.t_target, command.seq, t_applied=clock())

    def _hold(self) -> None:
        """A recording cannot stop; holding means no further steps until the next write."""
