"""Reinforcement learning: the Gaussian PPO baseline (``ppo``); RL fine-tuning builds on it."""
