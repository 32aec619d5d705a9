"""Create small Minari datasets with the real minari package (run with .venv-tools/bin/python).

Usage: make_minari.py OUT_DIR [EPISODES LENGTH SIZE]
With EPISODES LENGTH SIZE (benchmarks): that many episodes of LENGTH steps with SIZExSIZE images.
Rolls out 3 episodes of a gymnasium env with a Dict observation (an 8x8 RGB image, JPEG-encoded by
Minari, and a low-dim vector) and hands them to minari.create_dataset_from_buffers (DataCollector
would need jax), once with hdf5 and once with arrow storage, into OUT_DIR/{hdf5,arrow}/<dataset>.
OUT_DIR/expected_<storage>.npz holds the exact observations (T+1 per episode), actions, rewards and flags that
were recorded.
"""
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

out = Path(sys.argv[1])
BENCH = len(sys.argv) > 2
EPISODES, LENGTH, SIZE = (int(a) for a in sys.argv[2:5]) if BENCH else (3, None, 8)


class Toy(gym.Env):
    """Deterministic per seed; episodes of different lengths, ending by termination or truncation."""

    observation_space = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
        "state": gym.spaces.Box(-10, 10, (4,), np.float32),
    })
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, LENGTH or 4 + int(self.np_random.integers(0, 5))
        return self._obs(), {}

    def _obs(self):
        # A flat colour per step survives JPEG almost unchanged.
        image = np.full((SIZE, SIZE, 3), (30 * self.t) % 256, np.uint8)
        image[..., 1] = 100
        return {"image": image, "state": self.np_random.standard_normal(4).astype(np.float32)}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return self._obs(), float(np.sum(action)), done and self.t % 2 == 0, done and self.t % 2 == 1, {}


for storage in ("hdf5", "arrow"):
    os.environ["MINARI_DATASETS_PATH"] = str(out / storage)
    import minari
    from minari.data_collector import EpisodeBuffer

    env, rng, buffers = Toy(), np.random.default_rng(1), []
    for ep in range(EPISODES):
        obs, _ = env.reset(seed=ep)
        steps = {"obs": [obs], "actions": [], "rewards": [], "terms": [], "truncs": []}
        done = False
        while not done:
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            obs, reward, term, trunc, _ = env.step(action)
            for key, value in zip(steps, (obs, action, reward, term, trunc)):
                steps[key].append(value)
            done = term or trunc
        observations = {k: np.stack([o[k] for o in steps["obs"]]) for k in ("image", "state")}
        buffers.append(EpisodeBuffer(id=ep, seed=ep, observations=observations, actions=np.stack(steps["actions"]),
                                     rewards=steps["rewards"], terminations=steps["terms"],
                                     truncations=steps["truncs"]))
    ds = minari.create_dataset_from_buffers(
        dataset_id=f"robopolicy/toy-{storage}-v0", buffer=buffers, env=env, algorithm_name="random",
        author="robopolicy tests", data_format=storage,
    )
    columns = ("obs_image", "obs_state", "action", "reward", "terminated", "truncated", "n_actions")
    expected: dict[str, list] = {name: [] for name in columns}
    for episode in ds.iterate_episodes():
        expected["obs_image"].append(episode.observations["image"])
        expected["obs_state"].append(episode.observations["state"])
        expected["action"].append(episode.actions)
        expected["reward"].append(episode.rewards)
        expected["terminated"].append(episode.terminations)
        expected["truncated"].append(episode.truncations)
        expected["n_actions"].append([len(episode.actions)])
    np.savez(out / f"expected_{storage}.npz", **{k: np.concatenate(v) for k, v in expected.items()})
    print(f"wrote {out / storage} ({ds.total_episodes} episodes, {ds.total_steps} steps)")
