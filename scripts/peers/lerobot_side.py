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
from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig  # noqa: E402
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy  # noqa: E402
from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors  # noqa: E402
from lerobot.utils.constants import OBS_IMAGES  # noqa: E402

IMAGE, STATE, ACTION = "observation.images.top", "observation.state", "action"


class LeRobotSide:
    def __init__(self, setting: dict) -> None:
        self.s = setting
        torch.set_num_threads(setting["threads"])
        self.device = torch.device(setting["device"])
        data = np.load(setting["batches"])
        self.batches = [self._to_lerobot(data[f"image_{i}"], data[f"state_{i}"], data[f"action_{i}"])
                        for i in range(int(data["n_batches"]))]
        self.obs = self._to_lerobot(data["obs_image"], data["obs_state"], None)
        stats = {STATE: {"min": data["state_min"], "max": data["state_max"]},
                 ACTION: {"min": data["action_min"], "max": data["action_max"]},
                 IMAGE: {"mean": data["image_mean"].reshape(3, 1, 1), "std": data["image_std"].reshape(3, 1, 1)}}
        self.stats = {k: {n: torch.as_tensor(v, dtype=torch.float32) for n, v in d.items()} for k, d in stats.items()}
        self.step = 0

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
        h, w, c = s["image_shape"]
        cfg = DiffusionConfig(
            input_features={IMAGE: PolicyFeature(FeatureType.VISUAL, (c, h, w)),
                            STATE: PolicyFeature(FeatureType.STATE, (s["state_dim"],))},
            output_features={ACTION: PolicyFeature(FeatureType.ACTION, (s["action_dim"],))},
            n_obs_steps=s["n_obs_steps"], horizon=s["horizon"], n_action_steps=s["n_action_steps"],
            crop_shape=tuple(s["crop"]), down_dims=tuple(s["down_dims"]), kernel_size=s["kernel_size"],
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

    def train(self, steps: int) -> dict:
        seconds, losses = [], []
        for _ in range(steps):
            raw = self.batches[self.step % len(self.batches)]
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


if __name__ == "__main__":
    side = LeRobotSide(json.loads(sys.argv[1]))
    serve({"build": side.build, "train": side.train, "infer": side.infer, "closed_loop": side.closed_loop,
           "memory": side.memory})
