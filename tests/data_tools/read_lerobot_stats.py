"""Read a v3.0 LeRobotDataset's statistics with the real lerobot 0.4.x (run with .venv-tools/bin/python).

Usage: read_lerobot_stats.py DATASET_DIR OUT.json
Writes {"episodes": [per-episode stats], "aggregate": ..., "stats_json": ..., "columns": {name: arrow type}}:
each episode's `stats/` columns as lerobot's dataset tools load them (dataset_tools._load_episode_with_stats,
the row that delete_episodes / split_dataset re-aggregate), lerobot's aggregate_stats over them (which also
checks their types and shapes), meta/stats.json as LeRobotDatasetMetadata loads it, and the arrow types of
the stats columns.
"""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import torch.library

# See make_lerobot.py: PyPI's CUDA torchvision cannot register its C ops against the CPU torch.
_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
import torchvision  # noqa: E402,F401

torch.library.register_fake = _register_fake

from lerobot.datasets.compute_stats import aggregate_stats  # noqa: E402
from lerobot.datasets.dataset_tools import _load_episode_with_stats  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata  # noqa: E402
from lerobot.datasets.utils import serialize_dict  # noqa: E402


def dense(value):
    """pandas hands nested list columns back as object arrays of arrays; lerobot's tools restack them."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.stack([dense(v) for v in value])
    return np.asarray(value)


root, out = Path(sys.argv[1]), sys.argv[2]
meta = LeRobotDatasetMetadata("robopolicy/export", root=root)
source = SimpleNamespace(meta=meta, root=root)
episodes = []
for e in range(meta.total_episodes):
    row = _load_episode_with_stats(source, e)
    stats: dict = {}
    for key, value in row.items():
        if key.startswith("stats/"):
            feature, stat = key.removeprefix("stats/").split("/")
            stats.setdefault(feature, {})[stat] = dense(value)
    episodes.append(stats)
columns = {f.name: str(f.type) for p in sorted(root.glob("meta/episodes/*/*.parquet"))
           for f in pq.read_schema(p) if f.name.startswith("stats/")}
result = {"episodes": [serialize_dict(s) for s in episodes], "aggregate": serialize_dict(aggregate_stats(episodes)),
          "stats_json": serialize_dict(meta.stats), "columns": columns}
Path(out).write_text(json.dumps(result))
print(f"read the stats of {len(episodes)} episodes")
