"""The KL to a reference: per-token estimators of KL(π_θ‖π_ref), the sequence KL, the reward they fold into
and GRPO's loss term. Every KL of the package (penalty, loss term, PPO's approx_kl, evaluation) is computed here.
The sequence score the KL-penalized reward starts from is shaped here too: the missing-EOS penalty and DAPO's
overlong penalty.

Estimators (Schulman, "Approximating KL divergence", 2020), with ``log r = ref_logprobs − logprobs`` on
tokens sampled from π_θ:  k1 = −log r (unbiased, can be negative per token);  k3 = (r − 1) − log r
(unbiased, always ≥ 0, lower variance). Both need ``logprobs`` from the distribution that sampled the
tokens, which is why rollouts use the plain softmax at temperature T (TRL issue 1857).
"""

from __future__ import annotations

import torch

from rlhaif.policy.advantages import zero_pads

LOG_RATIO_CLAMP = 20.0
"""A log-ratio is clamped to at most this before ``exp`` (e^20 ≈ 4.9e8; float32's exp overflows past 88): a
token that far off policy carries no useful gradient, and an inf ratio would make a loss NaN."""


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 with log r clamped to at most ``LOG_RATIO_CLAMP`` before ``exp`` (float32 overflows past 88); a very
    negative log r needs no guard (k3 ≈ −log r − 1 there) and is left exact."""
    log_r = (ref_logprobs - logprobs).clamp(max=LOG_RATIO_CLAMP)
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last real response token (right padding)."""
    assert bool((mask.sum(-1) > 0).all()), "every response has at least one token"
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).max(-1).values


def token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
             ) -> torch.Tensor:
    """(B, R) per-token KL estimate of each response token (``estimator`` k1 or k3), 0 on pads (a pad's NaN
    is dropped); its sum over tokens is the sequence KL the penalty and ``objective/kl`` use."""
    return zero_pads(KL_ESTIMATORS[estimator](logprobs, ref_logprobs), mask)


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
                ) -> torch.Tensor:
    """(B,) per-sequence KL estimate: ``token_kl`` summed over each response's tokens (pads dropped by
    selection). Any shape (..., R) works; the sum is over the last dimension."""
    return token_kl(logprobs, ref_logprobs, mask, estimator).sum(-1)


@torch.no_grad()
def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float, eos_reached: torch.Tensor | None = None,
                         missing_eos_penalty: float | None = None, estimator: str = "k1"
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token rewards  r_t = −β·kl_t + [t = last real token]·(score − penalty if no EOS).

    ``scores`` (B,) are the sequence scores; ``eos_reached`` (B,) says whether the *response* ended with EOS
    (the prompt's own EOS tokens never count, TRL issue 6805). The score goes on the last real response
    token, never on a pad (TRL issue 3750). Returns (rewards (B, R), stats) with stats ``kl`` (B,) the
    per-sequence KL sum and ``scores`` (B,) after the penalty."""
    kl = token_kl(logprobs, ref_logprobs, mask, estimator)  # (B, R)
    scores = missing_eos_scores(scores.to(logprobs.dtype).clone(), eos_reached, missing_eos_penalty)
    rewards = -beta * kl
    last = last_token_index(mask)
    rewards[torch.arange(len(scores), device=rewards.device), last] += scores
    return rewards, {"kl": kl.sum(-1), "scores": scores}


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's KL term (Shao et al. 2024, eq. 4), to add as kl_loss_coef·loss: the k3 estimator per token

        k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1,   ∂k3_t/∂log π_θ = 1 − π_ref/π_θ

    (``kl_k3``, log-ratio clamped), aggregated as Σ c·k3·mask / Σ mask with ``weights`` c from
    ``group_advantages.loss_token_weights`` (the same aggregation as the policy loss). stats: ``kl_loss`` (the
    plain token mean of k3)."""
    k3 = token_kl(logprobs, ref_logprobs, mask, "k3")
    n = mask.sum().clamp(min=1)
    loss = (weights * k3).sum() / n
    return loss, {"kl_loss": k3.detach().sum() / n}


def missing_eos_scores(scores: torch.Tensor, eos_reached: torch.Tensor | None, penalty: float | None
                       ) -> torch.Tensor:
    """``scores`` (B,) minus ``penalty`` where the response did not end with EOS (None: unchanged)."""
    if penalty is None or eos_reached is None:
        return scores
    return scores - penalty * (~eos_reached.bool()).to(scores.dtype)


@torch.no_grad()
def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, penalty: float) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), to subtract from each sequence score:

        clip((L_i − (L_max − L_c)) / L_c, 0, 1)·penalty

    with L_i = ``lengths`` (B,) in tokens, L_max = ``max_new_tokens`` (the cap) and L_c = ``buffer``: 0 up to
    L_max − L_c tokens, then rising linearly to the full ``penalty`` at the cap, so the policy learns to stop
    before the cap instead of being cut there (a cut response's score says nothing about its length)."""
    if not 0 < buffer <= max_new_tokens:
        raise ValueError(f"overlong buffer must be in 1..max_new_tokens ({max_new_tokens}), got {buffer}")
    excess = (lengths.to(torch.float32) - (max_new_tokens - buffer)) / buffer
    return excess.clamp(0.0, 1.0) * penalty
