"""robopolicy's policies under the commands of scripts/compare_peers.py (run with .venv/bin/python).

A training step is ``Trainer.update``, the step ``robopolicy train`` runs: normalization inside the policy, the
head's loss, backward, gradient clipping, AdamW, the cosine schedule and the EMA update. Images arrive as our
datasets deliver them (uint8 HWC; the policy converts them). Inference is ``Policy.predict_action`` (eager):
normalization, encoding, sampling and unnormalization of one chunk; closed loop, ``Policy.select_action`` per
control step (each frame is encoded once, on arrival).

usage (driven by compare_peers.py): ours_side.py SETTING_JSON HEAD PARAMS_JSON
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time

import numpy as np
import torch
from common import memory, rss_mb, serve, time_calls, time_control_steps  # scripts/peers: this script's folder

from robopolicy.data.sampler import SequenceDataset
from robopolicy.policy import Policy
from robopolicy.specs import (
    ActionSpec,
    BackboneConfig,
    EncoderConfig,
    HeadConfig,
    ObsSpec,
    PolicyConfig,
    RunConfig,
    TrainConfig,
)
from robopolicy.train.distributed import Dist
from robopolicy.train.trainer import Trainer


class OursSide:
    def __init__(self, setting: dict, head: str, params: dict) -> None:
        self.s, self.head, self.params = setting, head, params
        torch.set_num_threads(setting["threads"])
        self.device = torch.device(setting["device"])
        self.step = 0
        self.samplers: dict[str, Policy] = {}
        self.load_data(np.load(setting["batches"]))

    def load_data(self, data: np.lib.npyio.NpzFile) -> None:
        """The cycled training batches and the inference observation."""
        keys = self.s["image_key"], self.s["state_key"]
        self.batches = [{"obs": dict(zip(keys, (torch.from_numpy(data[f"image_{i}"]),
                                                torch.from_numpy(data[f"state_{i}"])))),
                         "action": torch.from_numpy(data[f"action_{i}"])} for i in range(int(data["n_batches"]))]
        self.obs = dict(zip(keys, (torch.from_numpy(data["obs_image"]), torch.from_numpy(data["obs_state"]))))

    def obs_specs(self) -> list[ObsSpec]:
        s = self.s
        return [ObsSpec(s["image_key"], tuple(s["image_shape"]), "rgb"), ObsSpec(s["state_key"], (s["state_dim"],))]

    def config(self, head: str, params: dict) -> PolicyConfig:
        s = self.s
        return PolicyConfig(
            obs=self.obs_specs(),
            action=ActionSpec(s["action_dim"]), n_obs_steps=s["n_obs_steps"], horizon=s["horizon"],
            n_action_steps=s["n_action_steps"],
            encoder=EncoderConfig(crop_shape=tuple(s["crop"]) if s["crop"] else None),
            backbone=BackboneConfig(kind="unet", down_dims=list(s["down_dims"]), kernel_size=s["kernel_size"],
                                    n_groups=s["n_groups"], time_embed_dim=s["time_embed_dim"]),
            head=HeadConfig(head, params))

    def build(self) -> dict:
        s = self.s
        self.tmp = tempfile.TemporaryDirectory()  # the trainer writes nothing unless it checkpoints
        train = TrainConfig(dataset=s["dataset"], out_dir=self.tmp.name, steps=s["schedule_steps"],
                            batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"], device=s["device"],
                            tensorboard=False, progress=False)
        dataset = SequenceDataset(s["dataset"], obs_keys=[spec.key for spec in self.obs_specs()],
                                  n_obs_steps=s["n_obs_steps"], horizon=s["horizon"], val_ratio=0.0)
        self.trainer = Trainer(RunConfig(self.config(self.head, self.params), train), Dist(), self.device, dataset)
        policy = self.trainer.policy
        params = sum(p.numel() for p in policy.parameters())
        unet = sum(p.numel() for p in policy.head.net.parameters())
        return {"params": params, "unet_params": unet, "rss_mb": rss_mb(), "torch": torch.__version__,
                "threads": torch.get_num_threads()}

    def next_batch(self) -> dict:
        return self.batches[self.step % len(self.batches)]

    def train(self, steps: int) -> dict:
        seconds, losses = [], []
        for _ in range(steps):
            batch = self.next_batch()
            self.step += 1
            start = time.perf_counter()
            loss, _, _ = self.trainer.update(self.trainer.policy, batch, self.step)  # .item() inside: synchronous
            seconds.append(time.perf_counter() - start)
            losses.append(loss)
        return {"seconds": seconds, "losses": losses}

    def sampler(self, params: dict) -> Policy:
        """The trained weights under other sampling settings (e.g. DDIM instead of DDPM), built once per setting."""
        key = json.dumps(params, sort_keys=True)
        if key not in self.samplers:
            trained = self.trainer.policy
            policy = Policy(dataclasses.replace(trained.config, head=HeadConfig(self.head, {**self.params, **params})))
            policy.load_state_dict(trained.state_dict())
            self.samplers[key] = policy.to(self.device).eval()
        return self.samplers[key]

    def infer(self, params: dict, steps: int, repeats: int) -> dict:
        """Latency of one chunk from an observation history."""
        policy = self.sampler(params)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        seconds, chunk = time_calls(lambda: policy.predict_action(self.obs, steps=steps), repeats, sync)
        return {"seconds": seconds, "chunk_shape": list(chunk.shape)}

    def closed_loop(self, params: dict, steps: int, cycles: int) -> dict:
        """``select_action`` per control step over ``cycles`` chunks after one warm-up chunk (episode start):
        the replanning step's latency, and the slowest of the others. ``steps`` is the head's own setting."""
        policy = self.sampler(params)
        frame = {k: v[:, -1] for k, v in self.obs.items()}
        policy.reset()
        per_step = time_control_steps(lambda: policy.select_action(frame), self.s["n_action_steps"], cycles)
        return {"seconds": per_step[0], "other_max_s": max(max(b) for b in per_step[1:])}

    def memory(self) -> dict:
        return memory(torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None)


class OursStateSide(OursSide):
    """The state-only setting of scripts/compare_peers_success.py: training windows in the driver's order, and
    ``predict`` for the evaluation protocol with the weights ``robopolicy train`` deploys (its EMA)."""

    def load_data(self, data: np.lib.npyio.NpzFile) -> None:
        self.windows = {"obs": {self.s["state_key"]: torch.from_numpy(data["obs_state"])},
                        "action": torch.from_numpy(data["action"])}
        self.order = data["order"]
        self.deployed: Policy | None = None

    def obs_specs(self) -> list[ObsSpec]:
        return [ObsSpec(self.s["state_key"], (self.s["state_dim"],))]

    def next_batch(self) -> dict:
        size = self.s["batch_size"]
        rows = torch.from_numpy(self.order[self.step * size:(self.step + 1) * size])
        self.checksums.append(float(self.windows["action"][rows].double().sum()))
        return {"obs": {k: v[rows] for k, v in self.windows["obs"].items()}, "action": self.windows["action"][rows]}

    def train(self, steps: int) -> dict:
        self.deployed = None
        self.samplers.clear()
        self.checksums: list[float] = []
        return super().train(steps) | {"checksums": self.checksums}

    def predict(self, state: list) -> dict:
        """The chunk (B, horizon, A) for observation histories (B, n_obs_steps, state_dim)."""
        if self.deployed is None:
            with self.trainer.ema_weights():
                self.deployed = self.sampler({})
        obs = {self.s["state_key"]: torch.tensor(state, dtype=torch.float32, device=self.device)}
        return {"actions": self.deployed.predict_action(obs).tolist()}


if __name__ == "__main__":
    setting = json.loads(sys.argv[1])
    side_class = OursStateSide if setting.get("mode") == "state" else OursSide
    side = side_class(setting, sys.argv[2], json.loads(sys.argv[3]))
    handlers = {"build": side.build, "train": side.train, "infer": side.infer, "closed_loop": side.closed_loop,
                "memory": side.memory}
    serve(handlers | ({"predict": side.predict} if isinstance(side, OursStateSide) else {}))
