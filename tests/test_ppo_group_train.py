"""Critic-free estimators in the PPO loop on a tiny model: RLOO and GRPO learn the synthetic reward, GRPO's
KL loss term holds the policy nearer the reference than no KL at all, and Dr. GRPO runs with minibatches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_ppo_train import DDP_SCRIPT, rows, setup, tiny_cfg  # noqa: F401  (setup is a fixture)

from rlhaif.policy.ppo import run_ppo


def group_cfg(root, out, estimator, **kw):
    base = dict(advantage_estimator=estimator, num_generations=4, batch_size=16, mini_batch_size=8, ppo_epochs=2)
    return tiny_cfg(root, out, **{**base, **kw})


def mean(xs):
    return sum(xs) / len(xs)


def check_rises(r, name):
    score = [x["objective/score"] for x in r]
    print(name, "score", [round(s, 3) for s in score], "kl", [round(x["objective/kl"], 2) for x in r])
    assert mean(score[-4:]) > mean(score[:4]) + 0.1, name


def test_rloo_learns_with_kl_in_the_reward_and_no_critic(setup):
    res = run_ppo(group_cfg(setup, "rloo", "rloo", steps=20, kl_coef=0.05))
    r = rows(res.output_dir)
    assert len(r) == 20
    names = {"objective/score", "objective/kl", "objective/entropy", "objective/zero_std_share",
             "objective/group_score_std", "policy/clipfrac", "policy/approx_kl", "policy/loss", "response/length"}
    assert names <= set(r[0]), names - set(r[0])
    assert not any(k.startswith("value/") for k in r[0])  # no critic, no value metrics
    assert "policy/kl_loss" not in r[0] and r[0]["objective/beta"] == 0.05
    assert all(0 <= x["objective/zero_std_share"] <= 1 for x in r)
    check_rises(r, "rloo")
    assert not (Path(res.output_dir) / "value_head.safetensors").exists()
    # each group of 4 samples shares its prompt
    sample = json.loads((Path(res.output_dir) / "samples.jsonl").read_text().splitlines()[0])
    assert {"prompt", "response", "score"} <= set(sample)


def test_grpo_learns_and_its_kl_loss_term_holds_it_nearer_the_reference(setup):
    guarded = rows(run_ppo(group_cfg(setup, "grpo", "grpo", steps=20, kl_loss_coef=0.5)).output_dir)
    free = rows(run_ppo(group_cfg(setup, "grpo0", "grpo", steps=20, kl_loss_coef=0.0)).output_dir)
    assert "policy/kl_loss" in guarded[0] and guarded[0]["objective/beta"] == 0.5
    check_rises(guarded, "grpo β=0.5")
    check_rises(free, "grpo β=0")
    kl_g, kl_f = mean([x["objective/kl"] for x in guarded[-4:]]), mean([x["objective/kl"] for x in free[-4:]])
    assert kl_f > 1.5 * kl_g, (kl_g, kl_f)


def test_dr_grpo_runs_with_minibatches_and_two_epochs(setup):
    r = rows(run_ppo(group_cfg(setup, "drgrpo", "dr_grpo", steps=2, mini_batch_size=4)).output_dir)
    assert len(r) == 2 and "policy/kl_loss" in r[0] and "objective/zero_std_share" in r[0]


def test_two_processes_with_a_frozen_critic_keep_parameters_identical(setup):
    # the value head has no gradient with rloo: DDP must not wait for it, and both ranks must stay in step
    cfg = group_cfg(setup, "ddp", "rloo", steps=2, batch_size=4, num_generations=2, mini_batch_size=2,
                    ppo_epochs=1, lora_r=4)
    (setup / "cfg.json").write_text(cfg.model_dump_json())
    (setup / "ddp.py").write_text(DDP_SCRIPT)
    (setup / "ddp").mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(setup / "ddp.py"), str(setup / "cfg.json")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((setup / "ddp" / f"rank-{i}.json").read_text()) for i in (0, 1))
    assert "MULTI_CPU" in r0["distributed_type"]
    assert r0["param_checksum"] == pytest.approx(r1["param_checksum"], rel=1e-9)
    assert len(rows(setup / "ddp")) == 2


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
def test_one_update_per_rollout_reuses_its_own_logprobs_as_the_old_ones(setup, monkeypatch, estimator):
    """One epoch of one minibatch with the KL as a loss term: the old log-probs are the update's own, detached
    (one policy forward a step less, as TRL's GRPOTrainer) — same scores, KL, entropy, losses and final
    weights as the two-pass step."""
    import torch

    import rlhaif.policy.ppo as ppo

    calls = []
    real = ppo.forward_response
    monkeypatch.setattr(ppo, "forward_response", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(steps=3, mini_batch_size=16, ppo_epochs=1, kl_loss_coef=0.1, lora_r=0)
    reused = run_ppo(group_cfg(setup, "reused", estimator, **kw))
    n_reused = len(calls)
    monkeypatch.setattr(ppo, "reuses_update_logprobs", lambda *a: False)
    calls.clear()
    twice = run_ppo(group_cfg(setup, "twice", estimator, **kw))
    assert (n_reused, len(calls)) == (3, 6)  # one policy forward a step instead of two
    a, b = rows(reused.output_dir), rows(twice.output_dir)
    for x, y in zip(a, b):
        for key in ("objective/score", "objective/kl", "objective/entropy", "policy/loss", "policy/kl_loss",
                    "policy/approx_kl", "objective/group_score_std"):
            assert x[key] == pytest.approx(y[key], abs=1e-5), key
    assert a[0]["policy/clipfrac"] == 0.0 and a[0]["policy/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert reused.param_checksum == pytest.approx(twice.param_checksum, rel=1e-6)


def test_rloo_and_minibatches_keep_the_separate_old_logprob_pass():
    from rlhaif.policy.ppo import PPOConfig, reuses_update_logprobs

    def cfg(**kw):
        base = dict(model="m", prompts="p", reward_fn="r.py:f", batch_size=16, mini_batch_size=16, ppo_epochs=1,
                    num_generations=4)
        return PPOConfig(**{**base, **kw})

    assert reuses_update_logprobs(cfg(advantage_estimator="grpo"), critic=False, kl_reward=False, engine=None)
    assert not reuses_update_logprobs(cfg(advantage_estimator="rloo"), critic=False, kl_reward=True, engine=None)
    assert not reuses_update_logprobs(cfg(advantage_estimator="gae"), critic=True, kl_reward=True, engine=None)
    assert not reuses_update_logprobs(cfg(advantage_estimator="grpo"), critic=False, kl_reward=False, engine=object())
    assert not reuses_update_logprobs(cfg(advantage_estimator="grpo", ppo_epochs=2), False, False, None)
    assert not reuses_update_logprobs(cfg(advantage_estimator="grpo", mini_batch_size=8), False, False, None)
