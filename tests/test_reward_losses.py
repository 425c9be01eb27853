"""Bradley–Terry loss against numbers computed by hand with plain floats."""

import math

import pytest
import torch

from rlhaif.reward.evaluate import pair_metrics
from rlhaif.reward.losses import bradley_terry_loss


def softplus(x):  # -log σ(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_hard_label():
    loss, stats = bradley_terry_loss(t(1.0), t(0.0))
    assert loss.item() == pytest.approx(softplus(-1.0), rel=1e-6)  # -log σ(1) = 0.31326
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)
    assert stats["rm/accuracy"] == 1.0 and stats["rm/margin"] == pytest.approx(1.0)


def test_soft_label():
    loss, _ = bradley_terry_loss(t(1.0), t(0.0), p=t(0.8))
    assert loss.item() == pytest.approx(0.8 * softplus(-1.0) + 0.2 * softplus(1.0), rel=1e-6)


def test_tie_is_minimal_at_equal_rewards_and_not_counted_in_accuracy():
    loss0, stats = bradley_terry_loss(t(0.3), t(0.3), p=t(0.5))
    assert loss0.item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert math.isnan(stats["rm/accuracy"])
    loss2, _ = bradley_terry_loss(t(2.0), t(0.0), p=t(0.5))
    assert loss2.item() == pytest.approx(0.5 * softplus(-2.0) + 0.5 * softplus(2.0), rel=1e-6)
    assert loss2.item() > loss0.item()


def test_margin_shifts_the_logit():
    loss, _ = bradley_terry_loss(t(1.0), t(0.0), margin=t(0.5))
    assert loss.item() == pytest.approx(softplus(-0.5), rel=1e-6)  # Llama 2: -log σ(r_c - r_r - m)
    loss_soft, _ = bradley_terry_loss(t(1.0), t(0.0), p=t(0.8), margin=t(0.5))
    assert loss_soft.item() == pytest.approx(0.8 * softplus(-0.5) + 0.2 * softplus(0.5), rel=1e-6)


def test_centering():
    loss, stats = bradley_terry_loss(t(1.0, 2.0), t(0.0, -1.0), center_coef=0.01)
    bt = (softplus(-1.0) + softplus(-3.0)) / 2
    center = ((1.0 + 0.0) ** 2 + (2.0 - 1.0) ** 2) / 2
    assert stats["rm/center_loss"] == pytest.approx(center)
    assert loss.item() == pytest.approx(bt + 0.01 * center, rel=1e-6)


def test_weights_give_a_weighted_mean():
    loss, _ = bradley_terry_loss(t(1.0, 0.0), t(0.0, 2.0), weights=t(1.0, 3.0))
    assert loss.item() == pytest.approx((1 * softplus(-1.0) + 3 * softplus(2.0)) / 4, rel=1e-6)


def test_batch_accuracy_and_gradient_direction():
    rc = t(1.0, -1.0).requires_grad_()
    rr = t(0.0, 0.0)
    loss, stats = bradley_terry_loss(rc, rr)
    loss.backward()
    assert stats["rm/accuracy"] == 0.5
    assert (rc.grad < 0).all()  # raising the chosen reward lowers the loss
    # d/dr_c of mean(-log σ(r_c - r_r)) = -(1 - σ(Δ)) / B
    assert rc.grad[0].item() == pytest.approx(-(1 - 1 / (1 + math.exp(-1.0))) / 2, rel=1e-5)


def test_pair_metrics_calibration_by_hand():
    # margins 3 (right, conf σ(3)=0.953), -0.1 (wrong, conf 0.525), 0.5 (right, conf 0.622), tie skipped
    rep = pair_metrics([3.0, 0.0, 0.5, 1.0], [0.0, 0.1, 0.0, 0.0], [1.0, 1.0, 1.0, 0.5])
    assert rep["n_decided"] == 3 and rep["accuracy"] == pytest.approx(2 / 3)
    assert rep["mean_margin"] == pytest.approx((3.0 - 0.1 + 0.5 + 1.0) / 4)
    b = {x["confidence"]: x for x in rep["calibration"]}
    assert b["0.5-0.6"]["n"] == 1 and b["0.5-0.6"]["accuracy"] == 0.0
    assert b["0.6-0.7"]["n"] == 1 and b["0.6-0.7"]["accuracy"] == 1.0
    assert b["0.9-1.0"]["n"] == 1 and b["0.9-1.0"]["mean_confidence"] == pytest.approx(1 / (1 + math.exp(-3.0)))
    s = lambda x: 1 / (1 + math.exp(-x))
    ece = (abs(0.0 - s(0.1)) + abs(1.0 - s(0.5)) + abs(1.0 - s(3.0))) / 3
    assert rep["ece"] == pytest.approx(ece)


# ---- issue 14 §5

def test_empty_batch_with_centering_gives_zero_loss_and_no_nan():
    loss, stats = bradley_terry_loss(torch.zeros(0), torch.zeros(0), center_coef=0.01)
    assert loss.item() == 0.0
    assert all(math.isfinite(v) for k, v in stats.items() if k != "rm/accuracy")


def test_zero_margin_counts_half_in_training_stats_and_evaluation_as_in_dpo():
    # margins +1 (right) and 0 (chance: half), p = 1 → (1 + 0.5) / 2
    _, stats = bradley_terry_loss(t(1.0, 0.0), t(0.0, 0.0), p=t(1.0, 1.0))
    assert stats["rm/accuracy"] == pytest.approx(0.75)
    assert pair_metrics([1.0, 0.0], [0.0, 0.0], [1.0, 1.0])["accuracy"] == pytest.approx(0.75)
    # a zero margin on a pair whose rejected side won (p = 0) is half right too, not right
    _, stats = bradley_terry_loss(t(0.0), t(0.0), p=t(0.0))
    assert stats["rm/accuracy"] == pytest.approx(0.5)
    assert pair_metrics([0.0], [0.0], [0.0])["accuracy"] == pytest.approx(0.5)
