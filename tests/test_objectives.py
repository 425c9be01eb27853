"""The combination rules of several objectives, the Lagrangian update and the ensemble rules, against
hand-computed values; the set-up's one-message errors."""

import pytest
import torch

from rlhaif.errors import ConfigError, DataError
from rlhaif.objectives import (Lagrangian, Objectives, prompt_field_values, constrained, ensemble, gated,
                               weighted)


def close(t, values):
    assert torch.as_tensor(t, dtype=torch.float64).tolist() == pytest.approx(values, abs=1e-6)


def test_weighted_sum_by_hand():
    s = {"help": torch.tensor([1.0, -2.0, 0.5]), "cost": torch.tensor([2.0, 0.0, 4.0])}
    # 1·1 − 0.5·2 = 0;  1·(−2) − 0.5·0 = −2;  0.5 − 0.5·4 = −1.5
    close(weighted(s, {"help": 1.0, "cost": -0.5}), [0.0, -2.0, -1.5])
    close(weighted(s, {"cost": 2.0}), [5.0, -2.0, 8.5])  # help has weight 1 by default


def test_gated_takes_safety_on_risky_prompts_or_below_the_threshold():
    help_s = torch.tensor([0.9, 0.9, 0.9, 0.9])
    safe_s = torch.tensor([0.5, 0.1, 0.5, 0.1])
    risky = torch.tensor([False, False, True, True])
    # safe: help; unsafe (0.1 < 0.15): safety; risky: safety; both: safety
    close(gated(help_s, safe_s, risky, 0.15), [0.9, 0.1, 0.5, 0.1])
    close(gated(help_s, safe_s, risky, None), [0.9, 0.9, 0.5, 0.1])  # by the prompt flag alone


def test_constrained_reward_and_lagrangian_update_by_hand():
    # λ = 0.5: (h − 0.5·c) / 1.5
    close(constrained(torch.tensor([3.0, 0.0]), torch.tensor([2.0, 3.0]), 0.5), [(3 - 1) / 1.5, -1.5 / 1.5])
    close(constrained(torch.tensor([3.0]), torch.tensor([2.0]), 0.0), [3.0])
    lag = Lagrangian(lam=1.0, lr=0.1, limit=2.0)
    assert lag.update(5.0) == pytest.approx(1.3)    # 1 + 0.1·(5 − 2)
    assert lag.update(0.0) == pytest.approx(1.1)    # 1.3 + 0.1·(0 − 2)
    assert lag.update(-20.0) == 0.0                 # max(0, 1.1 − 2.2)
    assert lag.update(2.0) == 0.0                   # at the limit: unchanged
    lag.load_state_dict({"lam": 0.25})
    assert lag.state_dict() == {"lam": 0.25}


def test_ensemble_rules_by_hand():
    members = [[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]]  # 3 members × 2 responses
    close(ensemble(members, "mean"), [2.0, 1.0])
    # population std: response 0: sqrt(((1−2)² + (3−2)² + 0)/3) = sqrt(2/3); response 1: sqrt((1+1+4)/3) = sqrt(2)
    close(ensemble(members, "mean_minus_std", alpha=0.5), [2.0 - 0.5 * (2 / 3) ** 0.5, 1.0 - 0.5 * 2 ** 0.5])
    close(ensemble(members, "min"), [1.0, 0.0])
    close(ensemble([[1.5, -1.0]], "mean_minus_std"), [1.5, -1.0])  # one member: no spread
    with pytest.raises(ConfigError, match="unknown ensemble rule 'median'.*mean, mean_minus_std, min"):
        ensemble(members, "median")


def test_objectives_combine_update_and_state():
    obj = Objectives({"help": "length", "cost": "length"}, "constrained", roles={"help": "help", "cost": "cost"},
                     cost_limit=1.0, lagrange_lr=0.5, lagrange_init=2.0)
    r = obj.combine({"help": torch.tensor([4.0]), "cost": torch.tensor([1.0])}, [{}])
    close(r, [(4 - 2) / 3])
    assert obj.after_step({"help": 4.0, "cost": 3.0}) == {"objective/lambda": 2.0}
    assert obj.state_dict() == {"lagrangian": {"lam": 3.0}}  # 2 + 0.5·(3 − 1)
    gate = Objectives({"h": "length", "s": "length"}, "gated", roles={"h": "help", "s": "safety"},
                      risky_field="kind", risky_values=["red-team"])
    records = [{"kind": "everyday"}, {"kind": "red-team"}]
    close(gate.combine({"h": torch.tensor([1.0, 1.0]), "s": torch.tensor([0.5, 0.5])}, records), [1.0, 0.5])
    assert gate.after_step({"h": 1.0, "s": 0.5}) == {} and gate.state_dict() == {}


def test_weights_scale_the_scores_before_gated_and_constrained():
    # a harmlessness score s as the cost c = −s: λ = 1, (h − 1·(−1·s)) / 2 = (h + s) / 2
    obj = Objectives({"help": "length", "harmless": "length"}, "constrained",
                     roles={"help": "help", "harmless": "cost"}, weights={"harmless": -1.0},
                     cost_limit=-0.5, lagrange_lr=0.5, lagrange_init=1.0)
    close(obj.combine({"help": torch.tensor([2.0, 0.0]), "harmless": torch.tensor([1.0, -3.0])}, [{}, {}]),
          [(2 + 1) / 2, (0 - 3) / 2])
    # mean harmless 0.2 → mean cost −0.2, over the limit −0.5: λ = 1 + 0.5·(−0.2 + 0.5) = 1.15
    assert obj.after_step({"help": 1.0, "harmless": 0.2}) == {"objective/lambda": 1.0}
    assert obj.state_dict()["lagrangian"]["lam"] == pytest.approx(1.15)
    # gated: τ = 0.15 is compared with the scaled safety score (2·0.1 = 0.2 ≥ 0.15: help stays)
    gate = Objectives({"h": "length", "s": "length"}, "gated", roles={"h": "help", "s": "safety"},
                      weights={"h": 3.0, "s": 2.0}, safety_threshold=0.15)
    close(gate.combine({"h": torch.tensor([1.0, 1.0]), "s": torch.tensor([0.1, 0.05])}, [{}, {}]), [3.0, 0.1])


@pytest.mark.parametrize("kw, message", [
    (dict(rule="lexicographic"), "unknown combination rule 'lexicographic'; use one of: weighted, gated, constrained"),
    (dict(weights={"helpful": 1.0, "harmles": 0.5}), "objective_weights names 'harmles', which is not a scorer"),
    (dict(cost_limit=0.2), "cost_limit 0.2 is set but no objective has the role 'cost'"),
    (dict(rule="gated", roles={"helpful": "help", "harmless": "help"}), "needs exactly one objective with role 'help'"),
    (dict(rule="constrained", roles={"helpful": "help", "harmless": "cost"}), "needs cost_limit"),
    (dict(roles={"helpful": "reward"}), "unknown role 'reward'"),
    (dict(specs={"kl": "length"}), "objective name 'kl' is taken"),
])
def test_bad_setups_get_one_clear_message(kw, message):
    args = dict(specs={"helpful": "length", "harmless": "length"}, rule="weighted")
    args.update(kw)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Objectives(**args)


def test_a_missing_group_field_names_file_and_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a", "kind": "everyday"}\n\n{"prompt": "b", "kind": "red-team"}\n')
    assert prompt_field_values(str(path), "kind") == ["everyday", "red-team"]
    with open(path, "a") as f:
        f.write('{"prompt": "c"}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl:4: field 'kind': the prompt has no 'kind' field"):
        prompt_field_values(str(path), "kind")
