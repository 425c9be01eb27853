"""PPO on tiny models: learning with a synthetic reward, the KL guard, exact resume, the CLI, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhaif.errors import RlhaifError
from rlhaif.models.tiny import WORDS, save_tiny
from rlhaif.policy.ppo import PPOConfig, run_ppo

# Synthetic reward: the share of response words drawn from a small target set (about 10% at random init).
REWARD = '''
import math, os
TARGET = {"cat", "dog", "sun", "moon", "tree", "book", "car", "house", "food", "music"}
CALLS = [0]
def score(prompts, responses):
    CALLS[0] += 1
    if os.environ.get("PPO_TEST_NAN_AT") == str(CALLS[0]):
        return [math.nan] * len(responses)
    return [sum(w in TARGET for w in r.split()) / max(1, len(r.split())) for r in responses]
'''


@pytest.fixture
def setup(tmp_path):
    save_tiny(tmp_path / "tiny", "llama")
    (tmp_path / "reward.py").write_text(REWARD)
    prompts = [" ".join(WORDS[(7 * i + j) % 60] for j in range(4)) for i in range(24)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return tmp_path


def tiny_cfg(root, out, **kw):
    base = dict(model=str(root / "tiny"), prompts=str(root / "prompts.jsonl"), output_dir=str(root / out),
                reward_fn=f"{root / 'reward.py'}:score", lora_r=0, learning_rate=1e-2, batch_size=8,
                mini_batch_size=4, ppo_epochs=2, max_new_tokens=4, temperature=1.0, save_every=100,
                sample_every=5, kl_ceiling=None)
    return PPOConfig(**{**base, **kw})


def rows(out):
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_score_rises_under_the_kl_guard_and_beta_zero_drifts_further(setup):
    guarded = run_ppo(tiny_cfg(setup, "guarded", steps=12, kl_coef=0.1))
    free = run_ppo(tiny_cfg(setup, "free", steps=12, kl_coef=0.0))
    g, f = rows(guarded.output_dir), rows(free.output_dir)
    assert len(g) == len(f) == 12
    names = {"objective/score", "objective/kl", "objective/entropy", "policy/clipfrac", "policy/approx_kl",
             "value/loss", "value/explained_variance", "response/length", "objective/beta", "time/generate",
             "time/score", "time/train"}
    assert names <= set(g[0]), names - set(g[0])
    score = [r["objective/score"] for r in g]
    kl_g, kl_f = [r["objective/kl"] for r in g], [r["objective/kl"] for r in f]
    print("guarded score", [round(s, 3) for s in score], "kl", [round(k, 2) for k in kl_g])
    print("free score", [round(r["objective/score"], 3) for r in f], "kl", [round(k, 2) for k in kl_f])
    assert sum(score[-3:]) / 3 > sum(score[:3]) / 3 + 0.1  # the guarded policy still learns
    assert max(kl_g) < 5.0  # and stays near the reference (nats per 4-token response)
    assert sum(kl_f[-3:]) / 3 > 2 * sum(kl_g[-3:]) / 3  # without the penalty it drifts much further
    assert all(r["objective/beta"] == 0.1 for r in g)
    samples = (Path(guarded.output_dir) / "samples.jsonl").read_text().splitlines()
    assert {"step", "prompt", "response", "score", "eos"} <= set(json.loads(samples[0]))


def test_resume_after_a_crash_equals_the_uninterrupted_run(setup, monkeypatch):
    kw = dict(steps=4, save_every=2, lora_r=4, learning_rate=5e-3, kl_target=1.0, kl_horizon=50)
    straight = run_ppo(tiny_cfg(setup, "straight", **kw))
    # The reward function returns NaN at step 3: one clear error, the step-2 checkpoint intact.
    monkeypatch.setenv("PPO_TEST_NAN_AT", "3")
    with pytest.raises(RlhaifError, match=r"reward\.py:score returned nan for response 0"):
        run_ppo(tiny_cfg(setup, "crashed", **kw))
    ckpts = sorted(p.name for p in (setup / "crashed" / "checkpoints").iterdir())
    assert ckpts == ["step-000002"]
    monkeypatch.delenv("PPO_TEST_NAN_AT")
    # Resumed, it crashes again in the middle of writing the step-4 checkpoint (weights written, optimizer not):
    # the step-2 checkpoint stays the newest complete one.
    real_save = torch.save

    def crash_on_step4_optimizer(obj, f, *a, **k):
        if str(f).endswith("step-000004.tmp/optimizer.pt"):
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", crash_on_step4_optimizer)
    with pytest.raises(OSError, match="simulated"):
        run_ppo(tiny_cfg(setup, "crashed", **kw))
    monkeypatch.setattr(torch, "save", real_save)
    from rlhaif.training import latest_checkpoint

    assert latest_checkpoint(setup / "crashed").name == "step-000002"
    assert not (setup / "crashed" / "checkpoints" / "step-000004").exists()
    resumed = run_ppo(tiny_cfg(setup, "crashed", **kw))
    assert resumed.resumed_from == 2
    a, b = rows(straight.output_dir), rows(resumed.output_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a[1]["objective/beta"] != a[0]["objective/beta"]  # the adaptive β moved, so its state matters
    for ra, rb in zip(a, b):
        for k in ra:
            if not k.startswith("time") and k not in ("samples_per_second",):
                assert ra[k] == pytest.approx(rb[k], abs=1e-6), (ra["step"], k)
    from safetensors.torch import load_file

    wa = load_file(str(setup / "straight" / "model" / "adapter_model.safetensors"))
    wb = load_file(str(setup / "crashed" / "model" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_separate_value_model_kl_ceiling_and_score_threshold(setup):
    # A separate value model; a KL ceiling so low that each step stops after its second minibatch (the first one
    # runs before any update, so its approx KL is 0); a score threshold every step reaches: stop after step 1.
    res = run_ppo(tiny_cfg(setup, "ceil", steps=5, value_model=str(setup / "tiny"), kl_ceiling=1e-12,
                           score_threshold=-1.0))
    r = rows(res.output_dir)
    assert res.steps == 1 and len(r) == 1
    assert r[0]["policy/early_stop"] == 1.0
    assert (setup / "ceil" / "checkpoints" / "step-000001" / "trainer_state.json").exists()
    # without the ceiling every minibatch of every epoch runs
    free = rows(run_ppo(tiny_cfg(setup, "noceil", steps=1, value_model=str(setup / "tiny"))).output_dir)
    assert free[0]["policy/early_stop"] == 0.0


def test_separate_critic_is_a_trunk_without_lm_head_with_and_without_lora(setup):
    from rlhaif.policy.ppo import load_policy

    for lora_r in (0, 4):
        cfg = tiny_cfg(setup, f"critic{lora_r}", steps=1, value_model=str(setup / "tiny"), lora_r=lora_r)
        model, _, _ = load_policy(cfg)
        names = [n for n, _ in model.value_model.named_parameters()]
        assert names and not any("lm_head" in n for n in names)  # the critic carries no (B, T, V) head
        trained = [n for n, p in model.value_model.named_parameters() if p.requires_grad]
        assert trained and (all("lora_" in n for n in trained) if lora_r else len(trained) == len(names))
        res = run_ppo(cfg)
        assert res.steps == 1 and rows(res.output_dir)[0]["value/loss"] >= 0


def test_cli_with_a_reward_model_whose_tokenizer_differs(setup):
    from rlhaif.models.tiny import make_tiny_reward_model, make_tokenizer
    from rlhaif.reward.model import RewardModel

    rm_tok = make_tokenizer(tuple(WORDS[::3]) + ("zebra", "quantum"))  # another vocabulary: other ids for the same text
    rm, _ = make_tiny_reward_model("gpt2", tokenizer=rm_tok)
    RewardModel(rm, rm_tok, "chat", max_length=64).save(setup / "rm")
    out = setup / "cli"
    cmd = [sys.executable, "-m", "rlhaif.cli", "ppo", "--model", str(setup / "tiny"), "--prompts",
           str(setup / "prompts.jsonl"), "--reward-model", str(setup / "rm"), "--output-dir", str(out),
           "--lora-r", "4", "--steps", "2", "--batch-size", "4", "--mini-batch-size", "2", "--ppo-epochs", "1",
           "--max-new-tokens", "4", "--sample-every", "1", "--save-every", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "policy saved to" in res.stdout
    assert len(rows(out)) == 2
    assert (out / "checkpoints" / "step-000002" / "trainable.safetensors").exists()
    assert (out / "model" / "adapter_config.json").exists() and (out / "value_head.safetensors").exists()
    # a bad batch size is one message, exit code 2
    bad = subprocess.run(cmd[:-4] + ["--mini-batch-size", "3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "must be a multiple of mini_batch_size (3)" in bad.stderr


DDP_SCRIPT = '''
import dataclasses, json, sys
from rlhaif.policy.ppo import PPOConfig, run_ppo
cfg = PPOConfig.model_validate_json(open(sys.argv[1]).read())
res = dataclasses.asdict(run_ppo(cfg))
from accelerate import PartialState
res["distributed_type"] = str(PartialState().distributed_type)
json.dump(res, open(f"{cfg.output_dir}/rank-{res['rank']}.json", "w"))
'''


def test_two_cpu_processes_keep_parameters_identical(setup):
    cfg = tiny_cfg(setup, "ddp", steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1, lora_r=4)
    (setup / "cfg.json").write_text(cfg.model_dump_json())
    (setup / "ddp.py").write_text(DDP_SCRIPT)
    (setup / "ddp").mkdir()
    # torchrun sets RANK/WORLD_SIZE; with ACCELERATE_USE_CPU Accelerate runs DDP over gloo (MULTI_CPU).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(setup / "ddp.py"), str(setup / "cfg.json")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((setup / "ddp" / f"rank-{i}.json").read_text()) for i in (0, 1))
    assert "MULTI_CPU" in r0["distributed_type"]
    # each rank sampled its own prompts, yet after the optimizer steps the weights agree: gradients synchronised
    assert r0["param_checksum"] == pytest.approx(r1["param_checksum"], rel=1e-9)
    assert len(rows(setup / "ddp")) == 2


def test_ppo_resumed_run_logs_each_step_once_refuses_a_changed_learning_rate_and_may_run_longer(
        setup, crash_after_logging):
    from rlhaif.errors import ConfigError

    kw = dict(steps=3, save_every=1, lora_r=4, learning_rate=5e-3, sample_every=1)
    crash_after_logging(2)  # the kill comes after step 2's metrics row, before its samples and checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_ppo(tiny_cfg(setup, "dup", **kw))
    crash_after_logging(None)
    with pytest.raises(ConfigError, match=r"learning_rate: 0\.005 -> 0\.001"):
        run_ppo(tiny_cfg(setup, "dup", **{**kw, "learning_rate": 1e-3}))
    res = run_ppo(tiny_cfg(setup, "dup", **{**kw, "steps": 4}))  # more steps: allowed
    assert res.resumed_from == 1 and res.steps == 4
    assert [r["step"] for r in rows(res.output_dir)] == [1, 2, 3, 4]
    samples = [json.loads(l)["step"] for l in (Path(res.output_dir) / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(samples)) == [1, 2, 3, 4] and len(samples) == 4 * 4
    assert res.model == str(Path(res.output_dir) / "model") and "objective/score" in res.metrics
    assert json.loads((Path(res.output_dir) / "manifest.json").read_text())["outputs"]["steps"] == 4


def test_monitor_scorers_are_logged_every_step_and_never_enter_the_reward(setup):
    (setup / "watch.py").write_text(REWARD + "\ndef words(prompts, responses):\n"
                                    "    return [float(len(r.split())) for r in responses]\n")
    watch = str(setup / "watch.py")
    plain = run_ppo(tiny_cfg(setup, "plain", steps=3))
    res = run_ppo(tiny_cfg(setup, "watched", steps=3, monitor_scorers={"same": f"python:{watch}:score",
                                                                        "words": f"python:{watch}:words"}))
    got, want = rows(res.output_dir), rows(plain.output_dir)
    for g, w in zip(got, want):
        # the reward function itself as a monitor reads the step's mean score; another monitor is its own mean
        assert g["monitor/same"] == pytest.approx(g["objective/score"], abs=1e-6)
        assert g["monitor/words"] > 0 and g["monitor/words"] != pytest.approx(g["objective/score"])
        # watching changes nothing of the run: same scores, same KL as without monitors
        assert g["objective/score"] == pytest.approx(w["objective/score"], abs=1e-6)
        assert g["objective/kl"] == pytest.approx(w["objective/kl"], abs=1e-6)


def test_a_classifier_label_logit_is_the_reward_of_an_rloo_run(setup):
    """`classifier:PATH:LABEL` as the reward model of the online loop (here RLOO): the logged score is that
    label's logit on the step's responses — a watch-only copy of the same spec reads the same mean."""
    from transformers import AutoModelForSequenceClassification

    from rlhaif.models.tiny import make_config, make_tokenizer
    from rlhaif.scorers import load_scorer as load_spec

    tok = make_tokenizer()
    cfg = make_config("llama", len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    cfg.num_labels, cfg.id2label, cfg.label2id = 2, {0: "hate", 1: "nothate"}, {"hate": 0, "nothate": 1}
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(setup / "clf")
    tok.save_pretrained(setup / "clf")
    spec = f"classifier:{setup / 'clf'}:nothate"
    res = run_ppo(tiny_cfg(setup, "clf_run", steps=2, reward_fn=None, reward_model=spec, advantage_estimator="rloo",
                           num_generations=2, monitor_scorers={"clf": spec, "hate": f"classifier:{setup / 'clf'}:hate"}))
    got = rows(res.output_dir)
    assert len(got) == 2
    for g in got:
        assert g["monitor/clf"] == pytest.approx(g["objective/score"], abs=1e-5)
        assert g["monitor/hate"] != pytest.approx(g["objective/score"], abs=1e-3)  # the label matters
    # and the loaded scorer is that label's logit
    probe = load_spec(spec)(["say"], ["the sun is good"])
    model = AutoModelForSequenceClassification.from_pretrained(setup / "clf").eval()
    with torch.no_grad():
        assert probe[0] == pytest.approx(model(**tok(["the sun is good"], return_tensors="pt")).logits[0, 1].item(),
                                         abs=1e-4)


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_each_steps_first_ratio_is_one_with_the_samplers_own_streams(setup, mixed_precision):
    """The rollout draws with per-row streams and drops finished rows, but the old log-probs the update uses are
    still the policy's under the update's precision: one epoch of one minibatch sees a ratio of exactly 1."""
    out = run_ppo(tiny_cfg(setup, f"ratio-{mixed_precision}", steps=2, ppo_epochs=1, mini_batch_size=8,
                           mixed_precision=mixed_precision))
    for r in rows(out.output_dir):
        assert abs(r["policy/ratio"] - 1) < 1e-6 and r["policy/clipfrac"] == 0 and r["policy/approx_kl"] < 1e-7, r
