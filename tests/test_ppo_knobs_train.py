"""The 2025–2026 knobs in the PPO loop on a tiny model: dynamic sampling refills the batch with informative
groups, KL-free loads no reference and runs no reference forward (and equals β = 0), and the loss knobs run
together with their metrics logged."""

import pytest
from test_ppo_train import rows, setup, tiny_cfg  # noqa: F401  (setup is a fixture)

from rlhaif.policy.ppo import run_ppo

# Half the prompts (first word among the first 30 words) score 0.5 whatever the answer: their groups are flat.
HALF_FLAT = '''
from rlhaif.models.tiny import WORDS
TARGET = {"cat", "dog", "sun", "moon", "tree", "book", "car", "house", "food", "music"}
def score(prompts, responses):
    return [0.5 if p.split()[0] in WORDS[:30] else sum(w in TARGET for w in r.split()) / max(1, len(r.split()))
            for p, r in zip(prompts, responses)]
def flat(prompts, responses):
    return [1.0] * len(responses)
'''


def group_cfg(root, out, **kw):
    base = dict(advantage_estimator="grpo", num_generations=4, batch_size=16, mini_batch_size=8, ppo_epochs=1,
                reward_fn=f"{root / 'half_flat.py'}:score")
    return tiny_cfg(root, out, **{**base, **kw})


def test_dynamic_sampling_refills_the_batch_with_informative_groups(setup):
    (setup / "half_flat.py").write_text(HALF_FLAT)
    r = rows(run_ppo(group_cfg(setup, "dyn", steps=4, dynamic_sampling=True, dynamic_sampling_max_rounds=3))
             .output_dir)
    assert len(r) == 4
    for x in r:
        print({k: v for k, v in x.items() if k.startswith("dynamic") or k == "objective/zero_std_share"})
        # the batch's flat groups are exactly the ones put back when the rounds ran out
        assert x["objective/zero_std_share"] * 4 == pytest.approx(x["dynamic_sampling/filled_groups"])
        assert x["dynamic_sampling/resampled_groups"] == 4 * x["dynamic_sampling/rounds"]
        assert 0 <= x["dynamic_sampling/informative_share"] <= 1
    # about half the prompts are flat: discarded and resampled in some step, and the refilled batches are whole
    assert sum(x["dynamic_sampling/discarded_groups"] for x in r) > 0
    assert sum(x["dynamic_sampling/resampled_groups"] for x in r) > 0
    assert min(x["dynamic_sampling/informative_share"] for x in r) < 1
    assert sum(x["dynamic_sampling/filled_groups"] for x in r) < sum(4 * (1 - x["dynamic_sampling/informative_share"])
                                                                    for x in r)


def test_dynamic_sampling_stops_at_the_round_cap_and_fills_with_flat_groups(setup):
    (setup / "half_flat.py").write_text(HALF_FLAT)
    r = rows(run_ppo(group_cfg(setup, "flat", steps=2, dynamic_sampling=True, dynamic_sampling_max_rounds=2,
                               reward_fn=f"{setup / 'half_flat.py'}:flat")).output_dir)
    for x in r:
        assert x["dynamic_sampling/rounds"] == 2 and x["dynamic_sampling/filled_groups"] == 4
        assert x["dynamic_sampling/discarded_groups"] == 8 and x["dynamic_sampling/informative_share"] == 0
        assert x["objective/zero_std_share"] == 1


def test_kl_free_with_lora_runs_no_adapter_disabled_reference_pass(setup, monkeypatch):
    import peft

    calls = []
    real = peft.PeftModel.disable_adapter
    monkeypatch.setattr(peft.PeftModel, "disable_adapter", lambda self: calls.append(1) or real(self))
    kw = dict(lora_r=4, advantage_estimator="rloo", num_generations=2, steps=2, ppo_epochs=1)
    with_ref = rows(run_ppo(tiny_cfg(setup, "lora-ref", **kw)).output_dir)
    assert len(calls) == 2 and "objective/kl" in with_ref[0]  # one reference pass a step
    calls.clear()
    free = rows(run_ppo(tiny_cfg(setup, "lora-free", kl_free=True, **kw)).output_dir)
    assert calls == [] and len(free) == 2
    assert "objective/kl" not in free[0] and "objective/non_score_reward" not in free[0]
    assert free[0]["objective/beta"] == 0.0


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_kl_free_full_fine_tuning_makes_no_reference_copy_and_equals_beta_zero(setup, estimator):
    from rlhaif.policy.ppo import load_policy

    kw = dict(lora_r=0, advantage_estimator=estimator, num_generations=2, steps=3)
    _, ref, _ = load_policy(tiny_cfg(setup, "x", **kw))
    _, no_ref, _ = load_policy(tiny_cfg(setup, "x", kl_free=True, **kw))
    assert ref is not None and no_ref is None
    zero = run_ppo(tiny_cfg(setup, "beta0", kl_coef=0.0, kl_loss_coef=0.0, **kw))
    free = run_ppo(tiny_cfg(setup, "free", kl_free=True, **kw))
    # β = 0 either way: the same updates, without the reference
    assert free.param_checksum == pytest.approx(zero.param_checksum, rel=1e-9)
    a, b = rows(zero.output_dir), rows(free.output_dir)
    for x, y in zip(a, b):
        assert x["objective/score"] == y["objective/score"] and x["policy/loss"] == pytest.approx(y["policy/loss"])


def test_loss_knobs_run_together_and_log_the_overlong_metrics(setup):
    r = rows(run_ppo(group_cfg(setup, "knobs", reward_fn=f"{setup / 'reward.py'}:score", steps=2, ppo_epochs=2,
                               importance_sampling_level="sequence", clip_range_high=0.28,
                               loss_aggregation="token_mean", overlong_buffer=2, overlong_penalty=0.5,
                               mask_truncated_completions=True)).output_dir)
    for x in r:
        assert 0 <= x["response/truncated_share"] <= 1
        assert x["response/truncated_share"] == pytest.approx(1 - x["response/eos_share"])
        assert 0 <= x["objective/overlong_penalty"] <= 0.5
        assert "policy/clipfrac" in x and "policy/ratio" in x
