"""The sampler's static-cache decoder against the model's own forward: the same logits, in fp32, at the prefill
and at every decode step, on left-padded prompts of different lengths, with rows leaving the batch midway; with
biases (Qwen2) and LoRA layers (PEFT) inside the projections; other architectures keep transformers' cache."""

import pytest
import torch

from rlhaif.models.tiny import make_tiny_causal_lm
from rlhaif.policy.decoder import HFCacheDecoder, StaticCacheDecoder, decoder_for, static_cache_supported
from rlhaif.tokens import left_pad

PAD = 0
PROMPTS = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33]]


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    pass


def lora(model):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.2)  # B starts at 0: make the adapter change the outputs
    return peft


def full_forward_last(model, ids, attn):
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits[:, -1]


@pytest.mark.parametrize("arch,adapter", [("llama", False), ("qwen2", False), ("llama", True)])
@torch.no_grad()
def test_static_cache_decoder_gives_the_models_logits(arch, adapter):
    model, _ = make_tiny_causal_lm(arch)
    model = lora(model) if adapter else model
    model.eval()
    dec = decoder_for(model)
    assert isinstance(dec, StaticCacheDecoder)
    ids, attn = left_pad(PROMPTS, PAD)
    logits = dec.start(ids, attn, max_new_tokens=6)
    ref = full_forward_last(model, ids, attn)
    assert ref.abs().max() > 0.1 and (logits - ref).abs().max() < 1e-5
    g = torch.Generator().manual_seed(0)
    for t in range(6):
        nxt = torch.randint(10, 40, (len(ids),), generator=g)
        ids = torch.cat([ids, nxt[:, None]], 1)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        if t == 2:  # rows 0 and 2 finish: the others go on alone
            keep = torch.tensor([1, 3])
            dec.keep(keep)
            ids, attn, nxt = ids[keep], attn[keep], nxt[keep]
        logits = dec.step(nxt)
        ref = full_forward_last(model, ids, attn)
        assert (logits - ref).abs().max() < 1e-5, t


def test_the_decoder_is_chosen_by_architecture():
    gpt2, _ = make_tiny_causal_lm("gpt2")
    llama, _ = make_tiny_causal_lm("llama")
    assert not static_cache_supported(gpt2) and isinstance(decoder_for(gpt2), HFCacheDecoder)
    assert static_cache_supported(llama) and static_cache_supported(lora(llama))
    qwen, _ = make_tiny_causal_lm("qwen2")
    qwen.config.layer_types = ["sliding_attention"] * qwen.config.num_hidden_layers
    assert not static_cache_supported(qwen)  # a sliding window: transformers' own cache


@torch.no_grad()
def test_a_prompt_on_several_rows_is_prefilled_once_and_each_row_goes_its_own_way():
    model, _ = make_tiny_causal_lm("llama")
    model.eval()
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[2], PROMPTS[2]]
    ids, attn = left_pad(prompts, PAD)
    dec = decoder_for(model)
    calls = []
    prefill = dec.prefill
    dec.prefill = lambda q, m, n: calls.append(len(q)) or prefill(q, m, n)
    logits = dec.start(ids, attn, max_new_tokens=3)
    assert calls == [3] and logits.shape[0] == 6  # three distinct prompts run, six rows come back
    assert (logits - full_forward_last(model, ids, attn)).abs().max() < 1e-5
    for t in range(3):  # different tokens on the rows of one prompt: their caches must not be shared
        nxt = torch.tensor([10, 11, 12, 13, 14, 15]) + t
        ids, attn = torch.cat([ids, nxt[:, None]], 1), torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        assert (dec.step(nxt) - full_forward_last(model, ids, attn)).abs().max() < 1e-5, t


@torch.no_grad()
def test_a_packed_group_of_lora_layers_computes_what_peft_computes():
    """q/k/v as one packed product with their adapters (A's stacked, B's block-diagonal, each scaled) against the
    three bf16 PEFT layers' own forwards."""
    from rlhaif.policy.decoder import PackedLinear, onednn_bf16
    from rlhaif.precision import PrecisionChoice, sampling_copy

    if not onednn_bf16():
        pytest.skip("no oneDNN bf16 kernels on this CPU")
    model, _ = make_tiny_causal_lm("qwen2")  # q/k/v with biases
    peft = lora(model).eval()
    peft.base_model.model.model.layers[0].self_attn.k_proj.scaling["default"] = 0.5  # each B block: its own scale
    cp = sampling_copy(peft, PrecisionChoice("bfloat16", "test", "cpu", "test"))
    attn = cp.base_model.model.model.layers[0].self_attn
    x = torch.randn(8, 64).bfloat16()
    got = PackedLinear([attn.q_proj, attn.k_proj, attn.v_proj], 8)(x)
    base = PackedLinear([attn.q_proj.get_base_layer(), attn.k_proj.get_base_layer(), attn.v_proj.get_base_layer()], 8)(x)
    for g, b, layer in zip(got, base, (attn.q_proj, attn.k_proj, attn.v_proj)):
        ref = layer(x).float()
        err = (g.float() - ref).abs().max()
        assert err < 0.02 * ref.abs().max() and (g.float() - b.float()).abs().max() > 10 * err


@torch.no_grad()
def test_the_packed_decoder_on_a_bf16_lora_copy_gives_the_copys_own_logits():
    from rlhaif.policy.decoder import packable
    from rlhaif.precision import PrecisionChoice, sampling_copy

    model, _ = make_tiny_causal_lm("llama")
    cp = sampling_copy(lora(model).eval(), PrecisionChoice("bfloat16", "test", "cpu", "test"))
    if not packable(cp):
        pytest.skip("no oneDNN bf16 kernels on this CPU")
    ids, attn = left_pad(PROMPTS, PAD)
    dec = decoder_for(cp)
    dec.start(ids, attn, max_new_tokens=2)
    assert dec.packed and dec.layers is not dec.modules
    nxt = torch.tensor([10, 11, 12, 13])
    got = dec.step(nxt).float()
    ref = full_forward_last(cp, torch.cat([ids, nxt[:, None]], 1), torch.cat([attn, torch.ones_like(attn[:, :1])], 1))
    with cp.disable_adapter():
        no_lora = full_forward_last(cp, torch.cat([ids, nxt[:, None]], 1),
                                    torch.cat([attn, torch.ones_like(attn[:, :1])], 1)).float()
    err = (got - ref.float()).abs().max()
    assert err < 0.05 * ref.float().abs().max() and (got - no_lora).abs().max() > 5 * err  # the adapters count
