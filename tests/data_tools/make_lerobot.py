"""Create a small LeRobotDataset with the real lerobot package (run with .venv-tools/bin/python).

Usage: make_lerobot.py OUT_DIR {v3.0,v2.1} [VCODEC]
Writes OUT_DIR/dataset (the LeRobotDataset) and OUT_DIR/expected.npz (the exact values fed to lerobot,
concatenated over episodes, plus episode_ends), so tests can compare a conversion against the source.
v3.0 uses lerobot 0.4.x; v2.1 uses lerobot 0.3.3 (installed with --target into .venv-tools/lerobot-0.3.3).
"""
import sys
from pathlib import Path

version = sys.argv[2]
if version == "v2.1":
    sys.path.insert(0, str(Path(sys.executable).parent.parent / "lerobot-0.3.3"))

import numpy as np  # noqa: E402
import torch.library  # noqa: E402

# PyPI's torchvision wheels are CUDA builds; with the CPU torch their C ops do not load and the import dies
# registering fake kernels for those ops. lerobot only needs torchvision's pure-Python parts, so skip them.
_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
import torchvision  # noqa: E402,F401

torch.library.register_fake = _register_fake

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

out = Path(sys.argv[1])
vcodec = sys.argv[3] if len(sys.argv) > 3 else "libsvtav1"
H, W, FPS = 32, 48, 10
lengths = [6, 9, 7]
features = {
    "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
    "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
    "observation.images.cam": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
    "observation.images.wrist": {"dtype": "image", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
}
kwargs = {"vcodec": vcodec} if version == "v3.0" else {}
ds = LeRobotDataset.create("robopolicy/test", fps=FPS, features=features, root=out / "dataset", use_videos=True,
                           **kwargs)
rng = np.random.default_rng(0)
expected = {k: [] for k in features}
yy, xx = np.mgrid[0:H, 0:W]
for ep, n in enumerate(lengths):
    for t in range(n):
        # Smooth, distinct frames: lossy codecs keep them within a few grey levels.
        cam = np.stack([xx * 4 + t * 3, yy * 6 + ep * 20, np.full_like(xx, 40 + 20 * t)], -1).astype(np.uint8)
        wrist = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        frame = {
            "observation.state": rng.standard_normal(3).astype(np.float32),
            "action": rng.standard_normal(2).astype(np.float32),
            "observation.images.cam": cam,
            "observation.images.wrist": wrist,
        }
        for k, v in frame.items():
            expected[k].append(v)
        if version == "v3.0":
            ds.add_frame({**frame, "task": f"task {ep % 2}"})
        else:
            ds.add_frame(frame, task=f"task {ep % 2}")
    ds.save_episode()
if hasattr(ds, "finalize"):
    ds.finalize()
np.savez(out / "expected.npz", episode_ends=np.cumsum(lengths), **{k: np.stack(v) for k, v in expected.items()})
print(f"wrote {out / 'dataset'}")
