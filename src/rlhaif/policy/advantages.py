"""Advantages for PPO: masked whitening and generalized advantage estimation (GAE).

Shapes: every tensor is response-aligned, (B, R): column t is the t-th response token; ``mask`` is 1 on
real response tokens and 0 on the right padding after a row's last token.

Pads are removed by selection (``torch.where``), never by multiplying with the mask: a NaN or inf on a pad
(NaN × 0 = NaN) must not reach a real token, a statistic or a gradient.
"""

from __future__ import annotations

import torch


def zero_pads(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is set, exactly 0 elsewhere (selection: a NaN on a pad is dropped, and so is its
    gradient)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return zero_pads(x, mask).sum() / mask.to(x.dtype).sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance over the masked entries (pads never shift the statistics)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) with mean and variance taken over ``mask`` only; pads come back as 0.

    ``shift_mean=False`` rescales without centring, x / sqrt(var + eps) (for rewards, whose sign carries
    meaning). Not TRL's ``whiten(shift_mean=False)``, which returns (x − mean)/σ + mean and so can flip signs."""
    values = zero_pads(values, mask)
    var = masked_var(values, mask)
    out = (values - masked_mean(values, mask) if shift_mean else values) * torch.rsqrt(var + eps)
    return zero_pads(out, mask)


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
    rewards, values = zero_pads(rewards, mask), zero_pads(values, mask)  # a NaN on a pad stops here
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
    returns = zero_pads(advantages + values, mask)
    return advantages, returns
