"""Several objectives in the one online loop on a tiny model: each scorer logged, the constrained rule holding
the mean cost near its limit where the weighted sum lets it grow, λ restored exactly on resume, bad set-ups."""

import json
from pathlib import Path

import pytest

from rlhaif.errors import ConfigError, DataError, RlhaifError
from rlhaif.models.tiny import WORDS, save_tiny
from rlhaif.policy.ppo import PPOConfig, run_ppo

# help: the share of response words from a target set (about 10 % at random init, rises under RL);
# cost: the share from half of that set, so raising help the easy way raises the cost too.
SCORERS = '''
import math, os
HELP = {"cat", "dog", "sun", "moon", "tree", "book", "car", "house", "food", "music"}
COST = {"cat", "dog", "sun", "moon", "tree"}
def share(responses, words):
    return [sum(w in words for w in r.split()) / max(1, len(r.split())) for r in responses]
def help(prompts, responses):
    return share(responses, HELP)
def cost(prompts, responses):
    return share(responses, COST)
def broken(prompts, responses):
    return [math.inf] * len(responses)
'''


@pytest.fixture
def setup(tmp_path):
    save_tiny(tmp_path / "tiny", "llama")
    (tmp_path / "scorers.py").write_text(SCORERS)
    prompts = [" ".join(WORDS[(7 * i + j) % 60] for j in range(4)) for i in range(24)]
    (tmp_path / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": p, "kind": "red-team" if i % 3 == 0 else "everyday"}) + "\n" for i, p in enumerate(prompts)))
    return tmp_path


def cfg_of(root, out, **kw):
    s = root / "scorers.py"
    base = dict(model=str(root / "tiny"), prompts=str(root / "prompts.jsonl"), output_dir=str(root / out),
                objectives={"help": f"python:{s}:help", "cost": f"python:{s}:cost"}, lora_r=0,
                learning_rate=1e-2, batch_size=8, mini_batch_size=4, ppo_epochs=2, max_new_tokens=4,
                temperature=1.0, save_every=100, sample_every=0, kl_ceiling=None, kl_coef=0.02)
    return PPOConfig(**{**base, **kw})


def rows(out):
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def mean(xs):
    return sum(xs) / len(xs)


def test_constrained_holds_the_cost_near_its_limit_where_the_weighted_sum_does_not(setup):
    steps, limit = 20, 0.05
    plain = rows(run_ppo(cfg_of(setup, "weighted", steps=steps, objective_weights={"help": 1.0, "cost": -0.1}))
                 .output_dir)
    held = rows(run_ppo(cfg_of(setup, "constrained", steps=steps, combine="constrained",
                               objective_roles={"help": "help", "cost": "cost"}, cost_limit=limit,
                               lagrange_lr=10.0, lagrange_init=1.0)).output_dir)
    for r in plain + held:
        assert {"objective/help", "objective/cost", "objective/score"} <= set(r)
    # the weighted run's reward is its logged scores' weighted sum, step by step
    for r in plain:
        assert r["objective/score"] == pytest.approx(r["objective/help"] - 0.1 * r["objective/cost"], abs=1e-5)
    lam = [r["objective/lambda"] for r in held]
    assert lam[0] == 1.0  # the λ the first step used: lagrange_init
    for a, b, r in zip(lam, lam[1:], held):  # λ ← max(0, λ + η·(mean cost − d)) after every step
        assert b == pytest.approx(max(0.0, a + 10.0 * (r["objective/cost"] - limit)), abs=1e-9)
    last = slice(steps // 2, None)
    cost_plain, cost_held = (mean([r["objective/cost"] for r in x[last]]) for x in (plain, held))
    help_plain, help_held = (mean([r["objective/help"] for r in x[last]]) for x in (plain, held))
    print(f"second half: weighted cost {cost_plain:.3f} help {help_plain:.3f}; constrained cost {cost_held:.3f} "
          f"help {help_held:.3f}; λ {[round(x, 2) for x in lam]}")
    assert cost_plain > 4 * limit  # the plain weighted sum lets the cost grow far past the limit
    assert cost_held < 2 * limit  # the constrained rule holds it near the limit
    assert help_held > mean([r["objective/help"] for r in held[:3]]) + 0.15  # while help still rises


def test_resume_restores_lambda_exactly(setup, monkeypatch):
    kw = dict(steps=4, save_every=1, combine="constrained", objective_roles={"help": "help", "cost": "cost"},
              cost_limit=0.03, lagrange_lr=3.3, lagrange_init=0.7, lora_r=4, learning_rate=5e-3)
    straight = rows(run_ppo(cfg_of(setup, "straight", **kw)).output_dir)
    import rlhaif.policy.ppo as ppo

    real = ppo.ppo_update
    calls = {"n": 0}

    def crash_at_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ppo, "ppo_update", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_ppo(cfg_of(setup, "crashed", **kw))
    monkeypatch.setattr(ppo, "ppo_update", real)
    saved = json.loads((setup / "crashed" / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert saved["objectives"]["lagrangian"]["lam"] == straight[2]["objective/lambda"]  # the λ step 3 uses
    resumed = run_ppo(cfg_of(setup, "crashed", **kw))
    assert resumed.resumed_from == 2
    got = rows(resumed.output_dir)
    assert [r["objective/lambda"] for r in got] == [r["objective/lambda"] for r in straight]  # exactly
    assert [r["objective/cost"] for r in got] == pytest.approx([r["objective/cost"] for r in straight], abs=1e-6)


def test_gated_rule_takes_the_safety_score_on_risky_prompts(setup):
    res = run_ppo(cfg_of(setup, "gated", steps=1, combine="gated", objective_roles={"help": "help", "cost": "safety"},
                         risky_field="kind", risky_values=["red-team"], safety_threshold=None, sample_every=1))
    r = rows(res.output_dir)[0]
    assert {"objective/help", "objective/cost", "objective/score"} <= set(r) and "objective/lambda" not in r
    # each sample's reward is its safety score on red-team prompts, its help score elsewhere (τ off)
    kinds = {json.loads(l)["prompt"]: json.loads(l)["kind"] for l in (setup / "prompts.jsonl").read_text().splitlines()}
    samples = [json.loads(l) for l in (Path(res.output_dir) / "samples.jsonl").read_text().splitlines()]
    assert {kinds[x["prompt"]] for x in samples} == {"everyday", "red-team"}
    for x in samples:
        want = x["objective/cost"] if kinds[x["prompt"]] == "red-team" else x["objective/help"]
        assert x["score"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("kw, error, message", [
    (dict(combine="lexicographic"), ConfigError, "Input should be 'weighted', 'gated' or 'constrained'"),
    (dict(objective_weights={"helpful": 1.0}), ConfigError, "objective_weights names 'helpful', which is not a scorer"),
    (dict(cost_limit=0.1), ConfigError, "cost_limit 0.1 is set but no objective has the role 'cost'"),
    (dict(reward_fn="x.py:f"), ConfigError, "either one scorer (reward_model or reward_fn) or several"),
    (dict(combine="gated", objective_roles={"help": "help", "cost": "safety"}, risky_field="topic"),
     DataError, "prompts.jsonl:1: field 'topic'"),
])
def test_bad_objective_setups_get_one_message(setup, kw, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_ppo(cfg_of(setup, "bad", steps=1, **kw)) if "combine" not in kw or kw["combine"] != "lexicographic" \
            else PPOConfig.validate_dict({**cfg_of(setup, "bad").model_dump(), **kw})


def test_a_broken_objective_is_named(setup):
    s = setup / "scorers.py"
    with pytest.raises(RlhaifError, match="objective 'bad' returned inf for response 0"):
        run_ppo(cfg_of(setup, "broken", steps=1, objectives={"help": f"python:{s}:help", "bad": f"python:{s}:broken"}))


def test_the_ai_judge_is_an_objective_scored_online(setup):
    """Direct RLAIF in the loop: a (tiny) HF judge's p(response ≻ a fixed baseline) is one objective."""
    s = setup / "scorers.py"
    res = run_ppo(cfg_of(setup, "judged", steps=2, objectives={
        "help": f"python:{s}:help", "judge": f"judge:{setup / 'tiny'}?baseline=the+cat+is+good"},
        objective_weights={"help": 1.0, "judge": 0.5}))
    for r in rows(res.output_dir):
        assert 0.0 < r["objective/judge"] < 1.0
        assert r["objective/score"] == pytest.approx(r["objective/help"] + 0.5 * r["objective/judge"], abs=1e-5)
