"""The policy: SFT, PPO (rollout, advantages, losses, KL control) and DPO."""
