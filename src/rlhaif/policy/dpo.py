"""`rlhaif dpo`: align a policy straight from preference pairs (DPO, IPO, conservative DPO for soft labels).

    load pairs → tokenize → reference log-probs (cached once, or LoRA adapter disabled) → loop → eval → save

One forward per step over the batch laid out ``[chosen; rejected]`` (2B rows); response tokens only.
The losses live in ``policy/dpo_losses.py``; Accelerate set-up, checkpoints and the final save in
``rlhaif.training``. Outputs in ``output_dir``: ``model/`` (adapter or full), ``metrics.jsonl``,
``eval.json``, ``ref_logprobs.pt`` (precomputed reference), ``checkpoints/``, ``manifest.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field

from rlhaif.config import LoRAConfig, TrainLoopConfig
from rlhaif.data.collate import Encoded, encode_prompt_response, pad_batch
from rlhaif.data.formats import read_pairs, read_unpaired
from rlhaif.data.records import PairRecord
from rlhaif.errors import ConfigError, DataError
from rlhaif.policy.dpo_losses import LOSSES, chosen_nll_loss, smooth_labels
from rlhaif.policy.kto import kto_pairs
from rlhaif.training import TrainResult

REF_CACHE = "ref_logprobs.pt"


class DPOConfig(TrainLoopConfig, LoRAConfig):
    """Settings of `rlhaif dpo` (the loop settings, LoRA and checkpoints come from ``TrainLoopConfig`` and
    ``LoRAConfig``)."""

    resume_may_change: ClassVar[frozenset[str]] = TrainLoopConfig.resume_may_change | {"eval_batch_size"}

    model: str = "smollm2-135m-instruct"
    """Policy to start from (folder, .gguf, built-in name). A LoRA SFT adapter folder is merged into its base first."""
    pairs: str
    """Training pairs: rlhaif pairs.jsonl, TRL preference JSONL (standard or conversational) or hh-rlhf. With
    `loss: kto`: unpaired rows (rlhaif kto.jsonl or TRL's prompt / completion / label), or pairs, each split
    into a desirable and an undesirable row."""
    eval_pairs: Optional[str] = None
    """Held-out pairs (any format above). When absent, `eval_fraction` of `pairs` is held out."""
    eval_fraction: float = 0.1
    """Share of `pairs` held out for the final preference accuracy when `eval_pairs` is not given."""
    max_pairs: Optional[int] = None
    """Train on at most this many pairs (after the held-out split); None = all."""
    output_dir: str = "runs/dpo"
    """Where the model, metrics.jsonl, eval.json and checkpoints go."""
    loss: Literal["sigmoid", "ipo", "kto"] = "sigmoid"
    """sigmoid = DPO (conservative DPO when p < 1); ipo = IPO. Both use each pair's soft label p. kto = KTO
    on unpaired desirable / undesirable examples (docs/dpo.md)."""
    kto_lambda_d: float = 1.0
    """KTO's λ_D: weight of the desirable examples' loss (TRL's desirable_weight)."""
    kto_lambda_u: float = 1.0
    """KTO's λ_U: weight of the undesirable examples' loss (TRL's undesirable_weight). The paper keeps
    λ_D·n_D / (λ_U·n_U) between 1 and 4/3 for n_D desirable and n_U undesirable examples."""
    beta: float = Field(0.1, gt=0)
    """β > 0: strength of the implicit KL constraint (IPO: τ, whose target margin is 1/(2τ))."""
    label_smoothing: float = 0.0
    """Extra label-noise rate ε: p ← (1 − ε)·p + ε·(1 − p) (cDPO's ε with hard labels)."""
    nll_alpha: float = 0.0
    """Weight of an SFT (per-token NLL) term on the chosen responses (RPO); 0 = off."""
    reference: Literal["precompute", "adapter"] = "precompute"
    """precompute: reference log-probs computed once and cached in output_dir; adapter: on the fly with LoRA disabled."""
    ref_model: Optional[str] = None
    """A different reference model for `precompute` (default: the starting policy itself)."""
    max_length: int = 512
    """Tokens per sequence (prompt + response); the prompt is cut from the left first, equally for both responses."""
    batch_size: int = 8
    """Pairs per micro-batch per process (the forward sees 2× this many sequences)."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate (linear warm-up, then linear decay to 0)."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    save_every: int = 100
    """Checkpoint every N optimizer steps (and at the end); a re-run resumes from the latest."""
    keep_checkpoints: bool = True
    """Keep checkpoints/ after a finished run (the newest two; they hold optimizer state)."""
    eval_batch_size: int = 16
    """Pairs per batch for the reference pre-computation and the held-out evaluation."""


# ---------------------------------------------------------------- data

def load_pairs(cfg: DPOConfig) -> tuple[list[PairRecord], list[PairRecord]]:
    """(train, eval) pairs; a seeded shuffle picks the held-out share when no eval file is given.
    KTO: unpaired rows, split the same way, then each with its KL partner (``policy/kto.py``)."""
    read = read_unpaired if cfg.loss == "kto" else read_pairs
    train = read(cfg.pairs)
    if cfg.eval_pairs:
        held = read(cfg.eval_pairs)
    else:
        order = list(range(len(train)))
        random.Random(cfg.seed).shuffle(order)
        n_eval = int(round(cfg.eval_fraction * len(train)))
        held = [train[i] for i in sorted(order[:n_eval])]
        train = [train[i] for i in sorted(order[n_eval:])]
    if cfg.max_pairs is not None:
        train = train[: cfg.max_pairs]
    if not train:
        raise DataError(cfg.pairs, None, None, "no training pairs left after the held-out split")
    if cfg.loss == "kto":
        return kto_pairs(train, cfg.seed), kto_pairs(held, cfg.seed)
    return train, held


def loss_function(cfg: DPOConfig):
    """``(logprobs, ref_logprobs, beta, p, weights) -> (loss, stats)`` for ``cfg.loss``."""
    if cfg.loss == "kto":
        return functools.partial(LOSSES["kto"], lambda_d=cfg.kto_lambda_d, lambda_u=cfg.kto_lambda_u)
    return LOSSES[cfg.loss]


def encode_pair(tokenizer, pair: PairRecord, max_length: int) -> tuple[Encoded, Encoded]:
    """Chosen and rejected on the *same* prompt tokens: the prompt is cut from the left by the amount the
    longer response needs, then each response from the right (DPO compares the two given one prompt)."""
    c = encode_prompt_response(tokenizer, pair.prompt, pair.chosen)
    r = encode_prompt_response(tokenizer, pair.prompt, pair.rejected)
    prompt = c.prompt_ids
    longest = max(len(c.response_ids), len(r.response_ids))
    if len(prompt) + longest > max_length:
        prompt = prompt[-max(max_length // 2, max_length - longest):]
    room = max_length - len(prompt)
    return Encoded(prompt, c.response_ids[:room]), Encoded(prompt, r.response_ids[:room])


def collate_pairs(encoded: list[tuple[Encoded, Encoded]], pairs: list[PairRecord], pad_id: int,
                  label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, loss_mask (2B, T) laid out [chosen; rejected]; p, weights (B,).
    Left padding, as for generation (responses end together at column T-1)."""
    batch = pad_batch([c for c, _ in encoded] + [r for _, r in encoded], pad_id, side="left")
    p = torch.tensor([pr.p for pr in pairs], dtype=torch.float32)
    batch["p"] = smooth_labels(p, label_smoothing)
    batch["weights"] = torch.tensor([pr.weight for pr in pairs], dtype=torch.float32)
    return batch


def pair_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sequence log-probabilities of the responses, (2B,) [chosen; rejected], from ONE forward pass.

    The LM head and log-softmax run on the response positions only, packed (N, H) → (N, V): with long
    prompts, ragged responses and a large vocabulary they are most of the time and memory of a step."""
    from rlhaif.policy.logprobs import selective_log_softmax

    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at the first real token
    base = getattr(model, "module", model)  # DDP wraps
    if getattr(base.config, "final_logit_softcapping", None):  # logits are not head(hidden): the plain way
        from rlhaif.policy.logprobs import sequence_logprob, token_logprobs

        return sequence_logprob(token_logprobs(model, ids, attn), resp)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=1,
                output_hidden_states=True)
    sel = resp[:, 1:].bool()  # (2B, T-1): position t predicts token t+1, a response token
    hidden = out.hidden_states[-1][:, :-1][sel]  # (N, H) final (normed) hidden states
    lp = selective_log_softmax(base.get_output_embeddings()(hidden), ids[:, 1:][sel])  # (N,)
    rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1).expand_as(sel)[sel]
    return torch.zeros(ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------- reference log-probabilities

@torch.no_grad()
def compute_logprobs(model, encoded, pairs, pad_id: int, batch_size: int, device) -> torch.Tensor:
    """(N, 2) [chosen, rejected] sequence log-probs of every pair under ``model`` (eval mode, no grad).
    Pairs are batched by length (less padding), the result is in the input order."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: max(len(e.input_ids) for e in encoded[i]))
    out = torch.zeros(len(encoded), 2)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = _to(collate_pairs([encoded[j] for j in idx], [pairs[j] for j in idx], pad_id), device)
        out[idx] = pair_logprobs(model, batch).float().cpu().view(2, -1).T
    model.train(was_training)
    return out


def _cache_key(cfg: DPOConfig, pairs: list[PairRecord]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([cfg.ref_model or cfg.model, cfg.max_length, cfg.dtype, cfg.mixed_precision]).encode())
    for pr in pairs:
        h.update(json.dumps([pr.model_dump(mode="json")["prompt"], pr.chosen, pr.rejected]).encode())
    return h.hexdigest()


def reference_cache(cfg: DPOConfig, accelerator, policy, tokenizer, encoded, pairs) -> torch.Tensor:
    """Reference log-probs of every pair, computed once and saved to ``output_dir/ref_logprobs.pt``.

    Called before any checkpoint is loaded, so the starting policy *is* the reference (no second copy);
    a resumed run finds the file and reuses it. A separate ``ref_model`` is loaded, used and freed."""
    path = Path(cfg.output_dir) / REF_CACHE
    key = _cache_key(cfg, pairs)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved.get("key") == key:
            return saved["logprobs"]
    if cfg.ref_model:
        from rlhaif.models.loading import load_causal_lm

        ref, _ = load_causal_lm(cfg.ref_model, dtype=cfg.dtype, padding_side="left", merge_adapter=True)
        ref.to(accelerator.device)
        with accelerator.autocast():
            out = compute_logprobs(ref, encoded, pairs, tokenizer.pad_token_id, cfg.eval_batch_size, accelerator.device)
        del ref
    else:
        out = compute_logprobs(policy, encoded, pairs, tokenizer.pad_token_id, cfg.eval_batch_size, accelerator.device)
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"key": key, "logprobs": out}, tmp)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return out


def adapter_ref_logprobs(accelerator, model, batch) -> torch.Tensor:
    """Reference = the same weights with the LoRA adapter disabled (one copy of the base model)."""
    with torch.no_grad(), accelerator.unwrap_model(model).disable_adapter():
        return pair_logprobs(model, batch)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(cfg: DPOConfig, accelerator, model, encoded, pairs, ref: torch.Tensor | None, pad_id: int) -> dict:
    """Held-out preference accuracy: the share of pairs whose implicit reward ranks chosen above rejected
    (a tie counts one half), the mean implicit-reward margin and the loss."""
    if not pairs:
        return {"eval/pairs": 0}
    loss_fn = loss_function(cfg)
    policy = compute_logprobs(model, encoded, pairs, pad_id, cfg.eval_batch_size, accelerator.device)
    if ref is None:
        with accelerator.unwrap_model(model).disable_adapter():
            ref = compute_logprobs(model, encoded, pairs, pad_id, cfg.eval_batch_size, accelerator.device)
    p = smooth_labels(torch.tensor([pr.p for pr in pairs]), cfg.label_smoothing)
    w = torch.tensor([pr.weight for pr in pairs])
    loss, stats = loss_fn(policy.T.reshape(-1), ref.T.reshape(-1), cfg.beta, p, w)
    return {"eval/pairs": len(pairs), "eval/accuracy": stats["rewards/accuracy"].item(),
            "eval/margin": stats["rewards/margin"].item(), "eval/loss": loss.item(),
            "eval/rewards_chosen": stats["rewards/chosen"].item(),
            "eval/rewards_rejected": stats["rewards/rejected"].item()}


# ---------------------------------------------------------------- the loop

@dataclass(frozen=True)
class DPOResult(TrainResult):
    """What `rlhaif dpo` made, with any of its losses (DPO, IPO, cDPO, KTO); also its manifest's ``outputs``.
    ``metrics``: the last step's row and the held-out ``eval/*``."""

    eval: dict[str, Any]
    """eval.json: the held-out ``eval/*`` (``eval/pairs`` 0 without held-out data)."""
    train_pairs: int
    """Training rows: pairs, or with ``loss: kto`` desirable and undesirable examples."""


def run_dpo(cfg: DPOConfig) -> DPOResult:
    """Train with DPO / IPO / cDPO / KTO on ``cfg.pairs``; write the model, eval.json and metrics.jsonl."""
    from rlhaif.metrics import MetricsLogger
    from rlhaif.models.loading import add_lora, is_adapter_folder, load_causal_lm
    from rlhaif.training import (finish_run, make_accelerator, micro_batches, save_pretrained_atomic,
                                 seed_everything, start_loop, train_steps)

    t0 = time.time()
    out = Path(cfg.output_dir)
    if cfg.reference == "adapter" and not cfg.lora_r:
        raise ConfigError("reference 'adapter' needs lora_r > 0 (the reference is the model with its adapter "
                          "disabled); use reference 'precompute' for full fine-tuning (lora_r 0)")
    if cfg.reference == "adapter" and cfg.ref_model:
        raise ConfigError("ref_model is only used with reference 'precompute'")
    if cfg.loss == "kto" and (cfg.label_smoothing or cfg.nll_alpha):
        raise ConfigError("loss 'kto' takes no label_smoothing or nll_alpha (its examples are unpaired: "
                          "there is no chosen response to smooth or to imitate)")
    seed_everything(cfg.seed)
    train_pairs, eval_pairs = load_pairs(cfg)
    accelerator = make_accelerator(mixed_precision=cfg.mixed_precision, log_with=cfg.log_with, project_dir=out)
    world = accelerator.num_processes

    # A LoRA SFT adapter is merged first: "adapter disabled" must mean the SFT policy, not its base.
    model, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, padding_side="left", merge_adapter=True)
    started_from_adapter = is_adapter_folder(cfg.model)
    if cfg.lora_r:
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_scale_alpha)
    pad_id = tok.pad_token_id
    train_enc = [encode_pair(tok, pr, cfg.max_length) for pr in train_pairs]
    eval_enc = [encode_pair(tok, pr, cfg.max_length) for pr in eval_pairs]

    per_step = cfg.gradient_accumulation_steps * world
    epochs = cfg.epochs
    if cfg.max_steps is not None:  # max_steps wins: enough epochs of data for it
        epochs = math.ceil(cfg.max_steps * per_step / math.ceil(len(train_pairs) / cfg.batch_size))
    micros = micro_batches(len(train_pairs), cfg.batch_size, epochs, cfg.seed)
    ref: dict[str, Any] = {"train": None, "eval": None}

    def reference_before_resume(policy) -> None:  # before any checkpoint is loaded: the policy is the reference
        if cfg.reference == "precompute":
            ref_all = reference_cache(cfg, accelerator, policy, tok, train_enc + eval_enc, train_pairs + eval_pairs)
            ref["train"], ref["eval"] = ref_all[: len(train_pairs)], ref_all[len(train_pairs):]

    loop = start_loop(model, cfg, accelerator, len(micros), "dpo", before_resume=reference_before_resume)
    ref_train, ref_eval = ref["train"], ref["eval"]
    loss_fn = loss_function(cfg)

    def micro_loss(idx: list[int], step_batches: list[list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = _to(collate_pairs([train_enc[i] for i in idx], [train_pairs[i] for i in idx], pad_id,
                                  cfg.label_smoothing), accelerator.device)
        logprobs = pair_logprobs(loop.model, batch)  # (2B,) [chosen; rejected]
        if ref_train is not None:
            ref_logprobs = torch.cat([ref_train[idx, 0], ref_train[idx, 1]]).to(logprobs.device)
        else:
            ref_logprobs = adapter_ref_logprobs(accelerator, loop.model, batch)
        loss, stats = loss_fn(logprobs.float(), ref_logprobs.float(), cfg.beta, batch["p"], batch["weights"])
        if cfg.nll_alpha:
            B = len(idx)
            lengths = batch["loss_mask"][:B].sum(-1)
            nll, nll_stats = chosen_nll_loss(logprobs[:B].float(), lengths, batch["weights"])
            loss = loss + cfg.nll_alpha * nll
            stats.update(nll_stats)
        n = len(step_batches)  # the step's loss and stats: means over its micro-batches
        return loss / n, {k: float(v) / n for k, v in stats.items()}

    show = ("dpo/loss", "rewards/accuracy", "rewards/margin")
    with MetricsLogger(out, total_steps=loop.total_steps, description="dpo", accelerator=accelerator, show=show,
                       start_step=loop.step) as log:
        row = train_steps(loop, cfg, micros, len(train_pairs), micro_loss, log)
        model, step = loop.model, loop.step
        results = evaluate(cfg, accelerator, model, eval_enc, eval_pairs, ref_eval, pad_id)
        if eval_pairs:
            log.log(step, results, advance=0)
            unit = "rows (kto: each response judged alone)" if cfg.loss == "kto" else "pairs"
            log.print(f"held-out accuracy {results['eval/accuracy']:.3f} on {len(eval_pairs)} {unit}, "
                      f"implicit-reward margin {results['eval/margin']:.4f}")

    merge = cfg.merge_lora or (cfg.lora_r > 0 and started_from_adapter)  # the SFT adapter was merged into the base
    model_dir = save_pretrained_atomic(model, tok, out / "model", merge_lora=merge, accelerator=accelerator)
    if accelerator.is_main_process:
        (out / "eval.json").write_text(json.dumps(results, indent=2))
    result = finish_run("dpo", cfg, DPOResult(output_dir=str(out), model=str(model_dir), metrics={**row, **results},
                                              eval=results, steps=step, train_pairs=len(train_pairs)), t0, accelerator)
    accelerator.end_training()
    return result
