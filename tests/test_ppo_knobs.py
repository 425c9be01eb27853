"""The online-RL knobs of 2025–2026 as pure functions, against hand-computed values: clip-higher (DAPO),
GSPO's sequence-level ratio and its clip, the loss aggregations with a response masked out, DAPO's overlong
penalty and its dynamic-sampling filter."""

import math

import pytest
import torch

from rlhaif.policy.advantages import masked_mean
from rlhaif.policy.group_advantages import informative_rows, loss_token_weights
from rlhaif.policy.kl import overlong_penalty
from rlhaif.policy.losses import policy_loss


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def close(a, b, tol=1e-6):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float32), t(b), atol=tol), (a, b)


RATIOS = [1.25, 1.35, 0.75, 0.7]
OLD = torch.full((1, 4), -1.0)


def new_logprobs(ratios):
    return (OLD + torch.log(t([ratios]))).requires_grad_(True)


def test_clip_higher_raises_only_the_upper_bound_for_positive_advantages():
    # ε_low 0.2, ε_high 0.28, Â = +1: per token max(−r, −clip(r, 0.8, 1.28))
    #   1.25 → −1.25 (inside: the symmetric clip would cut it at −1.2);  1.35 → −1.28 clipped
    #   0.75 → max(−0.75, −0.8) = −0.75;  0.70 → −0.70   (Â > 0 below 1 − ε: the unclipped term is used)
    # loss = (−1.25 − 1.28 − 0.75 − 0.7)/4 = −0.995, clipfrac 1/4
    new = new_logprobs(RATIOS)
    loss, stats = policy_loss(new, OLD, torch.ones(1, 4), torch.ones(1, 4), clip_range=0.2, clip_range_high=0.28)
    assert loss.item() == pytest.approx(-0.995, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.25)
    loss.backward()
    # d/dlog π of −r/4 where unclipped: −r/4; 0 where clipped
    close(new.grad, [[-1.25 / 4, 0.0, -0.75 / 4, -0.7 / 4]])
    # the symmetric clip (ε_high = ε_low): 1.25 and 1.35 both cut at 1.2 → (−1.2 − 1.2 − 0.75 − 0.7)/4
    sym, sym_stats = policy_loss(new.detach(), OLD, torch.ones(1, 4), torch.ones(1, 4), clip_range=0.2)
    assert sym.item() == pytest.approx(-0.9625, abs=1e-6) and sym_stats["clipfrac"].item() == 0.5


def test_clip_higher_keeps_the_lower_bound_for_negative_advantages():
    # Â = −1: per token max(r, clip(r, 0.8, 1.28))
    #   1.25 → 1.25;  1.35 → max(1.35, 1.28) = 1.35 (Â < 0 above 1 + ε: unclipped)
    #   0.75 → 0.8 clipped;  0.70 → 0.8 clipped.  loss = (1.25 + 1.35 + 0.8 + 0.8)/4 = 1.05, clipfrac 2/4
    new = new_logprobs(RATIOS)
    loss, stats = policy_loss(new, OLD, -torch.ones(1, 4), torch.ones(1, 4), clip_range=0.2, clip_range_high=0.28)
    assert loss.item() == pytest.approx(1.05, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    close(new.grad, [[1.25 / 4, 1.35 / 4, 0.0, 0.0]])
    # the lower bound moves with ε_low alone: ε_low 0.3 lets 0.75 through, clips 0.7 at 0.7 (no change)
    low, _ = policy_loss(new.detach(), OLD, -torch.ones(1, 4), torch.ones(1, 4), clip_range=0.3,
                         clip_range_high=0.28)
    assert low.item() == pytest.approx((1.25 + 1.35 + 0.75 + 0.7) / 4, abs=1e-6)


def test_clip_range_high_none_is_the_symmetric_clip_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    new, old = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    adv, mask = torch.randn(3, 5, generator=g), (torch.rand(3, 5, generator=g) > 0.3).float()
    a, sa = policy_loss(new, old, adv, mask, 0.2)
    b, sb = policy_loss(new, old, adv, mask, 0.2, clip_range_high=0.2)
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)


# GSPO: row 0 has log-ratios 0.2, 0.4 (the 5.0 is a pad), row 1 has −0.1, −0.2, −0.3
GSPO_NEW = t([[0.2, 0.4, 5.0], [-0.1, -0.2, -0.3]])
GSPO_MASK = t([[1, 1, 0], [1, 1, 1]])
GSPO_ADV = t([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
S0, S1 = math.exp(0.3), math.exp(-0.2)  # geometric means of the token ratios: 1.3498588, 0.8187308


def test_gspo_sequence_ratio_is_the_length_normalised_geometric_mean_clipped_per_response():
    new = GSPO_NEW.clone().requires_grad_(True)
    loss, stats = policy_loss(new, torch.zeros(2, 3), GSPO_ADV, GSPO_MASK, 0.2, importance_sampling_level="sequence")
    # row 0 (Â = +1): max(−1.3498588, −1.2) = −1.2 on both tokens (clipped as a whole);
    # row 1 (Â = −1): max(0.8187308, 0.8) = 0.8187308 on its 3 tokens.  Token mean over 5 tokens:
    assert loss.item() == pytest.approx((2 * -1.2 + 3 * S1) / 5, abs=1e-6)  # 0.0112385
    assert stats["clipfrac"].item() == pytest.approx(2 / 5)
    assert stats["ratio"].item() == pytest.approx((2 * S0 + 3 * S1) / 5, abs=1e-6)
    loss.backward()
    # row 0 clipped: no gradient; row 1: ∂(3·s₁/5)/∂log π_t = (3/5)·s₁/3 = s₁/5 on each of its tokens
    close(new.grad, [[0.0, 0.0, 0.0], [S1 / 5] * 3])
    # ε_high 0.4 lets row 0's 1.3498588 through: −1.3498588 on its tokens
    high, high_stats = policy_loss(GSPO_NEW, torch.zeros(2, 3), GSPO_ADV, GSPO_MASK, 0.2, clip_range_high=0.4,
                                   importance_sampling_level="sequence")
    assert high.item() == pytest.approx((2 * -S0 + 3 * S1) / 5, abs=1e-6) and high_stats["clipfrac"].item() == 0
    # the token-level ratios of the same batch clip differently: row 0's e^0.2 = 1.2214 and e^0.4 both cut
    token, token_stats = policy_loss(GSPO_NEW, torch.zeros(2, 3), GSPO_ADV, GSPO_MASK, 0.2)
    assert token_stats["clipfrac"].item() == pytest.approx(3 / 5)  # row 0 both, row 1's e^−0.3 = 0.7408
    assert token.item() == pytest.approx((-1.2 - 1.2 + math.exp(-0.1) + math.exp(-0.2) + 0.8) / 5, abs=1e-6)


def test_gspo_with_the_per_response_mean_is_the_papers_objective():
    # GSPO's J = (1/G)·Σ_i min(s_i·Â_i, clip(s_i)·Â_i): as a loss (−1.2 + 0.8187308)/2 = −0.1906346
    w = loss_token_weights(GSPO_MASK, "sequence_mean", 3)
    loss, _ = policy_loss(GSPO_NEW, torch.zeros(2, 3), GSPO_ADV * w, GSPO_MASK, 0.2,
                          importance_sampling_level="sequence")
    assert loss.item() == pytest.approx((-1.2 + S1) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        policy_loss(GSPO_NEW, torch.zeros(2, 3), GSPO_ADV, GSPO_MASK, importance_sampling_level="tokens")


def test_gspo_with_truncated_importance_weights_scales_each_tokens_term():
    # vLLM rollouts: w = min(π_old/π_vLLM, C) per token multiplies the token's term (as it scales Â, w ≥ 0).
    # Row 0 (clipped, −1.2 a token) with w = 2 and 0.5: −2.4 − 0.6 = −3.0; row 1 with w = 1: 3·s₁
    w = t([[2.0, 0.5, 7.0], [1.0, 1.0, 1.0]])  # 7.0 on a pad never counts
    new = GSPO_NEW.clone().requires_grad_(True)
    loss, stats = policy_loss(new, torch.zeros(2, 3), GSPO_ADV * w, GSPO_MASK, 0.2, importance_sampling_level="sequence")
    assert loss.item() == pytest.approx((-3.0 + 3 * S1) / 5, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(2 / 5)  # the weights change no clip decision
    loss.backward()
    close(new.grad, [[0.0, 0.0, 0.0], [S1 / 5] * 3])


def test_a_response_masked_out_of_the_loss_counts_as_absent_in_every_aggregation():
    # rows 0 and 2 are the two rows of test_group_advantages' MASK; row 1 is masked out (a truncated response)
    mask = t([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]])
    per_token = t([[1.0, 2.0, 3.0, 4.0], [50.0] * 4, [5.0, 7.0, 99.0, 99.0]])
    agg = {a: masked_mean(loss_token_weights(mask, a, 4) * per_token, mask).item()
           for a in ("token_mean", "sequence_mean", "constant")}
    # token mean 22/6; per-response mean (2.5 + 6)/2 over the 2 kept rows; constant (10 + 12)/(2·4)
    assert agg == pytest.approx({"token_mean": 22 / 6, "sequence_mean": 4.25, "constant": 2.75})
    with pytest.raises(ValueError, match="token_mean, sequence_mean, constant"):
        loss_token_weights(mask, "dapo", 4)


def test_overlong_penalty_rises_linearly_over_the_last_buffer_tokens():
    # cap 10, buffer 4: 0 up to 6 tokens, then (L − 6)/4 → 7: 0.25, 8: 0.5, 10: 1
    close(overlong_penalty(torch.tensor([3, 6, 7, 8, 10]), 10, 4, 1.0), [0.0, 0.0, 0.25, 0.5, 1.0])
    close(overlong_penalty(torch.tensor([3, 6, 7, 8, 10]), 10, 4, 0.5), [0.0, 0.0, 0.125, 0.25, 0.5])
    # a buffer of the whole cap: L/10
    close(overlong_penalty(torch.tensor([1, 5, 10]), 10, 10, 2.0), [0.2, 1.0, 2.0])
    for bad in (0, 11):
        with pytest.raises(ValueError, match="overlong buffer"):
            overlong_penalty(torch.tensor([1]), 10, bad, 1.0)


def test_dynamic_sampling_keeps_informative_groups_in_order_and_counts_the_flat_ones():
    values = t([1, 1, 0, 1, 2, 2, 3, 4, 5, 6])  # groups of 2: flat, kept, flat, kept, kept
    assert informative_rows(values, 2, 1) == ([2, 3], [0, 1])  # stops once one group is kept
    assert informative_rows(values, 2, 3) == ([2, 3, 6, 7, 8, 9], [0, 1, 4, 5])
    assert informative_rows(values, 2, 5) == ([2, 3, 6, 7, 8, 9], [0, 1, 4, 5])  # short: the caller samples more
    assert informative_rows(t([0.1, 0.1, 0.1, 0.3, 0.1, 0.1]), 3, 2) == ([3, 4, 5], [0, 1, 2])


def knob_cfg(**kw):
    from rlhaif.policy.ppo import PPOConfig

    base = dict(model="m", prompts="p", reward_fn="r.py:f", batch_size=16, mini_batch_size=4, num_generations=4,
                advantage_estimator="grpo")
    return PPOConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, message", [
    (dict(dynamic_sampling=True, num_generations=1, advantage_estimator="gae"), "num_generations 1 there are no groups"),
    (dict(dynamic_sampling=True, advantage_estimator="gae"), "critic that still gives"),
    (dict(dynamic_sampling=True, dynamic_sampling_max_rounds=-1), "dynamic_sampling_max_rounds must be"),
    (dict(overlong_buffer=0), r"overlong_buffer \(0\).*1\.\.64"),
    (dict(overlong_buffer=65), r"overlong_buffer \(65\)"),
    (dict(overlong_buffer=8, overlong_penalty=-1.0), "overlong_penalty"),
    (dict(clip_range_high=-0.1), "clip_range_high"),
    (dict(kl_free=True, kl_loss_coef=0.1), "kl_free means β = 0, but kl_loss_coef is set to 0.1"),
    (dict(kl_free=True, advantage_estimator="rloo", kl_coef=0.02), "but kl_coef is set to 0.02"),
    (dict(kl_free=True, advantage_estimator="rloo", kl_target=6.0), "kl_free runs without a reference"),
])
def test_impossible_knob_combinations_are_refused_by_name(kw, message):
    from rlhaif.errors import ConfigError
    from rlhaif.policy.ppo import check_batch_sizes

    with pytest.raises(ConfigError, match=message):
        check_batch_sizes(knob_cfg(**kw))


def test_knob_defaults_keep_todays_loop_and_the_possible_combinations_pass():
    from rlhaif.policy.ppo import check_batch_sizes

    cfg = knob_cfg()
    assert (cfg.clip_range_high, cfg.loss_aggregation, cfg.importance_sampling_level, cfg.dynamic_sampling,
            cfg.overlong_buffer, cfg.mask_truncated_completions, cfg.kl_free) == (None, None, "token", False, None,
                                                                                 False, False)
    for kw in (dict(dynamic_sampling=True), dict(kl_free=True), dict(kl_free=True, kl_loss_coef=0.0),
               dict(kl_free=True, kl_loss_coef=0.04),  # the default, as a saved config round-trips it
               dict(kl_free=True, advantage_estimator="rloo"), dict(overlong_buffer=64),
               dict(importance_sampling_level="sequence", advantage_estimator="gae", num_generations=1),
               dict(clip_range_high=0.28, loss_aggregation="token_mean", mask_truncated_completions=True)):
        check_batch_sizes(knob_cfg(**kw))


def sampled(idx, scores, lengths, eos=None):
    """A Sampled of responses of the given lengths (token ids 1, 2, …) to one-token prompts idx."""
    from rlhaif.policy.ppo import Sampled
    from rlhaif.policy.rollout import rollout_from_ids

    ro = rollout_from_ids([[100 + i] for i in idx], [list(range(1, n + 1)) for n in lengths], 0, eos)
    return Sampled(list(idx), [f"p{i}" for i in idx], ro, None, [f"r{i}" for i in idx], t(scores),
                   {"monitor/gold": -t(scores)}, torch.zeros(len(idx)), t(scores))


def test_dynamic_sampling_refills_from_later_rounds_and_fills_when_the_rounds_run_out():
    from rlhaif.policy.ppo import dynamic_sampling

    # K 2, 3 groups: prompt 0 flat, 1 and 2 informative → one more group needed
    first = sampled([0, 0, 1, 1, 2, 2], [1, 1, 0, 1, 0, 2], [1, 2, 3, 1, 1, 1])
    more = {1: sampled([3, 3, 4, 4, 5, 5], [5, 5, 1, 3, 2, 4], [4, 4, 2, 2, 1, 1])}
    batch, stats = dynamic_sampling(first, more.__getitem__, 2, 3, 0)
    assert batch.idx == [1, 1, 2, 2, 4, 4]  # round 1's flat group 3 is discarded, group 4 kept, group 5 unused
    assert batch.scores.tolist() == [0, 1, 0, 2, 1, 3] and batch.prompts == ["p1", "p1", "p2", "p2", "p4", "p4"]
    assert batch.score_metrics["monitor/gold"].tolist() == [0, -1, 0, -2, -1, -3] and batch.responses[5] == "r4"
    assert batch.rollout.response_mask.sum(-1).tolist() == [3, 1, 1, 1, 2, 2]
    assert batch.rollout.response_ids[0].tolist() == [1, 2, 3] and batch.rollout.query_ids[4].tolist() == [104]
    assert stats == pytest.approx({"dynamic_sampling/informative_share": 2 / 3, "dynamic_sampling/discarded_groups": 2.0,
                     "dynamic_sampling/resampled_groups": 3.0, "dynamic_sampling/rounds": 1.0,
                     "dynamic_sampling/filled_groups": 0.0})
    # all flat and no extra round allowed: the batch is the first round's, counted as filled
    flat = sampled([0, 0, 1, 1], [1, 1, 2, 2], [1, 1, 1, 1])
    batch, stats = dynamic_sampling(flat, more.__getitem__, 2, 0, 0)
    assert batch.idx == [0, 0, 1, 1] and stats["dynamic_sampling/filled_groups"] == 2.0
    assert stats["dynamic_sampling/discarded_groups"] == 0.0 and stats["dynamic_sampling/rounds"] == 0.0
    # nothing flat: the first round as it is, no extra round
    batch, stats = dynamic_sampling(sampled([1, 1, 2, 2], [0, 1, 0, 2], [3, 1, 1, 1]),
                                    lambda r: pytest.fail("no extra round needed"), 2, 3, 0)
    assert batch.idx == [1, 1, 2, 2] and stats["dynamic_sampling/rounds"] == 0.0


def test_the_knobs_study_recipe_checks_and_turns_on_one_knob_per_arm():
    from pathlib import Path

    import yaml

    from rlhaif.pipeline import check_recipe, load_recipe

    from rlhaif.pipeline import packaged_recipes

    path = packaged_recipes()["study-knobs"]
    assert len(check_recipe(load_recipe(path))) == 15  # every stage importable, every key a config field
    arms = {s["name"]: s for s in yaml.safe_load(path.read_text())["stages"] if s["stage"] == "ppo"}
    base = arms.pop("baseline")
    knobs = {name: {k: v for k, v in s.items() if k != "name" and base.get(k) != v} for name, s in arms.items()}
    assert knobs == {"clip_higher": {"clip_range_high": 0.28}, "sequence_mean": {"loss_aggregation": "sequence_mean"},
                     "dynamic": {"dynamic_sampling": True, "dynamic_sampling_max_rounds": 3},
                     "overlong": {"overlong_buffer": 10, "overlong_penalty": 1.0},
                     "mask_truncated": {"mask_truncated_completions": True},
                     "gspo": {"importance_sampling_level": "sequence", "clip_range": 3e-4, "clip_range_high": 4e-4},
                     "kl_free": {"kl_free": True}}
    assert "kl_coef" not in arms["kl_free"]  # kl_free refuses a KL coefficient beside it
