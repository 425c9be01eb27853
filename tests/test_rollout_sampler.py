"""sample_responses against a plain reference: no KV cache, no finished rows dropped, the whole sequence re-run
at every step.

Same per-row seeds, same draws (one uniform per row and step from the row's own stream): the sampler must
return the same tokens, masks, EOS flags and log-probs as the reference on a tiny Llama with left-padded prompts
of different lengths, in fp32 and from a bf16 sampling copy (the reference then runs on the same bf16 copy).
A row's tokens do not depend on its batch; the sampler's log-probs are the policy's."""

import pytest
import torch

from rlhaif.models.tiny import make_tiny_causal_lm
from rlhaif.policy.rollout import draw_tokens, response_logprobs, row_seed, sample_categorical, sample_responses
from rlhaif.precision import PrecisionChoice, sampling_copy

PAD = 0


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    pass


@torch.no_grad()
def reference_sample(model, prompts, eos, max_new_tokens, temperature, seeds):
    """Row by row semantics of the sampler, written the slow way: full forward each step, no cache, every row
    (finished ones too) in the batch and drawing from its own generator."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (P - len(p)) + list(p) for p in prompts])
    attn = (torch.arange(P)[None] >= torch.tensor([P - len(p) for p in prompts])[:, None]).long()
    B = len(prompts)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    done = torch.zeros(B, dtype=torch.bool)
    toks, masks, lps = [], [], []
    for _ in range(max_new_tokens):
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits[:, -1]
        nxt, lp = draw_tokens(logits, temperature, gens)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        toks.append(nxt)
        lps.append(torch.where(done, torch.zeros_like(lp), lp))
        masks.append((~done).long())
        done = done | torch.isin(nxt, torch.tensor(eos))
        if bool(done.all()):
            break
        ids = torch.cat([ids, nxt[:, None]], 1)
        attn = torch.cat([attn, torch.ones(B, 1, dtype=attn.dtype)], 1)
    return torch.stack(toks, 1), torch.stack(masks, 1), done, torch.stack(lps, 1)


@pytest.mark.parametrize("arch,dtype", [("llama", "float32"), ("qwen2", "float32"), ("gpt2", "float32"),
                                        ("gpt2", "bfloat16")])
def test_sampler_draws_what_the_no_cache_reference_draws(arch, dtype):
    """llama and qwen2 run the static-cache decoder, gpt2 transformers' cache. In bf16 the static-cache decoder
    rounds differently from the model's own forward (its decode attention is two products and an fp32 softmax),
    so a draw at a boundary may differ: its bf16 case is the next test."""
    lm, tok = make_tiny_causal_lm(arch)
    lm.eval()
    model = sampling_copy(lm, PrecisionChoice(dtype, "test", "cpu", "test"))
    prompts = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33]]
    eos = [tok.eos_token_id, 11, 13, 17]  # a few frequent tokens as EOS so that some rows stop early
    for seed in range(3):
        seeds = [row_seed(seed, i) for i in range(len(prompts))]
        ro = sample_responses(model, prompts, PAD, eos, max_new_tokens=12, temperature=0.8, seeds=seeds)
        ids, mask, done, lp = reference_sample(model, prompts, eos, 12, 0.8, seeds)
        assert torch.equal(ro.response_ids, ids), (seed, ro.response_ids, ids)
        assert torch.equal(ro.response_mask, mask) and torch.equal(ro.eos_reached, done)
        assert (ro.logprobs - lp).abs().max() < (1e-5 if dtype == "float32" else 0.02)  # bf16 logits: 2^-8


def test_bf16_static_cache_logprobs_are_the_bf16_models_of_the_same_tokens():
    """Honest draws from the bf16 copy: the log-probs the static-cache sampler reports are the bf16 model's own
    forward of the same tokens (teacher-forced) up to bf16 rounding."""
    lm, tok = make_tiny_causal_lm("llama")
    with torch.no_grad():  # sharper logits (std ~1.4 of a log-prob): a wrong position or mask moves them by 0.9-3.6
        for p in lm.parameters():
            if p.dim() == 2:
                p.mul_(8)
    model = sampling_copy(lm.eval(), PrecisionChoice("bfloat16", "test", "cpu", "test"))
    prompts = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33]]
    ro = sample_responses(model, prompts, PAD, [tok.eos_token_id, 11, 13, 17], 12, 0.8,
                          seeds=[row_seed(5, i) for i in range(len(prompts))])
    with torch.no_grad():
        lp = response_logprobs(model, ro, 0.8)
    m = ro.response_mask.bool()
    assert m.sum() > 20 and (ro.logprobs - lp)[m].abs().max() < 0.15  # measured 0.04: bf16 rounding


def _rows_stopping_at_different_lengths(model, tok, prompts, seeds):
    eos = [tok.eos_token_id, 11, 13, 17]
    ro = sample_responses(model, prompts, PAD, eos, max_new_tokens=12, temperature=0.8, seeds=seeds)
    lengths = ro.response_mask.sum(1).tolist()
    return ro, eos, lengths


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_rows_tokens_do_not_depend_on_its_batch_or_when_the_others_stop(dtype):
    """Finished rows leave the running batch and each row draws from its own stream: each row of a batch whose
    rows stop at different lengths is what that row sampled alone with its seed gives."""
    lm, tok = make_tiny_causal_lm("llama")
    lm.eval()
    model = sampling_copy(lm, PrecisionChoice(dtype, "test", "cpu", "test"))
    prompts = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33], [5, 6], [40, 41]]
    seeds = [row_seed(7, i // 2, i % 2) for i in range(len(prompts))]  # (seed, prompt, sample)
    ro, eos, lengths = _rows_stopping_at_different_lengths(model, tok, prompts, seeds)
    assert len(set(lengths)) >= 3 and min(lengths) < 12 and ro.eos_reached.any() and not ro.eos_reached.all()
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        alone = sample_responses(model, [p], PAD, eos, max_new_tokens=12, temperature=0.8, seeds=[s])
        n = lengths[i]
        assert alone.response_ids[0].tolist()[:alone.response_mask[0].sum()] == ro.response_ids[i, :n].tolist(), i
        assert bool(alone.eos_reached[0]) == bool(ro.eos_reached[i])
    # the same rows in another order and another company: the same tokens row by row
    order = [3, 0, 5, 1]
    other = sample_responses(model, [prompts[i] for i in order], PAD, eos, 12, 0.8, seeds=[seeds[i] for i in order])
    for k, i in enumerate(order):
        assert other.response_ids[k, :lengths[i]].tolist() == ro.response_ids[i, :lengths[i]].tolist()


@pytest.mark.parametrize("arch,adapter", [("llama", False), ("qwen2", False), ("gpt2", False), ("llama", True)])
def test_the_samplers_logprobs_are_the_policys_in_fp32(arch, adapter):
    """Honest draws: the fp32 log-probs the sampler reports for its tokens are the policy's recomputed ones
    (``response_logprobs``, one full forward) within 1e-5 — static-cache decoder (llama, qwen2, a LoRA policy)
    and transformers' cache (gpt2)."""
    lm, tok = make_tiny_causal_lm(arch)
    if adapter:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
        with torch.no_grad():
            for n, p in lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    lm.eval()
    prompts = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33]]
    ro, _, _ = _rows_stopping_at_different_lengths(lm, tok, prompts, [row_seed(3, i) for i in range(4)])
    with torch.no_grad():
        lp = response_logprobs(lm, ro, 0.8)
    m = ro.response_mask.bool()
    assert ro.logprobs.dtype == torch.float32 and (ro.logprobs[~m] == 0).all()
    assert (ro.logprobs - lp)[m].abs().max() < 1e-5


def test_response_logprobs_with_index_positions_equal_the_slice_form():
    from rlhaif.policy.ppo import forward_response
    from rlhaif.policy.rollout import last_positions, response_logprobs
    from rlhaif.policy.value_head import ActorCritic

    assert last_positions(7, 3).tolist() == [4, 5, 6]
    lm, _ = make_tiny_causal_lm("llama")
    lm.eval()
    ro = sample_responses(lm, [[4, 9, 12], [5, 6]], PAD, [3], max_new_tokens=5, temperature=0.7)
    with torch.no_grad():
        lp = response_logprobs(lm, ro, 0.7)  # logits_to_keep as an index tensor
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "response_ids": ro.response_ids}
        lp_slice, _, _ = forward_response(ActorCritic(lm), batch, 0.7)  # logits_to_keep=R + 1 (an int)
    m = ro.response_mask.bool()
    assert (lp - lp_slice)[m].abs().max() < 1e-5


def test_the_two_level_draw_inverts_the_whole_cumulative_distribution_across_block_boundaries():
    """The block-then-token draw gives, for every u, the token the flat float64 cumulative sum over the whole
    vocabulary gives; empty tokens on either side of a block boundary (255 | 256, 511 | 512) are never drawn,
    not even for u on a boundary exactly."""
    V = 1024
    p = torch.zeros(2, V)
    p[:, [254, 257, 511, 1023]] = torch.tensor([0.25, 0.25, 0.25, 0.25])
    p[1] *= 3.0  # unnormalised rows are fine
    u = torch.arange(4000, dtype=torch.float64) / 4000  # 0, 0.25, 0.5, 0.75 exactly among them
    for row in p:
        got = sample_categorical(row.expand(4000, V).contiguous(), u, block=256)
        c = row.double().cumsum(-1)
        flat = torch.searchsorted(c, (u * c[-1])[:, None], right=True).squeeze(-1)
        assert torch.equal(got, flat)
        assert torch.bincount(got, minlength=V)[[254, 257, 511, 1023]].tolist() == [1000] * 4
