"""Bradley–Terry reward-model loss with soft labels, margin, centering and per-pair weights.

Pure functions of tensors (only torch needed). Shapes: every argument is (B,), one entry per pair.

With r the reward model's raw scores, Δ = r_c − r_r and the model's preference probability P(chosen ≻ rejected) = σ(Δ − m):

    ℓ_i = −[ p_i·log σ(Δ_i − m_i) + (1 − p_i)·log σ(−(Δ_i − m_i)) ]          (soft labels; docs/architecture.md)
    L   = Σ w_i ℓ_i / Σ w_i  +  η · mean_i (r_c,i + r_r,i)²                   (weights; centering)

The margin m shifts the Bradley–Terry logit in both terms (it is one logit, Δ − m): with p = 1 this is
Llama 2's −log σ(r_c − r_r − m); with a soft p it asks σ(Δ − m) to equal p, i.e. Δ to equal m + logit(p).
Ties (p = 0.5) should carry m = 0. Centering (Eisenstein et al. 2023, TRL's ``center_rewards_coefficient``)
keeps rewards near zero; it is an unweighted mean over the batch.

An empty batch gives a zero loss (still part of the graph) and zero statistics (accuracy: NaN, no pair
decided), so a process left without pairs cannot turn the step NaN. Accuracy counts a zero margin as
half right (chance), the same rule as DPO's ``rewards/accuracy`` (``pair_correct``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_correct(margin: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
    """Per pair: 1 when the margin's sign agrees with the label (chosen preferred when p > 0.5, rejected when
    p < 0.5), 0.5 for a zero margin (chance, not failure), 0 otherwise. Ties (p = 0.5) are the caller's to drop."""
    if p is None:
        p = torch.ones_like(margin)
    agree = torch.where(p > 0.5, margin > 0, margin < 0).to(margin.dtype)
    return torch.where(margin == 0, torch.full_like(margin, 0.5), agree)


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a batch; 0 for an empty one (connected to the graph)."""
    return x.mean() if x.numel() else x.sum()


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor,
                       p: torch.Tensor | None = None, margin: torch.Tensor | None = None,
                       weights: torch.Tensor | None = None, center_coef: float = 0.0
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """The reward-model loss above and its statistics (``rm/*`` names of docs/metrics.md)."""
    chosen_scores, rejected_scores = chosen_scores.float(), rejected_scores.float()
    delta = chosen_scores - rejected_scores  # (B,)
    logits = delta - margin.float() if margin is not None else delta
    p = torch.ones_like(delta) if p is None else p.float()
    # logsigmoid is the stable log σ; −log σ(x) never overflows for large |x|.
    per_pair = -(p * F.logsigmoid(logits) + (1.0 - p) * F.logsigmoid(-logits))  # (B,)
    w = torch.ones_like(delta) if weights is None else weights.float()
    bt = (w * per_pair).sum() / w.sum().clamp_min(1e-12)
    center = batch_mean((chosen_scores + rejected_scores) ** 2)
    loss = bt + center_coef * center if center_coef else bt

    with torch.no_grad():
        decided = p != 0.5  # a tie has no right answer: it does not count toward accuracy
        correct = pair_correct(delta, p)[decided]
        n_decided = int(decided.sum())
        stats = {
            "rm/loss": float(loss),
            "rm/bt_loss": float(bt),
            "rm/center_loss": float(center),
            "rm/accuracy": float(correct.sum()) / n_decided if n_decided else float("nan"),
            "rm/margin": float(batch_mean(delta)),
            "rm/chosen_reward": float(batch_mean(chosen_scores)),
            "rm/rejected_reward": float(batch_mean(rejected_scores)),
        }
    return loss, stats
