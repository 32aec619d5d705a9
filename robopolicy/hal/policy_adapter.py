"""From a chunking policy (``robopolicy.policy.Policy`` or anything with its ``predict_action``) to the
executor's ``infer(history) -> chunk`` function.

Observations reach the policy under the keys the recorder writes (``joint_position``, ``ee_position``,
``<camera>_image``, extras under their own names), so a policy trained on recorded runs needs no mapping; a
policy whose keys the backend does not provide is refused before the arm moves.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from robopolicy.hal.executor import InferFn
from robopolicy.specs import ConfigError


def check_keys(policy_keys: Iterable[str], available: Iterable[str], where: str) -> None:
    missing = sorted(set(policy_keys) - set(available))
    if missing:
        raise ConfigError(f"{where}: the policy needs observation keys {missing}, which the backend does not "
                          f"provide (it provides {sorted(available)})")


def policy_infer(policy, device: str | torch.device = "cpu") -> InferFn:
    """``infer`` for ``policy``: one batch of 1, the history as its observation window, chunk 0 back as numpy."""
    keys = [spec.key for spec in getattr(policy.config, "obs", [])]
    device = torch.device(device)

    def infer(history: dict[str, np.ndarray]) -> np.ndarray:
        check_keys(keys, history, "policy observation")
        obs = {k: torch.as_tensor(np.asarray(history[k])[None], device=device) for k in keys}
        with torch.no_grad():
            chunk = policy.predict_action(obs)
        return chunk[0].detach().cpu().numpy().astype(np.float64)

    return infer
