"""RLOO, GRPO and Dr. GRPO advantages, their loss aggregation and GRPO's k3 KL loss term, pinned by hand."""

import math

import pytest
import torch

from rlhaif.errors import ConfigError
from rlhaif.policy.advantages import masked_mean
from rlhaif.policy.group_advantages import group_advantages, group_prompt_indices, group_stats, loss_token_weights
from rlhaif.policy.kl import LOG_RATIO_CLAMP, kl_loss
from rlhaif.policy.losses import policy_loss
from rlhaif.policy.ppo import PPOConfig, check_batch_sizes, kl_in_reward, prompt_indices


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, t(expected), atol=atol, rtol=0)


# Two groups of K = 3: rewards (1, 2, 6) and (0.1, 0.1, 0.1), the second with no signal.
REWARDS = [1.0, 2.0, 6.0, 0.1, 0.1, 0.1]


def test_rloo_baseline_is_the_mean_of_the_other_k_minus_1():
    # 1 − (2 + 6)/2 = −3;  2 − (1 + 6)/2 = −1.5;  6 − (1 + 2)/2 = 4.5;  the flat group: exactly 0
    adv, stats = group_advantages(t(REWARDS), 3, "rloo")
    close(adv, [-3.0, -1.5, 4.5, 0.0, 0.0, 0.0])
    assert stats["zero_std_share"].item() == pytest.approx(0.5)
    # K = 2: each one's baseline is the other one
    close(group_advantages(t([3.0, 5.0]), 2, "rloo")[0], [-2.0, 2.0])


def test_grpo_normalises_by_the_group_std_and_dr_grpo_does_not():
    # mean 3, std (K − 1) = sqrt((4 + 1 + 9)/2) = sqrt(7) = 2.6457513
    adv, stats = group_advantages(t(REWARDS), 3, "grpo", eps=0.0)
    close(adv, [-2 / math.sqrt(7), -1 / math.sqrt(7), 3 / math.sqrt(7), 0.0, 0.0, 0.0])
    assert stats["group_std"].item() == pytest.approx(math.sqrt(7) / 2, abs=1e-6)  # mean of (sqrt 7, 0)
    close(group_advantages(t(REWARDS), 3, "grpo", eps=1.0)[0][:3], [-2 / 3.6457513, -1 / 3.6457513, 3 / 3.6457513])
    dr, _ = group_advantages(t(REWARDS), 3, "dr_grpo")
    close(dr, [-2.0, -1.0, 3.0, 0.0, 0.0, 0.0])


def test_a_group_of_equal_rewards_gets_exactly_zero_not_a_residue_over_eps():
    # 0.1 is not exact in binary: (0.1 + 0.1 + 0.1)/3 − 0.1 ≠ 0 in float, and divided by ε it would be large
    r = t([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.3, 0.9, 0.3])
    for est in ("rloo", "grpo", "dr_grpo"):
        adv, stats = group_advantages(r, 3, est)
        assert adv[:6].abs().max().item() == 0.0, est
        assert adv[6:].abs().min().item() > 0.1
        assert stats["zero_std_share"].item() == pytest.approx(2 / 3)
    assert group_stats(t([1.0, 1.0, 2.0, 4.0]), 2)["zero_std_share"].item() == 0.5
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(t([1.0, 2.0, 3.0]), 4, "rloo")


MASK = [[1, 1, 1, 1], [1, 1, 0, 0]]
LOSSES = [[1.0, 2.0, 3.0, 4.0], [5.0, 7.0, 99.0, 99.0]]  # 99 on pads never counts


def test_loss_token_weights_give_the_three_aggregations():
    mask, per_token = t(MASK), t(LOSSES)
    # token mean: (1+2+3+4+5+7)/6 = 22/6
    assert masked_mean(loss_token_weights(mask, "token_mean", 4) * per_token, mask).item() == pytest.approx(22 / 6)
    # GRPO, mean over responses of each one's token mean: (2.5 + 6)/2 = 4.25; weights N/(B·L_i) = 0.75, 1.5
    w = loss_token_weights(mask, "sequence_mean", 4)
    close(w, [[0.75, 0.75, 0.75, 0.75], [1.5, 1.5, 0.0, 0.0]])
    assert masked_mean(w * per_token, mask).item() == pytest.approx(4.25)
    # Dr. GRPO, token sums over B·max_new_tokens: (10 + 12)/(2·4) = 2.75; with a cap of 8: 22/16
    assert masked_mean(loss_token_weights(mask, "constant", 4) * per_token, mask).item() == pytest.approx(2.75)
    assert masked_mean(loss_token_weights(mask, "constant", 8) * per_token, mask).item() == pytest.approx(22 / 16)


def test_weighted_advantages_in_the_clipped_loss_weight_its_tokens():
    # ratio 1 everywhere: loss = −aggregate(Â). Â = 2 on the 4-token response, 1 on the 2-token one.
    mask = t(MASK)
    adv = t([[2.0] * 4, [1.0, 1.0, 0.0, 0.0]])
    old = torch.full((2, 4), -1.0)
    expected = {"token_mean": -(8 + 2) / 6, "sequence_mean": -(2 + 1) / 2, "constant": -(8 + 2) / 8}
    for aggregation, value in expected.items():
        loss, _ = policy_loss(old.clone(), old, adv * loss_token_weights(mask, aggregation, 4), mask, 0.2)
        assert loss.item() == pytest.approx(value), aggregation
    # the clip decisions do not depend on the (positive) weights
    new = old + torch.log(t([[1.5, 1.1, 0.5, 1.0], [1.5, 0.7, 1.0, 1.0]]))
    fracs = {a: policy_loss(new, old, adv * loss_token_weights(mask, a, 4), mask, 0.2)[1]["clipfrac"].item()
             for a in expected}
    assert fracs["token_mean"] == fracs["sequence_mean"] == fracs["constant"] == pytest.approx(2 / 6)


def test_k3_kl_loss_value_and_gradient():
    # token 0: π = 0.5, π_ref = 0.25 → r = π_ref/π = 0.5: k3 = 0.5 − ln 0.5 − 1 = 0.1931472, ∂/∂log π = 1 − r = 0.5
    # token 1: π = 0.2, π_ref = 0.4 → r = 2: k3 = 2 − ln 2 − 1 = 0.3068528, ∂/∂log π = 1 − 2 = −1
    # token 2 is a pad (never counts). Token mean: (0.1931472 + 0.3068528)/2 = 0.25; gradient (0.25, −0.5, 0)
    logprobs = torch.log(t([[0.5, 0.2, 0.9]])).requires_grad_(True)
    ref = torch.log(t([[0.25, 0.4, 0.001]]))
    mask = t([[1, 1, 0]])
    loss, stats = kl_loss(logprobs, ref, mask, loss_token_weights(mask, "token_mean", 3))
    assert loss.item() == pytest.approx(0.25, abs=1e-6)
    assert stats["kl_loss"].item() == pytest.approx(0.25, abs=1e-6)
    loss.backward()
    close(logprobs.grad, [[0.25, -0.5, 0.0]])
    # identical policies: k3 = 0 and its gradient 0 (the minimum)
    same = torch.log(t([[0.3, 0.6]])).requires_grad_(True)
    loss0, _ = kl_loss(same, same.detach().clone(), t([[1, 1]]), t([[1, 1]]))
    loss0.backward()
    assert loss0.item() == 0.0 and same.grad.abs().max().item() == 0.0
    # GRPO's per-response weighting of the same term: rows of 1 and 2 tokens, each row's mean k3 then averaged
    lp2 = torch.log(t([[0.5, 0.9], [0.5, 0.2]]))
    ref2 = torch.log(t([[0.25, 0.9], [0.25, 0.4]]))
    m2 = t([[1, 0], [1, 1]])
    loss2, _ = kl_loss(lp2, ref2, m2, loss_token_weights(m2, "sequence_mean", 2))
    assert loss2.item() == pytest.approx((0.1931472 + 0.25) / 2, abs=1e-6)


def test_k3_kl_loss_and_its_gradient_stay_finite_for_a_huge_log_ratio():
    # a token the policy gives e^-100 and the reference 1: log r = 100, and float32's exp overflows past 88.
    # The loss term uses kl.kl_k3, which clamps log r to LOG_RATIO_CLAMP: k3 = (e^20 − 1) − 20, no inf or NaN.
    logprobs = t([[-100.0, math.log(0.5)]]).requires_grad_(True)
    ref = t([[0.0, math.log(0.25)]])
    mask = t([[1, 1]])
    loss, stats = kl_loss(logprobs, ref, mask, loss_token_weights(mask, "sequence_mean", 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
    assert stats["kl_loss"].item() == pytest.approx((math.expm1(LOG_RATIO_CLAMP) - LOG_RATIO_CLAMP + 0.1931472) / 2,
                                                    rel=1e-5)
    assert logprobs.grad[0, 1].item() == pytest.approx(0.25, abs=1e-6)  # the other token's gradient is intact


def test_groups_stay_whole_and_disjoint_when_two_processes_split_the_batch():
    assert group_prompt_indices([5, 2], 3) == [5, 5, 5, 2, 2, 2]
    n, prompts_per_process, K = 10, 2, 3
    for step in (1, 2, 3, 7):
        one = prompt_indices(step, n, 2 * prompts_per_process, 0, 1, seed=4)  # one process drawing 4 prompts
        ranks = [group_prompt_indices(prompt_indices(step, n, prompts_per_process, r, 2, seed=4), K) for r in (0, 1)]
        for rows in ranks:
            assert len(rows) == prompts_per_process * K
            groups = [rows[g * K:(g + 1) * K] for g in range(prompts_per_process)]
            assert all(len(set(g)) == 1 for g in groups)  # each group of K rows is one prompt, whole
        p0, p1 = ([rows[g * K] for g in range(prompts_per_process)] for rows in ranks)
        # the two processes split one process's draw between them, each group whole on one side (a prompt may
        # come twice in a step where the draw crosses an epoch boundary, as step 3 does: then as two groups)
        assert p0 + p1 == one


def cfg(**kw):
    return PPOConfig(prompts="p.jsonl", reward_fn="r.py:score", batch_size=8, mini_batch_size=4, **kw)


def test_estimator_settings_are_checked_with_one_message():
    with pytest.raises(ConfigError, match=r"'rloo' compares .* set num_generations to 2 or more \(it is 1\)"):
        check_batch_sizes(cfg(advantage_estimator="rloo"))
    with pytest.raises(ConfigError, match=r"'grpo' compares"):
        check_batch_sizes(cfg(advantage_estimator="grpo", num_generations=1))
    with pytest.raises(ConfigError, match=r"batch_size \(8\) counts rollouts .* multiple of num_generations \(3\)"):
        check_batch_sizes(cfg(advantage_estimator="grpo", num_generations=3))
    with pytest.raises(ConfigError, match="value_model is the critic"):
        check_batch_sizes(cfg(advantage_estimator="rloo", num_generations=4, value_model="m"))
    with pytest.raises(ConfigError, match="kl_target adapts"):
        check_batch_sizes(cfg(advantage_estimator="grpo", num_generations=4, kl_target=6.0))
    check_batch_sizes(cfg(advantage_estimator="dr_grpo", num_generations=4))
    check_batch_sizes(cfg(num_generations=2))  # GAE with 2 samples per prompt is fine
    # where the KL goes by default, and an explicit choice wins
    assert kl_in_reward(cfg()) and kl_in_reward(cfg(advantage_estimator="rloo", num_generations=2))
    assert not kl_in_reward(cfg(advantage_estimator="grpo", num_generations=2))
    assert kl_in_reward(cfg(advantage_estimator="grpo", num_generations=2, kl_in_reward=True))
