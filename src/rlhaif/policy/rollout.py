"""PPO rollouts: sample one response per prompt from the current policy and lay the batch out for training.

Sampling is the plain softmax at temperature T, no top-k, top-p, min-length or repetition penalty: the
log-probabilities PPO uses for the ratio and the KL must come from the distribution that drew the tokens,
or the KL estimate is biased and can go negative (TRL issue 1857). Our own short decoding loop (KV cache,
stop at EOS, length cap) guarantees that whatever the model's generation_config says.

Layout: ``query_ids`` (B, P) left-padded prompts; ``response_ids`` (B, R) right-padded responses;
``response_mask`` (B, R) 1 on real response tokens (EOS included when reached); ``eos_reached`` (B,)
looks at the response only, never the prompt (TRL issue 6805); ``logprobs`` (B, R) the sampler's own.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from rlhaif.policy.decoder import decoder_for, last_positions
from rlhaif.policy.logprobs import selective_log_softmax
from rlhaif.precision import PrecisionChoice, autocast
from rlhaif.tokens import left_pad


@dataclass
class Rollout:
    query_ids: torch.Tensor  # (B, P) left-padded
    query_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R)
    eos_reached: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor | None = None  # (B, R) fp32 log-probs of the sampler that drew the tokens (0 on pads)

    @property
    def input_ids(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.query_mask, self.response_mask], dim=1)


def rollout_from_ids(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
                     eos_reached: Sequence[bool] | None = None, device=None) -> Rollout:
    """A Rollout from token-id lists sampled elsewhere (vLLM, an evaluation's responses): queries left-padded,
    responses right-padded, the layout ``sample_responses`` builds. ``eos_reached`` defaults to all False."""
    q_ids, q_mask = left_pad(prompt_ids, pad_id, device)
    R = max(1, max(map(len, response_ids)))
    r_ids = torch.full((len(response_ids), R), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(response_ids), R), dtype=torch.long)
    for i, r in enumerate(response_ids):
        r_ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        r_mask[i, :len(r)] = 1
    eos = torch.tensor(list(eos_reached) if eos_reached is not None else [False] * len(response_ids))
    return Rollout(q_ids, q_mask, r_ids.to(device), r_mask.to(device), eos.to(device))


def sample_categorical(probs: torch.Tensor, u: torch.Tensor | None = None, block: int = 256) -> torch.Tensor:
    """One draw per row of ``probs`` (B, V) (unnormalised is fine) by inverting the cumulative distribution:
    token i is drawn when u·Σp falls in [c_{i−1}, c_i), u ~ U[0, 1) (``u`` (B,) float64, one per row; from the
    global stream when None). The same distribution as ``torch.multinomial(probs, 1)`` with one uniform per row
    instead of V exponentials. Two levels, so that no (B, V) float64 copy is made: the sums of blocks of
    ``block`` tokens find the block, a float64 cumulative sum inside that block alone finds the token. The
    block sums' fp32 rounding (~1e-7 of a block's mass) can only move that much mass between the tokens on
    either side of a block boundary; a token of probability 0 is never drawn (``right=True`` moves past an
    empty interval, and the target is kept inside its block's own float64 total)."""
    B, V = probs.shape
    if u is None:
        u = torch.rand(B, dtype=torch.float64)
    pad = -V % block
    p = (torch.nn.functional.pad(probs, (0, pad)) if pad else probs).reshape(B, -1, block)  # (B, V / block, block)
    cb = p.sum(-1).double().cumsum(-1)  # (B, V / block): mass up to the end of each block
    target = u.to(cb.device, torch.float64)[:, None] * cb[:, -1:]  # (B, 1)
    k = torch.searchsorted(cb, target, right=True).clamp_(max=cb.shape[1] - 1)  # (B, 1): the block
    before = torch.where(k > 0, cb.gather(1, (k - 1).clamp(min=0)), torch.zeros_like(target))
    inner = p[torch.arange(B, device=p.device), k[:, 0]].double().cumsum(-1)  # (B, block): inside the block
    t = torch.minimum(target - before, torch.nextafter(inner[:, -1:], torch.zeros_like(target)))
    j = torch.searchsorted(inner, t, right=True).clamp_(max=block - 1)
    return (k * block + j).squeeze(-1).clamp_(max=V - 1)


def row_seed(*key: int) -> int:
    """A 63-bit seed of one row's random stream from integers (the run's seed, a prompt's index, a sample's
    index, a step): a hash, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(repr(tuple(map(int, key))).encode(), digest_size=8).digest(), "little") >> 1


def draw_tokens(logits: torch.Tensor, temperature: float, generators: Sequence[torch.Generator]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B,), their log-probs (B,)) of one draw per row from softmax(logits / T), each row's uniform
    taken from its own generator: which rows share the batch never changes a row's draw. The log-probs are
    log softmax(logits / T) in fp32 at the drawn tokens: the very distribution the draw used, from the same
    LM-head pass."""
    z = logits.float() / temperature  # (B, V)
    m = z.amax(-1, keepdim=True)
    e = (z - m).exp_()  # unnormalised probabilities: the draw scales by their sum itself
    u = torch.cat([torch.rand(1, dtype=torch.float64, generator=g) for g in generators])  # (B,)
    tokens = sample_categorical(e, u)
    return tokens, (z.gather(-1, tokens[:, None]) - m - e.sum(-1, keepdim=True).log()).squeeze(-1)


@torch.no_grad()
def sample_responses(model, prompt_ids: Sequence[Sequence[int]], pad_id: int, eos: Sequence[int],
                     max_new_tokens: int, temperature: float = 1.0, seeds: Sequence[int] | None = None) -> Rollout:
    """Sample one response per prompt with a KV cache, stopping each row at EOS or ``max_new_tokens``.

    Each row draws from its own random stream, a ``torch.Generator`` seeded with ``seeds[i]`` (e.g.
    ``row_seed(seed, prompt index, sample index)``; drawn from the global stream when None), and a row that
    stops leaves the running batch (its KV cache rows dropped): a row's tokens do not depend on which rows
    share its batch or when they stop. ``Rollout.logprobs`` holds the sampler's own fp32 log-probs of the
    drawn tokens.

    ``model`` may be a bf16 copy of the policy (``rlhaif.precision.sampling_copy``): decoding is bound by weight
    reads, which bf16 halves; the softmax and the draw run in fp32 whatever the weights' dtype. The old-policy
    log-probabilities PPO uses come from ``response_logprobs`` under the update's precision, not from here."""
    device = next(model.parameters()).device
    query_ids, query_mask = left_pad(prompt_ids, pad_id, device)
    B = query_ids.shape[0]
    if seeds is None:
        seeds = torch.randint(0, 2**62, (B,)).tolist()
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    eos_t = torch.tensor(list(eos), device=device)
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (B, R), trimmed at the end
    logprobs = torch.zeros((B, max_new_tokens), device=device)
    mask = torch.zeros((B, max_new_tokens), dtype=torch.long, device=device)
    eos_reached = torch.zeros(B, dtype=torch.bool, device=device)
    live = torch.arange(B, device=device)  # the original rows still running, in batch order
    decoder = decoder_for(model)
    logits, steps = decoder.start(query_ids, query_mask, max_new_tokens), 0
    for t in range(max_new_tokens):
        nxt, lp = draw_tokens(logits, temperature, [generators[i] for i in live.tolist()])  # (b,)
        tokens[live, t], logprobs[live, t], mask[live, t] = nxt, lp, 1
        stop = torch.isin(nxt, eos_t)
        eos_reached[live] = stop
        steps = t + 1
        if t + 1 == max_new_tokens or bool(stop.all()):
            break
        if bool(stop.any()):  # finished rows leave the batch: no more compute on them
            keep = (~stop).nonzero().squeeze(-1)
            live, nxt = live[keep], nxt[keep]
            decoder.keep(keep)
        logits = decoder.step(nxt)
    return Rollout(query_ids, query_mask, tokens[:, :steps], mask[:, :steps], eos_reached,
                   logprobs[:, :steps])


def response_logprobs(model, rollout: Rollout, temperature: float, precision: PrecisionChoice | None = None
                      ) -> torch.Tensor:
    """(B, R) log π(response token | prefix) at temperature T: the same ``selective_log_softmax`` as
    ``token_logprobs``, with only the response positions sent through the LM head (saves (B, P, V)).
    ``precision``: run under ``rlhaif.precision.autocast`` (bf16 products), as the update must then too, so
    that PPO's first ratio is 1."""
    R = rollout.response_ids.shape[1]
    ids, attn = rollout.input_ids, rollout.attention_mask
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with autocast(precision) if precision is not None else contextlib.nullcontext():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                       logits_to_keep=last_positions(ids.shape[1], R + 1, ids.device)).logits[:, :-1]  # (B, R, V): position P-1+t predicts response token t
    return selective_log_softmax(logits.float(), rollout.response_ids, temperature)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    return [tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=True).strip()
            for ids, mask in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist())]


__all__ = ["Rollout", "rollout_from_ids", "last_positions", "sample_categorical", "row_seed", "draw_tokens", "sample_responses", "response_logprobs", "decode_responses"]
