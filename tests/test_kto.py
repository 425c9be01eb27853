"""KTO (loss `kto` of the DPO stage): the loss pinned by hand, the KL partners, one step and a behaviour test."""

import math

import pytest
import torch

from rlhaif.data.records import UnpairedRecord
from rlhaif.errors import ConfigError
from rlhaif.policy.dpo import run_dpo
from rlhaif.policy.dpo_losses import kto_loss
from rlhaif.policy.kto import kto_pairs
from test_dpo import cfg as dpo_cfg, metrics, tiny_dir, toy_pairs, write_jsonl  # noqa: F401  (DPO's toy task)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: one torch thread


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


# rows: two examples (desirable, undesirable), then their two mismatched (KL) pairs
LP = torch.tensor([-1.0, -2.0, -3.0, -4.0])
REF = torch.tensor([-1.5, -1.0, -3.4, -3.8])  # h = [0.5, -1.0]; mismatched log-ratios [0.4, -0.2]
LABEL = torch.tensor([1.0, 0.0])


def test_kto_loss_by_hand_desirable_and_undesirable_terms_with_lambdas():
    beta, ld, lu = 0.5, 2.0, 0.5
    loss, stats = kto_loss(LP, REF, beta, LABEL, None, lambda_d=ld, lambda_u=lu)
    z = (0.4 + -0.2) / 2  # 0.1 > 0: kept
    desirable = ld * (1 - sig(beta * (0.5 - z)))
    undesirable = lu * (1 - sig(beta * (z - (-1.0))))
    assert loss.item() == pytest.approx((desirable + undesirable) / 2, abs=1e-6)
    assert stats["kto/kl"].item() == pytest.approx(z, abs=1e-6)
    assert stats["rewards/chosen"].item() == pytest.approx(beta * 0.5)
    assert stats["rewards/rejected"].item() == pytest.approx(beta * -1.0)
    assert stats["rewards/accuracy"].item() == 1.0  # h − z > 0 for the desirable, < 0 for the undesirable
    # the weights scale each example: mean(w·L)
    w = torch.tensor([3.0, 0.0])
    loss_w, _ = kto_loss(LP, REF, beta, LABEL, w, lambda_d=ld, lambda_u=lu)
    assert loss_w.item() == pytest.approx(3 * desirable / 2, abs=1e-6)


def test_kto_reference_point_is_clamped_at_zero_and_carries_no_gradient():
    beta = 1.0
    ref = REF.clone()
    ref[2:] = torch.tensor([-2.6, -3.8])  # mismatched log-ratios [-0.4, -0.2]: mean −0.3 → z_ref = 0
    lp = LP.clone().requires_grad_(True)
    loss, stats = kto_loss(lp, ref, beta, LABEL)
    assert stats["kto/kl"].item() == 0.0
    expected = ((1 - sig(0.5)) + (1 - sig(-(-1.0)))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert lp.grad[2:].abs().sum().item() == 0.0  # the KL rows only set the reference point
    # d/dh of λ(1 − σ(β(h − z))) is −λβσ'(·): the desirable example's log-prob is pushed up, the other's down
    assert lp.grad[0].item() < 0 < lp.grad[1].item()
    assert lp.grad[0].item() == pytest.approx(-sig(0.5) * (1 - sig(0.5)) / 2, abs=1e-6)


def test_kto_pairs_give_each_row_another_rows_response_as_kl_partner():
    rows = [UnpairedRecord(prompt=f"p{i}", completion=f"c{i}", label=i % 2 == 0, weight=1 + i) for i in range(5)]
    pairs = kto_pairs(rows, seed=3)
    assert [p.chosen for p in pairs] == [r.completion for r in rows]
    assert [p.prompt for p in pairs] == [r.prompt for r in rows]
    assert all(p.rejected != p.chosen for p in pairs)
    assert sorted(p.rejected for p in pairs) == sorted(r.completion for r in rows)  # a permutation
    assert [p.p for p in pairs] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert [p.weight for p in pairs] == [1, 2, 3, 4, 5]
    assert [p.rejected for p in kto_pairs(rows, seed=3)] == [p.rejected for p in pairs]  # fixed: cacheable


# ---------------------------------------------------------------- on a tiny model

def toy_rows(n, seed):
    """test_dpo's toy task, unpaired: even rows keep the kind/safe reply (desirable), odd rows the rude one."""
    return [{"prompt": r["prompt"], "completion": r["chosen"] if i % 2 == 0 else r["rejected"], "label": i % 2 == 0}
            for i, r in enumerate(toy_pairs(n, seed))]


@pytest.fixture(scope="module")
def kto_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kto")
    return write_jsonl(d / "train.jsonl", toy_rows(48, 1)), write_jsonl(d / "eval.jsonl", toy_rows(24, 2))


def cfg(tiny_dir, files, out, **kw):
    """test_dpo's settings (full fine-tuning, 4 steps, lr 1e-3) with the KTO loss."""
    return dpo_cfg(tiny_dir, files, out, **{"loss": "kto", **kw})


def test_one_kto_step_changes_every_trainable_parameter(tiny_dir, kto_files, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dpo(cfg(tiny_dir, kto_files, tmp_path, max_steps=1, max_grad_norm=0.0))
    start = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    stepped = load_file(str(tmp_path / "checkpoints" / "step-000001" / "trainable.safetensors"))
    unchanged = {name for name, w in stepped.items() if torch.equal(w, start[name])}
    assert unchanged <= {"model.embed_tokens.weight"}, unchanged  # rows of absent tokens get no gradient
    row = [r for r in metrics(tmp_path) if "dpo/loss" in r][0]
    # step 1: π_θ = π_ref, so h = 0, z_ref = 0 and every example's loss is λ·(1 − σ(0)) = 0.5
    assert row["dpo/loss"] == pytest.approx(0.5, abs=1e-5)
    assert row["kto/kl"] == pytest.approx(0.0, abs=1e-5)


def test_desirable_logprob_rises_relative_to_the_reference(tiny_dir, kto_files, tmp_path):
    res = run_dpo(cfg(tiny_dir, kto_files, tmp_path, max_steps=30, beta=0.5))
    ev = res.eval
    assert ev["eval/pairs"] == 24
    # held-out: β·(log π_θ − log π_ref) of the desirable replies went up, of the undesirable ones down
    assert ev["eval/rewards_chosen"] > 0 > ev["eval/rewards_rejected"], ev
    assert ev["eval/accuracy"] >= 0.8, ev
    rows = [r for r in metrics(tmp_path) if "dpo/loss" in r]
    assert rows[-1]["dpo/loss"] < rows[0]["dpo/loss"]


def test_adapter_reference_equals_precomputed_for_kto(tiny_dir, kto_files, tmp_path):
    runs = {}
    for ref in ("precompute", "adapter"):
        out = tmp_path / ref
        res = run_dpo(cfg(tiny_dir, kto_files, out, lora_r=4, learning_rate=5e-3, max_steps=3,
                          reference=ref, kto_lambda_d=1.0, kto_lambda_u=1.5))
        runs[ref] = ([r for r in metrics(out) if "dpo/loss" in r], res.eval)
    (a_rows, a_eval), (b_rows, b_eval) = runs["precompute"], runs["adapter"]
    assert a_rows[-1]["kto/kl"] != 0.0 or a_rows[-1]["rewards/margin"] != 0.0  # the adapter moved
    for ra, rb in zip(a_rows, b_rows):
        for k in ("dpo/loss", "kto/kl", "rewards/chosen", "rewards/rejected"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (k, ra, rb)
    assert a_eval["eval/loss"] == pytest.approx(b_eval["eval/loss"], rel=1e-4, abs=1e-5)


def test_kto_refuses_pair_only_settings(tiny_dir, kto_files, tmp_path):
    with pytest.raises(ConfigError, match="kto"):
        run_dpo(cfg(tiny_dir, kto_files, tmp_path, nll_alpha=0.1))
