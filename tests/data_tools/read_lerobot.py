"""Load a LeRobotDataset with the real lerobot 0.4.x loader and dump every frame (run with .venv-tools/bin/python).

Usage: read_lerobot.py DATASET_DIR OUT.npz [EPISODES.json]
Proves that a dataset robopolicy exported is one lerobot itself reads: values come from
LeRobotDataset.__getitem__ (images converted back to uint8 HWC), plus the episode boundaries from its metadata
(and, given EPISODES.json, every row of the episodes metadata as lerobot loaded it, stats/ columns aside).
lerobot 0.4.x decodes video with torchcodec or torchvision.io.VideoReader, neither available with the CPU
torch here, so its decode step is swapped for a plain PyAV one; lerobot still picks the file and timestamps.
"""
import json
import sys

import numpy as np
import torch.library

# See make_lerobot.py: PyPI's CUDA torchvision cannot register its C ops against the CPU torch.
_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
import torchvision  # noqa: E402,F401

torch.library.register_fake = _register_fake

import av  # noqa: E402
import lerobot.datasets.lerobot_dataset as lerobot_dataset  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def decode_with_pyav(video_path, timestamps, tolerance_s, backend=None):
    """Frames nearest each timestamp, as lerobot returns them: float (N, C, H, W) in [0, 1]."""
    with av.open(str(video_path)) as container:
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    times = np.asarray([t for t, _ in decoded])
    picked = []
    for ts in timestamps:
        i = int(np.argmin(np.abs(times - float(ts))))
        assert abs(times[i] - float(ts)) < tolerance_s, (video_path, ts, times[i])
        picked.append(decoded[i][1])
    return torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float() / 255


lerobot_dataset.decode_video_frames = decode_with_pyav

root, out = sys.argv[1], sys.argv[2]
ds = LeRobotDataset("robopolicy/export", root=root, video_backend="pyav")
frames: dict[str, list] = {}
for i in range(len(ds)):
    item = ds[i]
    for key, value in item.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key in ds.meta.camera_keys:
            value = (value.permute(1, 2, 0) * 255).round().to(torch.uint8)
        frames.setdefault(key, []).append(value.numpy())
ends = np.asarray([ep["dataset_to_index"] for ep in ds.meta.episodes])
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as f:
        json.dump([dict(ep) for ep in ds.meta.episodes], f)
np.savez(out, episode_ends=ends, fps=ds.fps, **{k: np.stack(v) for k, v in frames.items()})
print(f"read {len(ds)} frames, {ds.num_episodes} episodes")
