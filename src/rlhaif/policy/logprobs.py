"""Per-token log-probabilities of the tokens actually present, the quantity PPO, DPO and KL share.

``logprobs[b, t] = log π(x[b, t+1] | x[b, :t+1])`` is aligned to the *predicted* token: the returned tensors
are (B, T-1) and line up with ``input_ids[:, 1:]`` and ``loss_mask[:, 1:]``.
"""

from __future__ import annotations

import torch


def selective_log_softmax(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[labels] without materialising the full (B, T, V) log-softmax twice."""
    if temperature != 1.0:
        logits = logits / temperature
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   return_logits: bool = False):
    """(B, T-1) log-probabilities of ``input_ids[:, 1:]`` under ``model`` at ``temperature``."""
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at the first real token
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False)
    logits = out.logits[:, :-1]  # (B, T-1, V)
    lp = selective_log_softmax(logits, input_ids[:, 1:], temperature)
    return (lp, logits) if return_logits else lp


def sequence_logprob(token_lp: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sum of response-token log-probabilities per sequence, (B,). ``loss_mask`` is (B, T) over input ids."""
    return torch.where(loss_mask[:, 1:].bool(), token_lp, token_lp.new_zeros(())).sum(-1)
