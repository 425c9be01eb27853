"""rlhaif.precision: the bf16/fp32 choice, and bf16 results against fp32 within stated tolerances.

Tolerances (tiny Llama, hidden 64, random weights; bf16 keeps 8 mantissa bits, a relative step of 2^-8 ≈ 0.4 %):
a loss or a reward score within 2 % (relative) or 0.02 (absolute); per-token log-probs within 0.05 nats.
PPO's first-minibatch ratio exp(new − old) is 1 within 1e-3 when the rollout's old log-probs and the update's
new ones run in the same precision, and is shown to miss that bound when they do not.
"""

import pytest
import torch

from rlhaif.errors import ConfigError
from rlhaif.models.tiny import make_tiny_causal_lm, make_tiny_reward_model
from rlhaif.policy.losses import policy_loss
from rlhaif.policy.ppo import forward_response
from rlhaif.policy.rollout import response_logprobs, sample_responses
from rlhaif.policy.value_head import ActorCritic
from rlhaif.precision import (PrecisionChoice, autocast, choose_precision, cpu_flags, cpu_has_native_bf16,
                              sampling_copy)

BF16 = PrecisionChoice("bfloat16", "bf16", "cpu", "test")
FP32 = PrecisionChoice("float32", "fp32", "cpu", "test")


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    pass


# ---------------------------------------------------------------------------------------------- the choice


def test_auto_picks_bf16_only_with_native_bf16_and_a_measured_gain():
    c = choose_precision("auto", flags={"avx2", "avx512f", "avx512_bf16"}, speedup=2.4)
    assert (c.dtype, c.native_bf16, c.measured_speedup) == ("bfloat16", True, 2.4)
    assert choose_precision("auto", flags={"avx2", "amx_bf16"}, speedup=3.0).is_bf16
    # no native bf16: fp32 whatever a measurement would say (oneDNN emulates through fp32)
    c = choose_precision("auto", flags={"avx2", "avx512f"}, speedup=5.0)
    assert (c.dtype, c.native_bf16, c.measured_speedup) == ("float32", False, None)
    # native but not measured faster (by at least min_speedup): fp32, and the reason says so
    c = choose_precision("auto", flags={"avx512_bf16"}, speedup=1.1)
    assert c.dtype == "float32" and "1.10x" in c.reason
    # auto never picks bf16 off the CPU; an explicit request is obeyed anywhere
    assert choose_precision("auto", "cuda", flags={"amx_bf16"}, speedup=3.0).dtype == "float32"
    assert choose_precision("bf16", flags=set()).torch_dtype == torch.bfloat16
    assert choose_precision("fp32", flags={"amx_bf16"}, speedup=3.0).torch_dtype == torch.float32


def test_choice_goes_into_the_manifest_as_plain_json():
    import json

    m = choose_precision("auto", flags={"avx512_bf16"}, speedup=2.0).as_manifest()
    assert json.loads(json.dumps(m)) == {"dtype": "bfloat16", "requested": "auto", "device": "cpu",
                                         "reason": "native bf16, matmul measured 2.00x fp32", "native_bf16": True,
                                         "measured_speedup": 2.0}


def test_bad_request_is_one_clear_message():
    with pytest.raises(ConfigError, match="precision: 'half' is not one of auto, fp32, bf16"):
        choose_precision("half")


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\nbogomips\t: 5199\n")
    assert cpu_flags(f) == {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_tile"}
    assert cpu_has_native_bf16(cpu_flags(f))
    assert not cpu_has_native_bf16({"avx2", "avx512f"})
    assert cpu_flags(tmp_path / "missing") == set()


# ---------------------------------------------------------------------------------------------- bf16 vs fp32


def _batch(vocab: int, B: int = 8, P: int = 6, R: int = 5):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(7, vocab, (B, P + R), generator=g)
    attn = torch.ones_like(ids)
    attn[: B // 2, :2] = 0  # left padding on half the rows
    return {"input_ids": ids, "attention_mask": attn, "response_ids": ids[:, P:]}


def test_token_loss_and_reward_score_in_bf16_match_fp32():
    lm = make_tiny_causal_lm("llama")[0].eval()
    b = _batch(lm.config.vocab_size)
    with torch.no_grad():
        loss32 = lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"]).loss
        with autocast(BF16):
            loss16 = lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"]).loss
        assert loss16.dtype == torch.float32  # autocast: the loss itself is computed in fp32
        assert float(loss16) == pytest.approx(float(loss32), rel=0.02)
        rm = make_tiny_reward_model("llama")[0].eval()
        s32 = rm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.squeeze(-1)
        with autocast(BF16):
            s16 = rm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.squeeze(-1).float()
    assert torch.allclose(s16, s32, rtol=0.02, atol=0.02), (s16, s32)
    assert not torch.equal(s16, s32)  # autocast did run the products in bf16


def test_ppo_first_minibatch_in_bf16_matches_fp32_and_its_ratio_is_one():
    torch.manual_seed(0)
    model = ActorCritic(make_tiny_causal_lm("llama")[0]).eval()
    b = _batch(model.policy.config.vocab_size)
    T = 0.7
    mb_idx = torch.tensor([5, 0, 3, 6])  # a shuffled minibatch, as in run_ppo
    mb = {k: v[mb_idx] for k, v in b.items()}
    mask = torch.ones(len(mb_idx), b["response_ids"].shape[1])
    adv = torch.linspace(-1, 1, mask.numel()).reshape(mask.shape)
    with torch.no_grad():
        old32, val32, _ = forward_response(model, b, T)
        with autocast(BF16):
            old16, val16, _ = forward_response(model, b, T)  # the rollout's pass, whole batch
    new16, nval16, _ = _grad_pass(model, mb, T, BF16)
    new32, _, _ = _grad_pass(model, mb, T, FP32)
    # bf16 against fp32: log-probs and values within tolerance, the first minibatch's loss too
    assert (old16 - old32).abs().max() < 0.05 and (val16 - val32).abs().max() < 0.02
    loss16, st16 = policy_loss(new16, old16[mb_idx], adv, mask, 0.2)
    loss32, st32 = policy_loss(new32, old32[mb_idx], adv, mask, 0.2)
    assert float(loss16.detach()) == pytest.approx(float(loss32.detach()), abs=0.02)
    # same precision for rollout and update: the first ratio is 1 (no clipping, zero approximate KL)
    ratio16 = (new16.detach() - old16[mb_idx]).exp()
    assert (ratio16 - 1).abs().max() < 1e-3, ratio16
    assert float(st16["clipfrac"]) == 0.0
    assert ((new32.detach() - old32[mb_idx]).exp() - 1).abs().max() < 1e-5
    # mixed (fp32 rollout, bf16 update): the ratio misses 1 by more than the bound above
    assert ((new16.detach() - old32[mb_idx]).exp() - 1).abs().max() > 1e-3


def _grad_pass(model, mb, T, choice):
    with autocast(choice):
        return forward_response(model, mb, T)


def test_response_logprobs_under_autocast_match_the_update_pass():
    # response_logprobs (the reference / old-policy pass of the rollout) and forward_response (the update)
    # agree in bf16 when both run under the same autocast
    lm = make_tiny_causal_lm("llama")[0].eval()
    ro = sample_responses(lm, [[4, 9, 12], [5, 6]], 0, [3], max_new_tokens=5, temperature=0.7)
    with torch.no_grad(), autocast(BF16):
        lp = response_logprobs(lm, ro, 0.7)
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "response_ids": ro.response_ids}
        lp2, _, _ = forward_response(ActorCritic(lm), batch, 0.7)
    m = ro.response_mask.bool()
    assert (lp - lp2)[m].abs().max() < 1e-3


def test_sampling_copy_is_bf16_and_refreshes_from_the_master():
    lm = make_tiny_causal_lm("llama")[0]
    assert sampling_copy(lm, FP32) is lm
    cp = sampling_copy(lm, BF16)
    assert cp is not lm and {p.dtype for p in cp.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in cp.parameters())
    assert {p.dtype for p in lm.parameters()} == {torch.float32}  # the master stays fp32
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.5)
    again = sampling_copy(lm, BF16, into=cp)
    assert again is cp
    for (n, p), q in zip(lm.named_parameters(), cp.parameters()):
        assert torch.equal(q, p.detach().to(torch.bfloat16)), n
    # a sample from the bf16 copy has the rollout layout of the fp32 model's
    ro = sample_responses(cp, [[4, 9, 12], [5, 6]], 0, [3], max_new_tokens=4, temperature=1.0)
    assert ro.response_ids.shape[0] == 2 and ro.response_ids.dtype == torch.long


def test_the_sampling_copy_of_a_lora_model_keeps_its_adapters_and_follows_them():
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear

    peft = get_peft_model(make_tiny_causal_lm("llama")[0],
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    cp = sampling_copy(peft, BF16)
    assert any(isinstance(m, LoraLinear) for m in cp.modules())  # not merged: a small ΔW survives bf16
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    sampling_copy(peft, BF16, into=cp)
    for (n, p), q in zip(peft.named_parameters(), cp.parameters()):
        assert torch.equal(q, p.detach().to(torch.bfloat16)), n


def test_measuring_the_bf16_speedup_leaves_the_global_random_stream_alone():
    # the measurement runs once per process, inside the first stage that asks for 'auto' (after that stage has
    # seeded torch): drawing its matrices from the global stream made a process's first PPO run sample other
    # tokens than a second run with the same seed
    from rlhaif.precision import measured_bf16_speedup

    measured_bf16_speedup.cache_clear()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    measured_bf16_speedup()
    assert torch.equal(torch.get_rng_state(), state)
