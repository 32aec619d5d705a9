"""Rebuild the low-dim observations of a robosuite demo.hdf5 with another robosuite release (run with that
release's python, e.g. .venv-tools/robosuite-1.4.1/bin/python), as `robopolicy data regenerate` does with
robosuite 1.5.2: make the env from the file's env_info, reset it, set every recorded state, observe. (robomimic's
dataset_states_to_obs also loads each demo's recorded model XML; the robosuite 1.4.0 XML of these demos names
geoms that 1.4.1's Panda no longer has, so it does not load.)

Usage: replay_robosuite.py DEMO_HDF5 OUT.npz KEY [KEY ...]
OUT.npz holds each KEY concatenated over demos (in demo_<k> order) and the robosuite version used.
"""
import json
import sys

import h5py
import numpy as np
import robosuite

src, out, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
with h5py.File(src, "r") as f:
    info = json.loads(f["data"].attrs["env_info"])
    env = robosuite.make(**info, has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                         ignore_done=True, reward_shaping=False)
    frames = {k: [] for k in keys}
    for name in sorted(f["data"], key=lambda n: int(n.split("_")[1])):
        env.reset()  # the release's own model: the recorded XML of 1.4.0 loads in neither 1.4.1 nor 1.5.2
        for state in f[f"data/{name}/states"][()]:
            env.sim.set_state_from_flattened(state)
            env.sim.forward()
            obs = env._get_observations(force_update=True)
            for k in keys:
                frames[k].append(np.asarray(obs[k]))
np.savez(out, robosuite=robosuite.__version__, **{k: np.stack(v) for k, v in frames.items()})
print(f"replayed {len(frames[keys[0]])} states with robosuite {robosuite.__version__}")
