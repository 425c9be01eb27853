"""`rlhaif sft`: supervised fine-tuning on demonstrations, cross-entropy on response tokens only.

The loop reads top to bottom: load demonstrations -> tokenize with the chat template (prompt masked) ->
``rlhaif.training.train_steps`` (micro-batches through ``sft_loss`` -> backward -> clip -> step -> log ->
checkpoint) -> ``save_pretrained`` (full model, LoRA adapter, or adapter merged into the base).

Loss normalization: the summed token NLL of every micro-batch is divided by the number of response tokens
in the whole optimizer step, so k accumulated micro-batches give the same gradient as one batch k times
larger. Data order is a seeded permutation per epoch; a resumed run skips exactly the consumed batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from rlhaif.config import LoRAConfig, TrainLoopConfig
from rlhaif.data.collate import Encoded
from rlhaif.training import TrainResult

IGNORE = -100


class SFTConfig(TrainLoopConfig, LoRAConfig):
    """Settings of `rlhaif sft`."""

    model: str = "smollm2-135m-instruct"
    """Base causal LM: a folder, a .gguf file or a built-in name."""
    data: str
    """Demonstrations JSONL: {"prompt", "response"} or {"messages": [..., assistant]} per line."""
    output_dir: str = "runs/sft"
    """Where the fine-tuned model (or adapter), checkpoints/ and metrics.jsonl go."""
    max_length: int = 512
    """Tokens per example; longer ones lose prompt tokens from the left first, then response tokens."""
    batch_size: int = 8
    """Examples per micro-batch."""
    learning_rate: float = 2e-5
    """Peak AdamW learning rate (linear warm-up, then linear decay to 0); LoRA likes ~1e-4."""
    max_grad_norm: float = 0.0
    """Gradient clipping by global norm (0 = off; the norm is logged either way)."""
    lora_r: int = 0
    """LoRA rank; 0 = full fine-tuning."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights dtype when loading the model."""


@dataclass(frozen=True)
class SFTResult(TrainResult):
    """What `rlhaif sft` made (also its manifest's ``outputs``); ``metrics``: ``sft/loss``, ``sft/tokens``,
    ``train/*``."""

    examples: int
    """Demonstrations trained on."""


def make_labels(input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Labels for causal-LM cross-entropy: the token ids where ``loss_mask`` is 1, ``-100`` on prompt
    and padding (ignored). (B, T)."""
    return input_ids.masked_fill(loss_mask == 0, IGNORE)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, num_tokens: int | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ −log π(y_t | y_<t, x) over labelled tokens / ``num_tokens`` (default: the labelled tokens here).

    ``logits`` (B, T, V) predict the next token: position t is scored against ``labels[:, t+1]``."""
    shift_logits = logits[:, :-1].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    nll_sum = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                              ignore_index=IGNORE, reduction="sum")
    n_here = int((shift_labels != IGNORE).sum())
    loss = nll_sum / max(1, num_tokens if num_tokens is not None else n_here)
    return loss, {"sft/nll_sum": float(nll_sum.detach()), "sft/tokens": n_here}


def learned_tokens(e: Encoded) -> int:
    """The response tokens of ``e`` the loss scores: all of them, less the first when there is no prompt
    (a sequence's first token is predicted from nothing)."""
    return len(e.response_ids) - int(not e.prompt_ids and bool(e.response_ids))


def run_sft(config: SFTConfig) -> SFTResult:
    """Fine-tune ``config.model`` on ``config.data``; write the model to ``config.output_dir``/model."""
    from rlhaif.data.collate import encode_prompt_response, pad_batch
    from rlhaif.data.io import read_records
    from rlhaif.data.records import DemoRecord
    from rlhaif.metrics import MetricsLogger
    from rlhaif.models.loading import add_lora, load_causal_lm
    from rlhaif.training import (finish_run, make_accelerator, micro_batches, save_pretrained_atomic,
                                 seed_everything, start_loop, train_steps)

    t0 = time.time()
    cfg = config
    out = Path(cfg.output_dir)
    demos = read_records(cfg.data, DemoRecord)
    seed_everything(cfg.seed)
    model, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, padding_side="right")
    encoded = [encode_prompt_response(tok, *d.split(), max_length=cfg.max_length) for d in demos]
    if cfg.lora_r:
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_scale_alpha)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False

    acc = make_accelerator(1, cfg.mixed_precision, cfg.log_with, out)  # accumulation is done by train_steps
    micros = micro_batches(len(encoded), cfg.batch_size, cfg.epochs, cfg.seed)
    loop = start_loop(model, cfg, acc, len(micros), "sft")
    learned = [learned_tokens(e) for e in encoded]

    def micro_loss(idx: list[int], step_batches: list[list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        step_tokens = sum(learned[j] for b in step_batches for j in b)  # the optimizer step's response tokens
        b = {k: v.to(acc.device) for k, v in pad_batch([encoded[j] for j in idx], tok.pad_token_id,
                                                        side="right").items()}
        logits = loop.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # (B, T, V)
        loss, stats = sft_loss(logits, make_labels(b["input_ids"], b["loss_mask"]), step_tokens)
        return loss, {"sft/loss": stats["sft/nll_sum"] / max(1, step_tokens), "sft/tokens": stats["sft/tokens"]}

    with MetricsLogger(out, loop.total_steps, "sft", acc, show=("sft/loss",), start_step=loop.step) as log:
        row = train_steps(loop, cfg, micros, len(encoded), micro_loss, log)

    save_pretrained_atomic(loop.model, tok, out / "model", merge_lora=cfg.merge_lora, accelerator=acc)
    result = finish_run("sft", cfg, SFTResult(output_dir=str(out), model=str(out / "model"), metrics=row,
                                              steps=loop.step, examples=len(encoded)), t0, acc)
    acc.end_training()
    return result
