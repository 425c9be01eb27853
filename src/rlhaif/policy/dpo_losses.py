"""DPO-family losses (and KTO): pure functions of sequence log-probabilities, each returning ``(loss, stats)``.

Inputs are per-pair sequence log-probabilities (sums over response tokens), laid out ``[chosen; rejected]``:
``logprobs`` and ``ref_logprobs`` are (2B,) — rows 0..B-1 the chosen responses, rows B..2B-1 the rejected.

    implicit reward  r(y) = β·(log π_θ(y|x) − log π_ref(y|x))
    h                = (log π_θ(y_c) − log π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r))   (so β·h = r_c − r_r)

Soft labels. ``p`` (B,) is the probability that ``chosen`` is preferred (``PairRecord.p``). Every loss here is
the expectation of its hard-label form over that label: L(p) = p·ℓ(h) + (1 − p)·ℓ(−h). For the sigmoid loss
this is conservative DPO (Mitchell 2023, cDPO); p = 1 gives plain DPO, p = 0.5 pulls the margin to zero.
``smooth_labels`` adds a uniform label-noise rate ε on top (TRL's ``label_smoothing``).

Pair weights ``weights`` (B,) scale each pair's loss (1/C(K,2) for pairs from one ranking); the batch loss is
mean(w·L), so it adds up exactly over micro-batches of equal size. An empty batch gives a zero loss (still
part of the graph) and zero statistics, not NaN: a process left without pairs cannot poison the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhaif.reward.losses import batch_mean, pair_correct


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    assert x.dim() == 1 and x.shape[0] % 2 == 0, "expected (2B,) laid out [chosen; rejected]"
    n = x.shape[0] // 2
    return x[:n], x[n:]


def _defaults(h: torch.Tensor, p, weights):
    p = torch.ones_like(h) if p is None else p.to(h)
    weights = torch.ones_like(h) if weights is None else weights.to(h)
    return p, weights


def _stats(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float, loss: torch.Tensor) -> dict:
    """The fixed metric names of docs/metrics.md (batch means, detached)."""
    lp_c, lp_r = _split(logprobs.detach())
    ref_c, ref_r = _split(ref_logprobs.detach())
    rewards_c, rewards_r = beta * (lp_c - ref_c), beta * (lp_r - ref_r)
    margin = rewards_c - rewards_r
    # A margin of exactly zero (the first step, when π_θ = π_ref) counts as half right: chance, not failure.
    acc = pair_correct(margin)
    return {"dpo/loss": loss.detach(), "rewards/chosen": batch_mean(rewards_c), "rewards/rejected": batch_mean(rewards_r),
            "rewards/margin": batch_mean(margin), "rewards/accuracy": batch_mean(acc),
            "logps/chosen": batch_mean(lp_c), "logps/rejected": batch_mean(lp_r)}


def log_ratio_margin(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """h = (log π_θ(y_c) − log π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r)), (B,)."""
    lp_c, lp_r = _split(logprobs)
    ref_c, ref_r = _split(ref_logprobs)
    return (lp_c - ref_c) - (lp_r - ref_r)


def smooth_labels(p: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Labels flipped with probability ε: p ← (1 − ε)·p + ε·(1 − p). ε = 0 leaves p unchanged."""
    return (1.0 - label_smoothing) * p + label_smoothing * (1.0 - p)


def dpo_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float = 0.1,
             p: torch.Tensor | None = None, weights: torch.Tensor | None = None):
    """Sigmoid DPO (Rafailov et al. 2023, eq. 7), conservative for soft labels (cDPO):

        L = −p·log σ(β·h) − (1 − p)·log σ(−β·h)        batch loss = mean(w·L)
    """
    h = log_ratio_margin(logprobs, ref_logprobs)
    p, weights = _defaults(h, p, weights)
    losses = -p * F.logsigmoid(beta * h) - (1.0 - p) * F.logsigmoid(-beta * h)
    loss = batch_mean(weights * losses)
    return loss, _stats(logprobs, ref_logprobs, beta, loss)


def ipo_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float = 0.1,
             p: torch.Tensor | None = None, weights: torch.Tensor | None = None):
    """IPO (Azar et al. 2023, eq. 17) with τ = β, on sequence log-probability sums as in the paper:

        L = p·(h − 1/(2β))² + (1 − p)·(h + 1/(2β))²     (minimised at h = (2p − 1)/(2β))
    """
    if beta <= 0:
        raise ValueError(f"IPO needs beta > 0 (its target margin is 1/(2·beta)), got beta={beta}")
    h = log_ratio_margin(logprobs, ref_logprobs)
    p, weights = _defaults(h, p, weights)
    target = 1.0 / (2.0 * beta)
    losses = p * (h - target) ** 2 + (1.0 - p) * (h + target) ** 2
    loss = batch_mean(weights * losses)
    return loss, _stats(logprobs, ref_logprobs, beta, loss)


def chosen_nll_loss(chosen_logprobs: torch.Tensor, chosen_lengths: torch.Tensor,
                    weights: torch.Tensor | None = None):
    """SFT term on the chosen responses (RPO, Pang et al. 2024): negative log-likelihood per token,

        L_nll = −Σ_i w_i·log π_θ(y_c,i) / Σ_i w_i·|y_c,i|

    ``chosen_logprobs`` (B,) are sequence sums, ``chosen_lengths`` (B,) their response token counts."""
    w = torch.ones_like(chosen_logprobs) if weights is None else weights.to(chosen_logprobs)
    loss = -(w * chosen_logprobs).sum() / (w * chosen_lengths.to(chosen_logprobs)).sum().clamp(min=1e-8)
    return loss, {"dpo/nll": loss.detach()}


def kto_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float = 0.1,
             p: torch.Tensor | None = None, weights: torch.Tensor | None = None,
             lambda_d: float = 1.0, lambda_u: float = 1.0):
    """KTO (Ethayarajh et al. 2024) on unpaired examples, laid out ``[matched; mismatched]`` (2B,): row i < B is
    example i's (x_i, y_i), row B + i the same prompt x_i with another example's response (its KL partner).
    ``p`` (B,) is the label, 1 = desirable, 0 = undesirable (a soft p mixes the two terms as for the others).

        h_i   = log π_θ(y_i|x_i) − log π_ref(y_i|x_i)
        z_ref = max(0, mean over the mismatched rows of log π_θ − log π_ref)     (no gradient)
        L_i   = p_i·λ_D·(1 − σ(β·(h_i − z_ref))) + (1 − p_i)·λ_U·(1 − σ(β·(z_ref − h_i)))
        batch loss = mean(w·L)

    Stats: ``kto/kl`` is z_ref; ``rewards/chosen`` / ``rewards/rejected`` the mean β·h of the desirable /
    undesirable examples (0 when the batch holds none); accuracy counts β·(h − z_ref) of the label's sign."""
    lp, lp_mis = _split(logprobs)
    ref, ref_mis = _split(ref_logprobs)
    h = lp - ref
    z_ref = (lp_mis - ref_mis).detach().mean().clamp(min=0.0)
    p, weights = _defaults(h, p, weights)
    losses = (p * lambda_d * (1.0 - torch.sigmoid(beta * (h - z_ref)))
              + (1.0 - p) * lambda_u * (1.0 - torch.sigmoid(beta * (z_ref - h))))
    loss = (weights * losses).mean()
    r = beta * h.detach()
    n_d, n_u = p.sum(), (1.0 - p).sum()
    rewards_d = (p * r).sum() / n_d.clamp(min=1e-8)
    rewards_u = ((1.0 - p) * r).sum() / n_u.clamp(min=1e-8)
    s = torch.sign(r - beta * z_ref)
    acc = p * (s > 0).float() + (1.0 - p) * (s < 0).float() + 0.5 * (s == 0).float()
    lpd = lp.detach()
    return loss, {"dpo/loss": loss.detach(), "kto/kl": z_ref, "rewards/chosen": rewards_d,
                  "rewards/rejected": rewards_u, "rewards/margin": rewards_d - rewards_u,
                  "rewards/accuracy": acc.mean(), "logps/chosen": (p * lpd).sum() / n_d.clamp(min=1e-8),
                  "logps/rejected": ((1.0 - p) * lpd).sum() / n_u.clamp(min=1e-8)}


LOSSES = {"sigmoid": dpo_loss, "ipo": ipo_loss, "kto": kto_loss}
