"""sample_responses against a plain reference: no KV cache, the whole sequence re-run at every step.

Same seed, same draws (one uniform per row and step): the sampler must return the same tokens, masks and EOS
flags as the reference on a tiny Llama with left-padded prompts of different lengths, in fp32 and from a bf16
sampling copy (the reference then runs on the same bf16 copy)."""

import pytest
import torch

from rlhaif.models.tiny import make_tiny_causal_lm
from rlhaif.policy.rollout import sample_categorical, sample_responses
from rlhaif.precision import PrecisionChoice, sampling_copy

PAD = 0


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    pass


@torch.no_grad()
def reference_sample(model, prompts, eos, max_new_tokens, temperature):
    """Row by row semantics of the sampler, written the slow way: full forward each step, no cache."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (P - len(p)) + list(p) for p in prompts])
    attn = (torch.arange(P)[None] >= torch.tensor([P - len(p) for p in prompts])[:, None]).long()
    B = len(prompts)
    done = torch.zeros(B, dtype=torch.bool)
    toks, masks = [], []
    for _ in range(max_new_tokens):
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits[:, -1]
        nxt = sample_categorical(torch.softmax(logits.float() / temperature, dim=-1))
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        toks.append(nxt)
        masks.append((~done).long())
        done = done | torch.isin(nxt, torch.tensor(eos))
        if bool(done.all()):
            break
        ids = torch.cat([ids, nxt[:, None]], 1)
        attn = torch.cat([attn, torch.ones(B, 1, dtype=attn.dtype)], 1)
    return torch.stack(toks, 1), torch.stack(masks, 1), done


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sampler_draws_what_the_no_cache_reference_draws(dtype):
    lm, tok = make_tiny_causal_lm("llama")
    lm.eval()
    model = sampling_copy(lm, PrecisionChoice(dtype, "test", "cpu", "test"))
    prompts = [[4, 9, 12, 15, 20], [5, 6], [7, 8, 9], [30, 31, 32, 33]]
    eos = [tok.eos_token_id, 11, 13, 17]  # a few frequent tokens as EOS so that some rows stop early
    for seed in range(3):
        torch.manual_seed(seed)
        ro = sample_responses(model, prompts, PAD, eos, max_new_tokens=12, temperature=0.8)
        torch.manual_seed(seed)
        ids, mask, done = reference_sample(model, prompts, eos, 12, 0.8)
        assert torch.equal(ro.response_ids, ids), (seed, ro.response_ids, ids)
        assert torch.equal(ro.response_mask, mask) and torch.equal(ro.eos_reached, done)


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
