#!/usr/bin/env python
"""Latency of one action-chunk prediction at batch 1, per head and step count, vs. the bare network cost.

End to end = `Policy.predict_action(obs)`: raw observation dict in (uint8 images, float state),
unnormalized chunk out. Bare = the encoder forward plus a replay of exactly the backbone calls the head
made (recorded with a forward hook; with the input-gradient backward where the head needed one, as the
energy head does), timed as one function like the end-to-end call, so both pay the same per-call cache misses
(timing the encoder and the backbone replay separately overstated the bare cost of 0.2 ms networks by ~10 %,
and so understated their overhead).
Overhead = end_to_end / bare - 1: the cost of everything that is not the networks.
The energy head's network is its backbone plus the scalar read-out, so both are replayed.
With --compile, `Policy.compile()` is timed too (one graph for all of predict_action without cameras, for the
sampling loop with cameras; compile seconds reported) and its overhead is taken against the same eager bare
figure: what a user saves over calling the networks by hand. With --aot, `Policy.compile(ahead_of_time=True)`
(AOTInductor snapshot: one shared library for all of predict_action without cameras) is timed the same way.
For camera settings with two observation frames, the closed-loop `select_action` latencies are reported too.
Medians over many repeats after warm-up; all figures come from the same process, so ratios are stable.

usage: python scripts/bench_inference.py [--repeats 50] [--settings lowdim-mlp,...] [--compile] [--aot] [--json F]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from _bench import write_report
from peers.common import time_control_steps

from robopolicy.policy import Policy
from robopolicy.specs import ActionSpec, BackboneConfig, EncoderConfig, HeadConfig, ObsSpec, PolicyConfig

# (label, head, params, steps passed to predict_action)
HEAD_SETTINGS = [
    ("DDPM-100", "diffusion", {"sampler": "ddpm", "inference_steps": 100}, 100),
    ("DDIM-10", "diffusion", {"sampler": "ddim", "inference_steps": 10}, 10),
    ("flow-10", "flow", {"inference_steps": 10}, 10),
    ("flow-1", "flow", {"inference_steps": 1}, 1),
    ("consistency-1", "consistency", {"inference_steps": 1}, 1),
    ("energy-2", "energy", {"variant": "ebt", "inference": "descent", "descent_steps": 2}, 2),
    ("energy-10", "energy", {"variant": "ebt", "inference": "descent", "descent_steps": 10}, 10),
    ("regression", "regression", {}, None),
]

STATE, ACTION_DIM, HORIZON = 20, 7, 16
BACKBONES = {
    "lowdim-mlp": BackboneConfig(kind="mlp", hidden_dims=[256, 256, 256]),
    "lowdim-unet": BackboneConfig(kind="unet", down_dims=[64, 128, 256]),
    "rgb84-unet": BackboneConfig(kind="unet", down_dims=[64, 128, 256]),
    "rgb84x1-unet": BackboneConfig(kind="unet", down_dims=[64, 128, 256]),  # one observation frame (To = 1)
}


def policy_for(setting: str, head: str, params: dict) -> Policy:
    obs = [ObsSpec("state", (STATE,))]
    if setting.startswith("rgb"):
        obs.append(ObsSpec("agentview", (84, 84, 3), "rgb"))
    n_obs_steps = 1 if setting.startswith("rgb84x1") else 2
    cfg = PolicyConfig(obs=obs, action=ActionSpec(ACTION_DIM), n_obs_steps=n_obs_steps, horizon=HORIZON,
                       n_action_steps=8, encoder=EncoderConfig(crop_shape=(76, 76)), backbone=BACKBONES[setting],
                       head=HeadConfig(head, params))
    policy = Policy(cfg)
    ones = np.ones
    policy.fit_normalizer({k: {"min": -ones(d), "max": ones(d), "mean": 0 * ones(d), "std": ones(d)}
                           for k, d in (("state", STATE), ("action", ACTION_DIM))})
    return policy.eval()


def observation(policy: Policy) -> dict[str, torch.Tensor]:
    obs = {}
    for spec in policy.config.obs:
        shape = (1, policy.config.n_obs_steps, *spec.shape)
        obs[spec.key] = (torch.randint(0, 256, shape, dtype=torch.uint8) if spec.kind == "rgb" else torch.randn(shape))
    return obs


def paired_medians(fns: list[Callable[[], object]], repeats: int, warmup: int = 3) -> list[float]:
    """Median seconds of each function, timed in alternation so that all of them see the same machine load."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def record_backbone_calls(policy: Policy, obs: dict, steps: int | None) -> list[tuple]:
    calls: list[tuple] = []
    handle = policy.head.net.register_forward_hook(
        lambda _m, args, _out: calls.append(tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)
                                            + (args[0].requires_grad,)))
    policy.predict_action(obs, steps=steps)
    handle.remove()
    return calls


def network(head: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The head's whole network: the backbone, and for the energy head its scalar read-out too."""
    readout = getattr(head, "readout", None)
    if readout is None:
        return head.net
    return lambda x, t, cond: readout(head.net(x, t, cond).flatten(1))


def replay(net: Callable[..., torch.Tensor], calls: list[tuple]) -> None:
    for x, t, cond, needs_grad in calls:
        if needs_grad:
            with torch.enable_grad():
                x = x.requires_grad_(True)
                torch.autograd.grad(net(x, t, cond).sum(), x)
        else:
            with torch.no_grad():
                net(x, t, cond)


def bare_networks(encoder: Callable[..., object], normed: dict, net: Callable[..., torch.Tensor], calls: list) -> None:
    """The encoder plus the backbone replay as one timed function, like predict_action: both pay the same
    per-call cache misses."""
    encoder(normed)
    replay(net, calls)


def bench(repeats: int, settings: list[str], heads: list[str], compile_too: bool, aot_too: bool) -> list[dict]:
    rows = []
    for setting in settings:
        for label, head, params, steps in (h for h in HEAD_SETTINGS if h[0] in heads):
            torch.manual_seed(0)
            policy = policy_for(setting, head, params)
            obs = observation(policy)
            calls = record_backbone_calls(policy, obs, steps)
            normed = {s.key: obs[s.key] if s.kind == "rgb" else policy.normalizer.normalize(s.key, obs[s.key])
                      for s in policy.config.obs}
            net = network(policy.head)
            timed = [partial(policy.encoder, normed), partial(bare_networks, policy.encoder, normed, net, calls),
                     partial(policy.predict_action, obs, steps=steps)]
            row: dict = {"setting": setting, "head": label, "backbone_calls": len(calls)}
            variants = {name: kwargs for name, kwargs, wanted in
                        (("compiled", {}, compile_too), ("aot", {"ahead_of_time": True}, aot_too)) if wanted}
            for name, kwargs in variants.items():
                compiled = policy_for(setting, head, params)
                compiled.load_state_dict(policy.state_dict())
                start = time.perf_counter()
                compiled.compile(**kwargs).predict_action(obs, steps=steps)
                row[f"{name}_compile_s"] = time.perf_counter() - start
                timed.append(partial(compiled.predict_action, obs, steps=steps))
            with torch.no_grad():
                encoder_s, bare, e2e_s, *variant_s = paired_medians(timed, repeats)  # bare: seconds
            row.update({"end_to_end_ms": 1e3 * e2e_s, "bare_ms": 1e3 * bare, "encoder_ms": 1e3 * encoder_s,
                        "overhead": e2e_s / bare - 1.0})
            line = (f"{setting:<12} {label:<14} calls={len(calls):>3}  e2e={1e3 * e2e_s:8.2f} ms  "
                    f"bare={1e3 * bare:8.2f} ms  overhead={e2e_s / bare - 1:+6.1%}")
            for name, seconds in zip(variants, variant_s):
                row.update({f"{name}_ms": 1e3 * seconds, f"{name}_overhead": seconds / bare - 1.0})
                line += f"  {name}={1e3 * seconds:8.2f} ms ({seconds / bare - 1:+6.1%})"
            rows.append(row)
            print(line, flush=True)
    return rows


def closed_loop(repeats: int, settings: list[str], heads: list[str]) -> list[dict]:
    """`select_action` latencies per control step for settings with an observation history (n_obs_steps > 1).

    The replanning step encodes only its own frame (the previous one was encoded when it arrived), so its
    latency is one image encoding plus sampling; the step before it pays the other encoding.
    """
    rows = []
    for setting in (s for s in settings if s.startswith("rgb84-")):
        for label, head, params, _steps in (h for h in HEAD_SETTINGS if h[0] in heads and h[3] in (None, 1)):
            torch.manual_seed(0)
            policy = policy_for(setting, head, params)
            frame = {k: v[:, 0] for k, v in observation(policy).items()}
            per_step = time_control_steps(partial(policy.select_action, frame), policy.config.n_action_steps, repeats)
            ms = [1e3 * statistics.median(b) for b in per_step]
            rows.append({"setting": setting, "head": label, "replan_ms": ms[0], "pre_replan_ms": ms[-1],
                         "other_steps_ms": max(ms[1:-1])})
            print(f"{setting:<12} {label:<14} select_action: replan {ms[0]:.2f} ms, step before it {ms[-1]:.2f} ms, "
                  f"other steps <= {max(ms[1:-1]):.2f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row (medians are reported)")
    parser.add_argument("--settings", default=",".join(BACKBONES), help=f"subset of {list(BACKBONES)}")
    parser.add_argument("--heads", default=",".join(h[0] for h in HEAD_SETTINGS),
                        help=f"subset of {[h[0] for h in HEAD_SETTINGS]}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a 2-core machine two threads collapse under any other load)")
    parser.add_argument("--compile", action="store_true",
                        help="also time Policy.compile() (needs a C++ compiler; seconds to a minute per row)")
    parser.add_argument("--aot", action="store_true",
                        help="also time Policy.compile(ahead_of_time=True) (AOTInductor; ~10 s to minutes per row)")
    parser.add_argument("--json", default="bench_inference.json", help="where to write every row as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings, heads = args.settings.split(","), args.heads.split(",")
    rows = bench(args.repeats, settings, heads, args.compile, args.aot)
    loop_rows = closed_loop(args.repeats, settings, heads)
    header = f"\n{'setting':<12} {'head':<14} {'calls':>5} {'end-to-end':>11} {'bare nets':>10} {'overhead':>9}"
    variants = [name for name, wanted in (("compiled", args.compile), ("aot", args.aot)) if wanted]
    print(header + "".join(f" {name:>10} {'overhead':>9} {'compile':>8}" for name in variants))
    for r in rows:
        line = (f"{r['setting']:<12} {r['head']:<14} {r['backbone_calls']:>5} {r['end_to_end_ms']:>9.2f}ms "
                f"{r['bare_ms']:>8.2f}ms {r['overhead']:>+9.1%}")
        for name in variants:
            line += f" {r[name + '_ms']:>8.2f}ms {r[name + '_overhead']:>+9.1%} {r[name + '_compile_s']:>7.1f}s"
        print(line)
    for r in loop_rows:
        print(f"{r['setting']:<12} {r['head']:<14} closed loop: replanning step {r['replan_ms']:.2f} ms "
              f"(step before it {r['pre_replan_ms']:.2f} ms, other steps <= {r['other_steps_ms']:.2f} ms)")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
            "compile": args.compile, "aot": args.aot}
    print()
    write_report(args.json, {"meta": meta, "rows": rows, "closed_loop": loop_rows})


if __name__ == "__main__":
    main()
