"""PPO losses as pure functions of tensors, each returning ``(loss, stats)``.

Shapes: response-aligned (B, R) tensors (``logprobs``, ``old_logprobs``, ``advantages``, ``values``,
``returns``, ``mask``); ``logp`` is (B, R, V). Means are over real response tokens only (``mask``); pads are dropped by selection
(``zero_pads``), so a NaN or inf on a pad reaches neither the loss nor the gradient.
"""

from __future__ import annotations

import torch

from rlhaif.policy.advantages import masked_mean, masked_var, zero_pads
from rlhaif.policy.kl import LOG_RATIO_CLAMP, kl_k3


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), to minimise:

        ratio = exp(log π_θ − log π_old);  L_clip = −E[min(ratio·Â, clip(ratio, 1−ε, 1+ε)·Â)]

    stats: ``clipfrac`` (share of tokens where the clipped term is the one used), ``approx_kl``
    (k3 estimate of KL(π_old‖π_θ): E[(ratio − 1) − log ratio], ``kl.kl_k3``), ``ratio`` (mean).
    The log-ratio is clamped to ±``LOG_RATIO_CLAMP`` before ``exp`` (no overflow)."""
    log_ratio = zero_pads(logprobs - old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    advantages = zero_pads(advantages, mask)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
                 "approx_kl": masked_mean(kl_k3(old_logprobs, logprobs), mask),
                 "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (PPO2 / TRL): the new value may not leave old_values ± ε_v for free.

        L_V = ½·E[max((V − ret)², (clip(V, V_old − ε_v, V_old + ε_v) − ret)²)]

    stats: ``vf_clipfrac`` (share of tokens where the clipped error is the larger)."""
    values, old_values, returns = (zero_pads(x, mask) for x in (values, old_values, returns))
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((err_clipped > err).float(), mask)}
    return loss, stats


def entropy_from_logprobs(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean per-token entropy H = −Σ_v p_v log p_v from ``logp`` (B, R, V), the log-softmax of the logits
    already divided by the sampling temperature. Returned as (entropy, stats); the PPO loss subtracts
    c₂·entropy (a bonus)."""
    ent = -(logp.exp() * logp).sum(-1)  # (B, R)
    entropy = masked_mean(ent, mask)
    return entropy, {"entropy": entropy.detach()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var[returns − values] / Var[returns] over masked tokens: 1 is a perfect critic, ≤ 0 a useless one.
    Constant returns (Var[returns] < 1e-8) leave it undefined: reported as 0, so a logged mean stays sane."""
    returns, values = zero_pads(returns, mask), zero_pads(values, mask)
    var_ret = masked_var(returns, mask)
    ev = 1 - masked_var(returns - values, mask) / var_ret.clamp(min=1e-8)
    return torch.where(var_ret < 1e-8, torch.zeros_like(ev), ev)
