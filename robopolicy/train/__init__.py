"""Behavior-cloning training: `train(run_config)`, the built-in bimodal toy task, and the `train` CLI command."""

from robopolicy.train.toy import BimodalToyDataset, mode_coverage, toy_policy_config
from robopolicy.train.trainer import TrainResult, train

__all__ = ["BimodalToyDataset", "TrainResult", "mode_coverage", "toy_policy_config", "train"]
