"""Create a small RLDS dataset with the real tensorflow-datasets builder (run with .venv-tools/tfds/bin/python).

Usage: make_rlds.py OUT_DIR [EPISODES LENGTH SIZE]
With EPISODES LENGTH SIZE (benchmarks) it writes that many SIZExSIZE episodes, 8 shards, and no expected.npz.
Builds OUT_DIR/rlds_toy/1.0.0 the way Open X-Embodiment datasets are built: a GeneratorBasedBuilder whose
features are {steps: Dataset({observation: {image (PNG), wrist_image (JPEG), state}, action, reward, discount,
is_first, is_last, is_terminal, language_instruction}), episode_metadata: {file_path}}, written as TFRecord
shards (3 of them, so readers must walk shards). OUT_DIR/expected.npz holds the exact values fed to the
builder (images as TFDS decodes them, so the lossy JPEG is compared exactly too), concatenated over episodes,
with episode_ends and the per-episode instructions and file paths.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

out = Path(sys.argv[1])
BENCH = len(sys.argv) > 2
H, W = (int(sys.argv[4]),) * 2 if BENCH else (16, 20)
LENGTHS = [int(sys.argv[3])] * int(sys.argv[2]) if BENCH else [5, 8, 3, 6, 4]


def episode(i: int, n: int) -> dict:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:H, 0:W]
    steps = []
    for t in range(n):
        steps.append({
            "observation": {
                "image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                "wrist_image": np.stack([xx * 8 + t, yy * 10 + i * 30, np.full_like(xx, 50 + 9 * t)], -1).astype("u1"),
                "state": rng.standard_normal(4).astype(np.float32),
            },
            "action": rng.standard_normal(7).astype(np.float32),
            "reward": np.float32(t == n - 1),
            "discount": np.float32(1.0),
            "is_first": t == 0,
            "is_last": t == n - 1,
            "is_terminal": t == n - 1 and i % 2 == 0,
            "language_instruction": f"put the block {i % 3} in the bowl",
        })
    return {"steps": steps, "episode_metadata": {"file_path": f"/recorded/episode_{i}.npy"}}


class RldsToy(tfds.core.GeneratorBasedBuilder):
    """A tiny RLDS dataset, laid out like the Open X-Embodiment conversions."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "steps": tfds.features.Dataset({
                    "observation": tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="png"),
                        "wrist_image": tfds.features.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="jpeg"),
                        "state": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    }),
                    "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                    "reward": tfds.features.Scalar(dtype=np.float32),
                    "discount": tfds.features.Scalar(dtype=np.float32),
                    "is_first": tfds.features.Scalar(dtype=np.bool_),
                    "is_last": tfds.features.Scalar(dtype=np.bool_),
                    "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                    "language_instruction": tfds.features.Text(),
                }),
                "episode_metadata": tfds.features.FeaturesDict({"file_path": tfds.features.Text()}),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, n in enumerate(LENGTHS):
            yield f"episode_{i}", episode(i, n)


builder = RldsToy(data_dir=str(out))
shards = min(8, len(LENGTHS)) if BENCH else 3
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=shards))
if BENCH:
    print(f"wrote {builder.data_dir}")
    sys.exit(0)

# What TFDS hands back (in its own read order) is what a reader must reproduce. TFDS decodes JPEG with
# TensorFlow's default fast integer DCT; robopolicy decodes with libjpeg's accurate one, so the JPEG feature is
# also decoded here with dct_method="INTEGER_ACCURATE" (compared exactly) and kept as TFDS decodes it (compared
# within a few grey levels).
expected: dict[str, list] = {}
instructions, paths, ends = [], [], []
skip = {"steps": {"observation": {"wrist_image": tfds.decode.SkipDecoding()}}}
raw = tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False, decoders=skip))
for ep, ep_raw in zip(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)), raw, strict=True):
    paths.append(ep["episode_metadata"]["file_path"].decode())
    n = 0
    for step, step_raw in zip(ep["steps"], ep_raw["steps"], strict=True):
        blob = step_raw["observation"]["wrist_image"]
        accurate = tf.io.decode_jpeg(blob, dct_method="INTEGER_ACCURATE").numpy()
        expected.setdefault("wrist_image_accurate", []).append(accurate)
        flat = {f"observation/{k}": v for k, v in step["observation"].items()}
        flat.update({k: v for k, v in step.items() if k not in ("observation", "language_instruction")})
        for key, value in flat.items():
            expected.setdefault(key, []).append(np.asarray(value))
        n += 1
    instructions.append(step["language_instruction"].decode())
    ends.append(n + (ends[-1] if ends else 0))
np.savez(out / "expected.npz", episode_ends=np.asarray(ends), instructions=np.asarray(instructions),
         file_paths=np.asarray(paths), **{k: np.stack(v) for k, v in expected.items()})
print(f"wrote {builder.data_dir}")
