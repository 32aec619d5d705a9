"""Rollout videos: a recorder wrapper for chosen episodes and an mp4/GIF writer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int) -> Path:
    """Write uint8 HWC frames as mp4 (H.264 through imageio-ffmpeg) or GIF, chosen by the suffix."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, list(frames), fps=fps, macro_block_size=1)
    return path


class VideoRecorder(gym.Wrapper):
    """Record the episodes whose ``reset`` seed is in ``seeds`` to ``<directory>/seed<seed><suffix>``,
    each seed once (the first episode that uses it).

    Choosing episodes by seed (not by env index) keeps recording deterministic inside sync and async
    vector envs, where each sub-environment writes its own files. ``every`` renders every n-th step,
    because pretty frames cost far more than simulation steps.
    """

    def __init__(
        self, env: gym.Env, directory: str | Path, seeds: Iterable[int], fps: int = 20,
        suffix: str = ".mp4", every: int = 1,
    ) -> None:
        super().__init__(env)
        self.directory = Path(directory)
        self.seeds = set(int(s) for s in seeds)
        self.fps = fps
        self.suffix = suffix
        self.every = every
        self._frames: list[np.ndarray] = []
        self._seed: int | None = None
        self._t = 0

    def _flush(self) -> None:
        if self._seed is not None and self._frames:
            write_video(self.directory / f"seed{self._seed}{self.suffix}", self._frames, max(1, self.fps // self.every))
        self._frames, self._seed = [], None

    def reset(self, *, seed: int | None = None, **kwargs):
        self._flush()
        obs, info = self.env.reset(seed=seed, **kwargs)
        self._t = 0
        if seed is not None and seed in self.seeds:
            self._seed = seed
            self.seeds.discard(seed)
            self._frames.append(self.env.render())
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if self._seed is not None and (self._t % self.every == 0 or terminated or truncated):
            self._frames.append(self.env.render())
        if terminated or truncated:
            self._flush()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._flush()
        super().close()
