"""LeRobot's DiffusionPolicy under the commands of scripts/compare_peers.py (run with .venv-tools/bin/python).

A training step is the body of LeRobot's own ``update_policy`` (lerobot/scripts/lerobot_train.py) without the
Accelerate wrappers, which are no-ops in fp32 on one device: its preprocessor (normalization), ``policy.forward``,
backward, gradient clipping at its preset norm, its preset Adam step and cosine schedule. Images arrive as LeRobot's
datasets deliver them (float CHW in [0, 1]); that conversion is data loading there and is not timed. Inference is
what ``predict_action_chunk`` computes (``DiffusionModel.generate_actions``) between the pre- and postprocessor;
closed loop, ``select_action`` per control step (it keeps raw frames and encodes the whole history at each replan).

usage (driven by compare_peers.py): lerobot_side.py SETTING_JSON
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch.library

# PyPI's torchvision wheels are CUDA builds; with the CPU torch their C ops do not load and the import dies
# registering fake kernels for those ops. LeRobot's diffusion policy uses only torchvision's pure-Python parts
# (the ResNet definition and crop transforms), so those registrations are skipped (as tests/data_tools do).
_register_fake = torch.library.register_fake
torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
import torchvision  # noqa: E402,F401

torch.library.register_fake = _register_fake

import lerobot  # noqa: E402
from common import memory, rss_mb, serve, time_calls, time_control_steps  # noqa: E402
from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # noqa: E402
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature  # noqa: E402
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig  # noqa: E402
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy  # noqa: E402
from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors  # noqa: E402
from lerobot.utils.constants import OBS_IMAGES  # noqa: E402

IMAGE, STATE, ACTION = "observation.images.top", "observation.state", "action"
ENV_STATE = "observation.environment_state"


class LeRobotSide:
    def __init__(self, setting: dict) -> None:
        self.s = setting
        torch.set_num_threads(setting["threads"])
        self.device = torch.device(setting["device"])
        self.step = 0
        self.load_data(np.load(setting["batches"]))

    def load_data(self, data: np.lib.npyio.NpzFile) -> None:
        """The cycled training batches, the inference observation and the normalization statistics."""
        self.batches = [self._to_lerobot(data[f"image_{i}"], data[f"state_{i}"], data[f"action_{i}"])
                        for i in range(int(data["n_batches"]))]
        self.obs = self._to_lerobot(data["obs_image"], data["obs_state"], None)
        stats = {STATE: {"min": data["state_min"], "max": data["state_max"]},
                 ACTION: {"min": data["action_min"], "max": data["action_max"]},
                 IMAGE: {"mean": data["image_mean"].reshape(3, 1, 1), "std": data["image_std"].reshape(3, 1, 1)}}
        self.stats = {k: {n: torch.as_tensor(v, dtype=torch.float32) for n, v in d.items()} for k, d in stats.items()}

    def input_features(self) -> dict[str, PolicyFeature]:
        h, w, c = self.s["image_shape"]
        return {IMAGE: PolicyFeature(FeatureType.VISUAL, (c, h, w)),
                STATE: PolicyFeature(FeatureType.STATE, (self.s["state_dim"],))}

    def _to_lerobot(self, image: np.ndarray, state: np.ndarray, action: np.ndarray | None) -> dict:
        """uint8 (B, To, H, W, C) -> float (B, To, C, H, W) in [0, 1], as LeRobotDataset returns frames."""
        batch = {IMAGE: torch.from_numpy(image).permute(0, 1, 4, 2, 3).float().div(255.0).contiguous(),
                 STATE: torch.from_numpy(state).float()}
        if action is not None:
            batch[ACTION] = torch.from_numpy(action).float()
            batch["action_is_pad"] = torch.zeros(action.shape[:2], dtype=torch.bool)
        return batch

    def build(self) -> dict:
        s = self.s
        cfg = DiffusionConfig(
            input_features=self.input_features(),
            normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "STATE": NormalizationMode.MIN_MAX,
                                   "ENV": NormalizationMode.MIN_MAX, "ACTION": NormalizationMode.MIN_MAX},
            output_features={ACTION: PolicyFeature(FeatureType.ACTION, (s["action_dim"],))},
            n_obs_steps=s["n_obs_steps"], horizon=s["horizon"], n_action_steps=s["n_action_steps"],
            crop_shape=tuple(s["crop"]) if s["crop"] else None, down_dims=tuple(s["down_dims"]),
            kernel_size=s["kernel_size"],
            n_groups=s["n_groups"], diffusion_step_embed_dim=s["time_embed_dim"],
            num_train_timesteps=s["num_train_timesteps"], optimizer_lr=s["lr"], device=s["device"],
        )
        torch.manual_seed(s["seed"])
        self.policy = DiffusionPolicy(cfg).to(self.device)
        self.pre, self.post = make_diffusion_pre_post_processors(cfg, self.stats)
        optimizer_cfg = cfg.get_optimizer_preset()
        self.grad_clip = optimizer_cfg.grad_clip_norm
        self.optimizer = optimizer_cfg.build(self.policy.get_optim_params())
        self.scheduler = cfg.get_scheduler_preset().build(self.optimizer, num_training_steps=s["schedule_steps"])
        sched = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                     beta_schedule=cfg.beta_schedule, clip_sample=cfg.clip_sample,
                     clip_sample_range=cfg.clip_sample_range, prediction_type=cfg.prediction_type)
        self.samplers = {"ddpm": DDPMScheduler(**sched), "ddim": DDIMScheduler(**sched)}
        params = sum(p.numel() for p in self.policy.parameters())
        unet = sum(p.numel() for p in self.policy.diffusion.unet.parameters())
        return {"params": params, "unet_params": unet, "rss_mb": rss_mb(), "lerobot": lerobot.__version__,
                "torch": torch.__version__, "threads": torch.get_num_threads()}

    def next_batch(self) -> dict:
        return self.batches[self.step % len(self.batches)]

    def train(self, steps: int) -> dict:
        seconds, losses = [], []
        for _ in range(steps):
            raw = self.next_batch()
            self.step += 1
            start = time.perf_counter()
            self.policy.train()
            batch = self.pre(dict(raw))
            loss, _ = self.policy.forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            losses.append(loss.item())
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds, "losses": losses}

    def use_sampler(self, sampler: str, steps: int) -> None:
        model = self.policy.diffusion
        model.noise_scheduler, model.num_inference_steps = self.samplers[sampler], steps
        self.policy.eval()

    def infer(self, sampler: str, steps: int, repeats: int) -> dict:
        """Latency of one chunk from an observation history."""
        self.use_sampler(sampler, steps)
        model = self.policy.diffusion

        def one_chunk() -> torch.Tensor:
            batch = self.pre(dict(self.obs))
            # as select_action does before predict_action_chunk: cameras stacked on a camera axis
            batch[OBS_IMAGES] = torch.stack([batch[k] for k in self.policy.config.image_features], dim=-4)
            return self.post(model.generate_actions(batch))

        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        with torch.no_grad():
            seconds, last = time_calls(one_chunk, repeats, sync)
        return {"seconds": seconds, "chunk_shape": list(last.shape)}

    def closed_loop(self, sampler: str, steps: int, cycles: int) -> dict:
        """``select_action`` (between pre- and postprocessor) per control step over ``cycles`` chunks after one
        warm-up chunk: the replanning step's latency, and the slowest of the others."""
        self.use_sampler(sampler, steps)
        frame = {k: v[:, -1] for k, v in self.obs.items()}
        self.policy.reset()
        with torch.no_grad():
            per_step = time_control_steps(lambda: self.post(self.policy.select_action(self.pre(dict(frame)))),
                                          self.s["n_action_steps"], cycles)
        return {"seconds": per_step[0], "other_max_s": max(max(b) for b in per_step[1:])}

    def memory(self) -> dict:
        return memory(torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None)


class LeRobotStateSide(LeRobotSide):
    """The state-only setting of scripts/compare_peers_success.py: LeRobot's DiffusionPolicy needs a robot state and an
    image or environment state, so push_puck's state (pusher, puck, goal xy) enters as the pusher position
    (``observation.state``) and the puck and goal (``observation.environment_state``): the same six numbers our
    policy reads. Training windows are drawn in the driver's order; ``predict`` serves the evaluation protocol."""

    def load_data(self, data: np.lib.npyio.NpzFile) -> None:
        self.windows = self._split(data["obs_state"]) | {ACTION: torch.from_numpy(data["action"]).float()}
        self.order = data["order"]
        self.stats = {k: {"min": v.amin((0, 1)), "max": v.amax((0, 1))} for k, v in self.windows.items()}

    @staticmethod
    def _split(state: np.ndarray) -> dict[str, torch.Tensor]:
        state_t = torch.as_tensor(state).float()
        return {STATE: state_t[..., :2], ENV_STATE: state_t[..., 2:]}

    def input_features(self) -> dict[str, PolicyFeature]:
        return {STATE: PolicyFeature(FeatureType.STATE, (2,)), ENV_STATE: PolicyFeature(FeatureType.ENV, (4,))}

    def next_batch(self) -> dict:
        size = self.s["batch_size"]
        rows = torch.from_numpy(self.order[self.step * size:(self.step + 1) * size])
        pad = torch.zeros(len(rows), self.s["horizon"], dtype=torch.bool)
        batch = {k: v[rows] for k, v in self.windows.items()}
        self.checksums.append(float(batch[ACTION].double().sum()))
        return batch | {"action_is_pad": pad}

    def train(self, steps: int) -> dict:
        self.checksums: list[float] = []
        return super().train(steps) | {"checksums": self.checksums}

    def predict(self, state: list) -> dict:
        """The executed actions (B, n_action_steps, A) for observation histories (B, n_obs_steps, 6)."""
        self.use_sampler("ddpm", self.s["inference_steps"])
        with torch.no_grad():
            actions = self.post(self.policy.diffusion.generate_actions(self.pre(self._split(np.asarray(state)))))
        return {"actions": actions.tolist()}


if __name__ == "__main__":
    setting = json.loads(sys.argv[1])
    side = LeRobotStateSide(setting) if setting.get("mode") == "state" else LeRobotSide(setting)
    handlers = {"build": side.build, "train": side.train, "infer": side.infer, "closed_loop": side.closed_loop,
                "memory": side.memory}
    serve(handlers | ({"predict": side.predict} if isinstance(side, LeRobotStateSide) else {}))
