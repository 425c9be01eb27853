"""Truncated importance sampling (TIS) for rollouts sampled by another engine than the trainer.

When an inference engine (vLLM) samples the rollouts and the trainer recomputes the log-probabilities, the
two disagree a little (other kernels, other precision): the rollouts come from π_sampler, not from the
π_old the PPO ratio assumes. Yao et al. 2025 ("Your Efficient RL Framework Secretly Brings You Off-Policy RL
Training") correct the policy-gradient term per token with the truncated ratio

    w = min(π_old(a | s) / π_sampler(a | s), C)          (detached; C = 2 in the paper)

and multiply each token's policy loss by w. ``tis_weights`` computes w and the two mismatch metrics the
loop logs: ``rollout/logprob_diff`` (mean |log π_old − log π_sampler| over response tokens) and
``rollout/is_clip_share`` (share of response tokens whose ratio exceeds C).
"""

from __future__ import annotations

import torch

from rlhaif.policy.advantages import masked_mean


def tis_weights(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
                cap: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(w, stats): per-token truncated importance weights min(exp(trainer − sampler), cap), zero where
    ``mask`` is 0; all (B, R). Inputs are the log-probabilities of the sampled tokens; nothing gets a
    gradient."""
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0, got {cap}")
    with torch.no_grad():
        log_ratio = (trainer_logprobs - sampler_logprobs).float()
        ratio = torch.exp(log_ratio)
        m = mask.to(ratio.dtype)
        w = torch.clamp(ratio, max=cap) * m
        stats = {"rollout/logprob_diff": masked_mean(log_ratio.abs(), m),
                 "rollout/is_clip_share": masked_mean((ratio > cap).to(ratio.dtype), m),
                 "rollout/is_weight": masked_mean(w, m)}
    return w, stats
