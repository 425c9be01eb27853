"""Tokenize (prompt, response) for training, with the chat template and a loss mask.

One function used by SFT, DPO, the causal reward model and PPO's re-scoring, so that every stage sees the
same tokens for the same text.

Shapes: ``input_ids``, ``attention_mask``, ``loss_mask`` are (B, T), input-aligned; ``loss_mask[b, t] = 1``
where token t belongs to the response (the tokens whose log-probability is learned or scored). (PPO's
``response_mask`` is another thing: (B, R), aligned with the response tokens alone.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rlhaif.data.records import Prompt, as_messages, prompt_text


@dataclass
class Encoded:
    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids


def encode_prompt_response(tokenizer, prompt: Prompt, response: str, max_length: int | None = None,
                           add_eos: bool = True) -> Encoded:
    """Prompt ids (chat template + generation prompt, or plain text) and response ids (+ EOS).

    Over ``max_length``: the prompt is cut from the left first (keep the latest turns), then the
    response from the right."""
    if getattr(tokenizer, "chat_template", None):
        p_ids = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=True)
        if hasattr(p_ids, "keys"):
            p_ids = p_ids["input_ids"]
        p_ids = list(p_ids)
    else:
        p_ids = tokenizer(prompt_text(prompt), add_special_tokens=True)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        r_ids = r_ids + [tokenizer.eos_token_id]
    if max_length is not None and len(p_ids) + len(r_ids) > max_length:
        keep_prompt = max(max_length // 2, max_length - len(r_ids))
        p_ids = p_ids[-keep_prompt:]
        r_ids = r_ids[: max_length - len(p_ids)]
    return Encoded(p_ids, r_ids)


def pad_batch(encoded: Sequence[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, loss_mask (all (B, T)), padded on ``side``."""
    T = max(len(e.input_ids) for e in encoded)
    B = len(encoded)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    resp = torch.zeros((B, T), dtype=torch.long)
    for i, e in enumerate(encoded):
        n, np_ = len(e.input_ids), len(e.prompt_ids)
        off = 0 if side == "right" else T - n
        ids[i, off:off + n] = torch.tensor(e.input_ids)
        attn[i, off:off + n] = 1
        resp[i, off + np_:off + n] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": resp}
