"""PPO formulas pinned against numbers computed by hand (plain floats in the comments)."""

import math

import pytest
import torch

from rlhaif.policy.advantages import gae, whiten
from rlhaif.policy.kl import kl_k1, kl_k3, kl_penalized_rewards
from rlhaif.policy.kl_control import AdaptiveKLController, FixedKLController
from rlhaif.policy.losses import entropy_from_logprobs, explained_variance, policy_loss, value_loss


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, t(expected), atol=atol, rtol=0)


def test_gae_terminal_and_bootstrap():
    # γ=0.9, λ=0.8, γλ=0.72. Row 0: rewards (0, 0, 1), values (0.5, 0.2, 0.4), all real.
    #   δ2 = 1 − 0.4 = 0.6;  δ1 = 0.9·0.4 − 0.2 = 0.16;  δ0 = 0.9·0.2 − 0.5 = −0.32
    #   A2 = 0.6;  A1 = 0.16 + 0.72·0.6 = 0.592;  A0 = −0.32 + 0.72·0.592 = 0.10624
    # Row 1: rewards (0, 1, 9), values (0.5, 0.2, 7), mask (1, 1, 0): the pad column is ignored.
    #   δ1 = 1 − 0.2 = 0.8 → A1 = 0.8;  A0 = −0.32 + 0.72·0.8 = 0.256
    rewards, values = t([[0, 0, 1], [0, 1, 9]]), t([[0.5, 0.2, 0.4], [0.5, 0.2, 7]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[0.10624, 0.592, 0.6], [0.256, 0.8, 0.0]])
    close(ret, [[0.60624, 0.792, 1.0], [0.756, 1.0, 0.0]])
    # Truncated at the length cap: V(s_T) = 2.0 bootstraps the step after the last real token.
    #   row 0: δ2 = 1 + 0.9·2 − 0.4 = 2.4; A1 = 0.16 + 0.72·2.4 = 1.888; A0 = −0.32 + 0.72·1.888 = 1.03936
    #   row 1: δ1 = 1 + 0.9·2 − 0.2 = 2.6; A0 = −0.32 + 0.72·2.6 = 1.552
    adv_b, _ = gae(rewards, values, mask, gamma=0.9, lam=0.8, bootstrap_value=t([2.0, 2.0]))
    close(adv_b, [[1.03936, 1.888, 2.4], [1.552, 2.6, 0.0]])


def test_whiten_uses_masked_entries_only():
    # entries 1, 2, 3 (100 is a pad): mean 2, variance 2/3, std 0.8164966
    out = whiten(t([[1, 2], [3, 100]]), t([[1, 1], [1, 0]]))
    close(out, [[-1.2247449, 0.0], [1.2247449, 0.0]])


def test_policy_loss_both_signs_of_the_advantage():
    ratio = [1.5, 0.5, 1.5, 0.5, 3.0]
    adv = [2.0, 2.0, -1.0, -1.0, 5.0]  # the last token is masked out
    # per token max(−A·r, −A·clip(r, 0.8, 1.2)):
    #   (1.5, +2): max(−3.0, −2.4) = −2.4 clipped;  (0.5, +2): max(−1.0, −1.6) = −1.0
    #   (1.5, −1): max(1.5, 1.2) = 1.5;             (0.5, −1): max(0.5, 0.8) = 0.8 clipped
    # loss = (−2.4 − 1.0 + 1.5 + 0.8)/4 = −0.275; clipfrac = 2/4
    # approx_kl = mean((r − 1) − ln r) = (2·(0.5 − 0.4054651) + 2·(−0.5 + 0.6931472))/4 = 0.1438410
    old = t([[-1.0] * 5])
    new = old + torch.log(t([ratio]))
    loss, stats = policy_loss(new, old, t([adv]), t([[1, 1, 1, 1, 0]]), clip_range=0.2)
    assert loss.item() == pytest.approx(-0.275, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx(0.1438410, abs=1e-6)


def test_policy_loss_gradient_zero_where_clipped():
    old = torch.zeros(1, 2)
    new = torch.log(t([[1.5, 1.1]])).requires_grad_(True)
    loss, _ = policy_loss(new, old, t([[1.0, 1.0]]), t([[1, 1]]), clip_range=0.2)
    loss.backward()
    # token 0 is clipped (no gradient); token 1: d/dlogp of −r·A/2 = −1.1/2
    close(new.grad, [[0.0, -0.55]], 1e-6)


def test_value_loss_clipped():
    # V=(1, 0, 2), V_old=(0.5, 0.1, 2), returns=(2, −1, 1), ε_v=0.2
    #   t0: clip → 0.7; (1−2)²=1, (0.7−2)²=1.69 → 1.69 (clipped larger)
    #   t1: clip → 0.0; both 1 → 1;  t2: both 1 → 1
    # loss = ½·(1.69 + 1 + 1)/3 = 0.615; vf_clipfrac = 1/3
    loss, stats = value_loss(t([[1, 0, 2, 5]]), t([[0.5, 0.1, 2, 0]]), t([[2, -1, 1, 0]]), t([[1, 1, 1, 0]]), 0.2)
    assert loss.item() == pytest.approx(0.615, abs=1e-6)
    assert stats["vf_clipfrac"].item() == pytest.approx(1 / 3, abs=1e-6)


def test_kl_estimators():
    lp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])
    assert kl_k1(lp, ref).tolist() == pytest.approx([0.5, -1.0])
    # log r = ref − lp = (−0.5, 1.0): k3 = (e^−0.5 − 1) + 0.5 = 0.1065307, (e − 1) − 1 = 0.7182818
    assert kl_k3(lp, ref).tolist() == pytest.approx([0.1065307, 0.7182818], abs=1e-6)


def test_score_on_last_real_token_and_missing_eos_penalty():
    # Row 0 has 2 real tokens then pads; row 1 has 4 real tokens and never reached EOS.
    mask = t([[1, 1, 0, 0], [1, 1, 1, 1]])
    lp = t([[-1.0, -1.0, -9.0, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = t([[-1.5, -0.5, 0.0, 0.0], [-1.0, -2.0, -1.0, -1.0]])
    # k1 per token: row 0 (0.5, −0.5, pad, pad); row 1 (0, 1, 0, 0). β = 0.1
    rewards, stats = kl_penalized_rewards(t([1.0, 2.0]), lp, ref, mask, beta=0.1,
                                          eos_reached=torch.tensor([True, False]), missing_eos_penalty=0.5)
    close(rewards, [[-0.05, 0.05 + 1.0, 0.0, 0.0], [0.0, -0.1, 0.0, 1.5]], 1e-6)
    assert stats["kl"].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    assert stats["scores"].tolist() == pytest.approx([1.0, 1.5])


def test_adaptive_kl_controller_update_and_state():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(9.0, 10)  # e = clip(9/6 − 1 = 0.5) = 0.2 → β = 0.1·(1 + 0.2·10/100) = 0.102
    assert ctl.value == pytest.approx(0.102)
    ctl.update(5.4, 10)  # e = 5.4/6 − 1 = −0.1 → β = 0.102·(1 − 0.1·0.1) = 0.10098
    assert ctl.value == pytest.approx(0.10098)
    other = AdaptiveKLController(0.5, target=6.0, horizon=100)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_entropy_and_explained_variance():
    # uniform over 4 → ln 4 = 1.3862944; one-hot (logits 0, −inf...) → 0; the masked third row is ignored
    logits = t([[[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9], [5.0, 0.0, 0.0, 0.0]]])
    ent, _ = entropy_from_logprobs(torch.log_softmax(logits, -1), t([[1, 1, 0]]))
    assert ent.item() == pytest.approx(math.log(4) / 2, abs=1e-6)
    # returns (1, 2, 3), values (1, 2, 2): Var[ret − V] = Var(0, 0, 1) = 2/9; Var[ret] = 2/3 → 1 − 1/3
    ev = explained_variance(t([[1, 2, 2]]), t([[1, 2, 3]]), t([[1, 1, 1]]))
    assert ev.item() == pytest.approx(2 / 3, abs=1e-6)


# ---- issue 14 §5: defects, each pinned by a test that failed before its fix

def test_explained_variance_of_constant_returns_is_zero_not_huge():
    # Var[returns] = 0: undefined; reported as 0 (the critic explains nothing there), never −2.5e7.
    ev = explained_variance(t([[0.0, 1.0]]), t([[1.0, 1.0]]), t([[1.0, 1.0]]))
    assert ev.item() == 0.0


NAN, INF = float("nan"), float("inf")


def test_gae_ignores_nan_on_padded_positions():
    # one real token: δ0 = r0 − V0 = 1 − 0.5 = 0.5 (next value 0: the episode ended); the pad's NaN never reaches it
    adv, ret = gae(t([[1.0, 0.0]]), t([[0.5, NAN]]), t([[1.0, 0.0]]))
    close(adv, [[0.5, 0.0]])
    close(ret, [[1.0, 0.0]])
    adv, _ = gae(t([[1.0, NAN]]), t([[0.5, INF]]), t([[1.0, 0.0]]))
    close(adv, [[0.5, 0.0]])


def test_whiten_ignores_nan_on_padded_positions():
    out = whiten(t([[1, 2], [3, NAN]]), t([[1, 1], [1, 0]]))
    close(out, [[-1.2247449, 0.0], [1.2247449, 0.0]])


def test_whiten_without_shift_mean_only_rescales():
    # entries 1, 2, 3 (the pad is ignored): σ = sqrt(2/3) = 0.8164966 → x / σ = 1.2247449, 2.4494897, 3.6742346
    out = whiten(t([[1, 2], [3, 100]]), t([[1, 1], [1, 0]]), shift_mean=False)
    close(out, [[1.2247449, 2.4494897], [3.6742346, 0.0]])


def test_losses_and_kl_ignore_nan_on_padded_positions():
    mask = t([[1, 0]])
    new = t([[-1.0, NAN]]).requires_grad_()
    loss, stats = policy_loss(new, t([[-1.0, INF]]), t([[2.0, NAN]]), mask)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)  # ratio 1 on the real token: −A·1
    assert torch.isfinite(new.grad).all() and new.grad[0, 1].item() == 0.0
    assert all(torch.isfinite(v) for v in stats.values())
    values = t([[0.5, NAN]]).requires_grad_()
    v_loss, _ = value_loss(values, t([[0.5, NAN]]), t([[1.5, INF]]), mask)
    v_loss.backward()
    assert v_loss.item() == pytest.approx(0.5)  # ½·(0.5 − 1.5)²
    assert torch.isfinite(values.grad).all()
    ev = explained_variance(t([[1.0, 2.0, NAN]]), t([[1.0, 3.0, NAN]]), t([[1, 1, 0]]))
    assert ev.item() == pytest.approx(0.75)  # Var[ret−V] = Var(0, 1) = ¼; Var[ret] = Var(1, 3) = 1 → 1 − ¼
    rewards, kl_stats = kl_penalized_rewards(t([1.0]), t([[-1.0, NAN]]), t([[-1.5, -1.0]]), mask, beta=0.1)
    close(rewards, [[-0.05 + 1.0, 0.0]])  # k1 = 0.5 on the real token
    close(kl_stats["kl"], [0.5])


@pytest.mark.parametrize("advantage", [1.0, 0.0, -1.0])
def test_policy_loss_and_gradient_finite_for_a_huge_log_ratio(advantage):
    old = t([[-100.0]])
    new = t([[0.0]]).requires_grad_()  # log-ratio 100: exp overflows float32 without a clamp
    loss, stats = policy_loss(new, old, t([[advantage]]), t([[1.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(new.grad).all()
    assert all(torch.isfinite(v) for v in stats.values())


def test_kl_k3_finite_for_a_huge_log_ratio():
    # log r = 100 (> 88, where exp overflows float32): clamped to 20 → (e^20 − 1) − 20
    k3 = kl_k3(t([-100.0]), t([0.0]))
    assert torch.isfinite(k3).all()
    assert k3.item() == pytest.approx(math.expm1(20.0) - 20.0, rel=1e-5)
    # log r = −100 cannot overflow and is not clamped: (e^−100 − 1) + 100 = 99
    assert kl_k3(t([0.0]), t([-100.0])).item() == pytest.approx(99.0, rel=1e-6)
