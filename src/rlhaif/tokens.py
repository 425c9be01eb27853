"""Token building blocks every sampler and scorer shares: prompts to token ids (chat template applied),
left padding, and the EOS ids of a tokenizer and model.

Its own module so that the generate stage, rlhaif's sampler (``rlhaif.policy.rollout``) and the vLLM engine
import it without importing one another (they used to live in ``rlhaif.generate``: a generate ↔ rollout ↔
engines.vllm_engine cycle).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlhaif.data.records import Prompt, as_messages, prompt_text
from rlhaif.errors import RlhaifError


def encode_prompts(tokenizer, prompts: Sequence[Prompt], max_prompt_length: int | None = None,
                   truncate: bool = False) -> list[list[int]]:
    """Token ids of each prompt with the chat template's generation prompt appended (plain text when the
    tokenizer has no chat template). Too-long prompts are an error, or left-truncated when ``truncate``."""
    out = []
    for i, p in enumerate(prompts):
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(as_messages(p), add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(prompt_text(p), add_special_tokens=True)["input_ids"]
        ids = list(ids)
        if max_prompt_length and len(ids) > max_prompt_length:
            if not truncate:
                raise RlhaifError(f"prompt {i} is {len(ids)} tokens, longer than max_prompt_length="
                                  f"{max_prompt_length}; raise max_prompt_length or shorten the prompt")
            ids = ids[-max_prompt_length:]
        out.append(ids)
    return out


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left so generation continues each row."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s):] = 1
    return ids.to(device), mask.to(device)


def eos_ids(tokenizer, model=None) -> list[int]:
    """The token ids a response stops at: the tokenizer's EOS and the model's generation_config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        ids.update([gc.eos_token_id] if isinstance(gc.eos_token_id, int) else gc.eos_token_id)
    return sorted(ids)
