"""The critic: a scalar value head on the policy's last hidden state (shared trunk: one forward gives the
logits and the values), or a separate value model (its own trunk, same architecture) by choice.

``ActorCritic`` holds both so Accelerate wraps, synchronises and checkpoints them as one module.
Shapes: ``forward`` returns logits (B, T, V) and values (B, T) over the whole input; PPO slices the
response part.
"""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """Linear(hidden → 1), zero-initialised bias and small weights so the first values are near 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.summary.weight, std=1.0 / (hidden_size + 1) ** 0.5 * 0.1)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def hidden_size_of(model) -> int:
    cfg = model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError("cannot find the hidden size in the model config")


class ActorCritic(nn.Module):
    """``policy`` (a causal LM, maybe a PEFT model) + ``value_head``; ``value_model`` is an optional separate
    trunk (a causal LM's base model, without its LM head, whose last hidden state feeds the head instead of the
    policy's)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.value_head = ValueHead(hidden_size_of(value_model if value_model is not None else policy))
        dtype = next(policy.parameters()).dtype
        self.value_head.to(device=next(policy.parameters()).device, dtype=torch.float32 if dtype == torch.float16 else dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0,
                with_values: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, K, V), values (B, K)) for the last ``logits_to_keep`` positions (0 = all);
        ``with_values=False`` (critic-free estimators) skips the critic and returns values None."""
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding
        kw = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False)
        out = self.policy(**kw, output_hidden_states=with_values and self.value_model is None,
                          logits_to_keep=logits_to_keep)
        logits = out.logits  # only the last K positions reach the LM head: (B, K, V), not (B, T, V)
        if not with_values:
            return logits, None
        if self.value_model is None:
            hidden = out.hidden_states[-1]
        else:
            hidden = self.value_model(**kw).last_hidden_state  # a trunk without an LM head (see run_ppo)
        values = self.value_head(hidden)
        if logits_to_keep:
            values = values[:, -logits_to_keep:]
        return logits, values
