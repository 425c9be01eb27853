"""Advantages for PPO: masked whitening and generalized advantage estimation (GAE).

Shapes: every tensor is response-aligned, (B, R): column t is the t-th response token; ``mask`` is 1 on
real response tokens and 0 on the right padding after a row's last token.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance over the masked entries (pads never shift the statistics)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) with mean and variance taken over ``mask`` only; pads come back as 0.

    ``shift_mean=False`` rescales without centring (used for rewards, whose sign carries meaning)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        bootstrap_value: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16):

        δ_t = r_t + γ·V(s_{t+1}) − V(s_t),   Â_t = Σ_l (γλ)^l δ_{t+l},   returns = Â + V

    After a row's last real token the next value is 0 (the episode ended at EOS) unless ``bootstrap_value``
    (B,) gives V(s_T) for a response cut by the length cap (truncation, not termination).
    Returns (advantages, returns), both (B, R) and 0 on pads."""
    B, R = rewards.shape
    m = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(R)):
        m_next = m[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        next_value = values[:, t + 1] * m_next if t + 1 < R else torch.zeros_like(last)
        if bootstrap_value is not None:  # the step after the last real token: V(s_T) instead of 0
            next_value = next_value + bootstrap_value.to(rewards.dtype) * (1 - m_next) * m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * m_next * last) * m[:, t]
        advantages[:, t] = last
    returns = (advantages + values) * m
    return advantages, returns
