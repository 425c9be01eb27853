"""DPO-family losses pinned against numbers computed by hand with plain floats."""

import math

import pytest
import torch

from rlhaif.policy.dpo_losses import chosen_nll_loss, dpo_loss, ipo_loss, smooth_labels


def softplus(x):  # −log σ(−x) = log(1 + e^x), plain floats
    return math.log1p(math.exp(x))


# Two pairs, layout [chosen1, chosen2, rejected1, rejected2].
# h1 = (-5 + 6) - (-7 + 6) = 2.0 ; h2 = (-6 + 6) - (-6.5 + 6) = 0.5
LOGPROBS = torch.tensor([-5.0, -6.0, -7.0, -6.5])
REF = torch.tensor([-6.0, -6.0, -6.0, -6.0])


def test_dpo_hard_label_value_and_stats():
    loss, st = dpo_loss(LOGPROBS, REF, beta=0.1)
    expected = (softplus(-0.2) + softplus(-0.05)) / 2  # −log σ(βh)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert st["dpo/loss"].item() == pytest.approx(expected, rel=1e-6)
    assert st["rewards/chosen"].item() == pytest.approx((0.1 * 1.0 + 0.1 * 0.0) / 2)
    assert st["rewards/rejected"].item() == pytest.approx((0.1 * -1.0 + 0.1 * -0.5) / 2)
    assert st["rewards/margin"].item() == pytest.approx((0.2 + 0.05) / 2)
    assert st["rewards/accuracy"].item() == 1.0
    assert st["logps/chosen"].item() == pytest.approx(-5.5)
    assert st["logps/rejected"].item() == pytest.approx(-6.75)


def test_dpo_beta_changes_loss():
    loss, _ = dpo_loss(LOGPROBS, REF, beta=1.0)
    assert loss.item() == pytest.approx((softplus(-2.0) + softplus(-0.5)) / 2, rel=1e-6)


def test_dpo_soft_label_p07_is_conservative():
    p = torch.tensor([0.7, 1.0])
    loss, _ = dpo_loss(LOGPROBS, REF, beta=0.1, p=p)
    # −0.7·log σ(0.2) − 0.3·log σ(−0.2) ; second pair hard
    pair1 = 0.7 * softplus(-0.2) + 0.3 * softplus(0.2)
    pair2 = softplus(-0.05)
    assert loss.item() == pytest.approx((pair1 + pair2) / 2, rel=1e-6)


def test_dpo_tie_label_is_minimised_at_zero_margin():
    h = torch.tensor([0.0], requires_grad=True)
    lp = torch.cat([h, torch.zeros(1)])
    loss, _ = dpo_loss(lp, torch.zeros(2), beta=0.5, p=torch.tensor([0.5]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2.0))
    assert h.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_dpo_weights_scale_each_pair():
    w = torch.tensor([1.0, 0.5])
    loss, _ = dpo_loss(LOGPROBS, REF, beta=0.1, weights=w)
    assert loss.item() == pytest.approx((1.0 * softplus(-0.2) + 0.5 * softplus(-0.05)) / 2, rel=1e-6)


def test_dpo_gradient_on_chosen_logprob():
    lp = LOGPROBS.clone().requires_grad_(True)
    loss, _ = dpo_loss(lp, REF, beta=0.1)
    loss.backward()
    # d/d logπ(y_c1) of mean_i −log σ(β h_i) = −β·σ(−β h_1)/B = −0.1·(1/(1+e^{0.2}))/2
    assert lp.grad[0].item() == pytest.approx(-0.1 / (1 + math.exp(0.2)) / 2, rel=1e-5)
    assert lp.grad[2].item() == pytest.approx(+0.1 / (1 + math.exp(0.2)) / 2, rel=1e-5)


def test_ipo_hard_and_soft():
    # β = 0.5 → target 1/(2β) = 1 ; (2 − 1)² = 1 ; (0.5 − 1)² = 0.25
    loss, st = ipo_loss(LOGPROBS, REF, beta=0.5)
    assert loss.item() == pytest.approx((1.0 + 0.25) / 2)
    assert st["rewards/margin"].item() == pytest.approx((0.5 * 2.0 + 0.5 * 0.5) / 2)
    # p = 0.7 on pair 1: 0.7·(2 − 1)² + 0.3·(2 + 1)² = 0.7 + 2.7
    loss, _ = ipo_loss(LOGPROBS, REF, beta=0.5, p=torch.tensor([0.7, 1.0]), weights=torch.tensor([1.0, 2.0]))
    assert loss.item() == pytest.approx((3.4 + 2.0 * 0.25) / 2)


def test_accuracy_counts_ties_as_half_and_errors_as_zero():
    # pair 1 tie (margin 0), pair 2 wrong way (chosen lost log-prob relative to ref)
    lp = torch.tensor([-6.0, -7.0, -6.0, -6.0])
    _, st = dpo_loss(lp, REF, beta=0.1)
    assert st["rewards/accuracy"].item() == pytest.approx(0.25)


def test_label_smoothing():
    assert smooth_labels(torch.tensor([1.0]), 0.1).item() == pytest.approx(0.9)
    assert smooth_labels(torch.tensor([0.7]), 0.1).item() == pytest.approx(0.9 * 0.7 + 0.1 * 0.3)
    assert smooth_labels(torch.tensor([0.7]), 0.0).item() == pytest.approx(0.7)


def test_chosen_nll_is_per_token():
    loss, st = chosen_nll_loss(torch.tensor([-5.0, -6.0]), torch.tensor([2, 4]))
    assert loss.item() == pytest.approx(11.0 / 6.0)
    loss, _ = chosen_nll_loss(torch.tensor([-5.0, -6.0]), torch.tensor([2, 4]), torch.tensor([1.0, 0.5]))
    assert loss.item() == pytest.approx((5.0 + 3.0) / (2.0 + 2.0))
    assert st["dpo/nll"].item() == pytest.approx(11.0 / 6.0)


# ---- issue 14 §5

@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss])
def test_empty_batch_gives_zero_loss_and_no_nan(loss_fn):
    empty = torch.zeros(0, requires_grad=True)
    loss, stats = loss_fn(empty, torch.zeros(0), 0.1)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert all(math.isfinite(float(v)) for v in stats.values())


def test_ipo_rejects_beta_zero_and_dpo_config_validates_beta():
    from rlhaif.errors import ConfigError
    from rlhaif.policy.dpo import DPOConfig

    with pytest.raises(ValueError, match="beta"):
        ipo_loss(torch.zeros(2), torch.zeros(2), 0.0)
    with pytest.raises(ConfigError, match="beta"):
        DPOConfig.validate_dict({"pairs": "p.jsonl", "beta": 0.0})
