"""`rlhaif dpo`: train a policy from preference pairs (DPO, IPO, conservative DPO for soft labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("dpo")
    def dpo_cmd(
        pairs: Optional[str] = typer.Option(None, help="Training pairs (rlhaif pairs, TRL or hh-rlhf JSONL)."),
        model: Optional[str] = typer.Option(None, help="Starting policy: folder, .gguf or built-in name "
                                            "(default smollm2-135m-instruct)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Run folder (default runs/dpo)."),
        eval_pairs: Optional[str] = typer.Option(None, help="Held-out pairs; default: --eval-fraction of --pairs."),
        eval_fraction: Optional[float] = typer.Option(None, help="Share of pairs held out (default 0.1)."),
        max_pairs: Optional[int] = typer.Option(None, help="Train on at most this many pairs."),
        loss: Optional[str] = typer.Option(None, help="sigmoid (DPO / cDPO) | ipo."),
        beta: Optional[float] = typer.Option(None, help="β (default 0.1)."),
        label_smoothing: Optional[float] = typer.Option(None, help="Label-noise rate ε (default 0)."),
        nll_alpha: Optional[float] = typer.Option(None, help="Weight of the NLL term on chosen (default 0)."),
        reference: Optional[str] = typer.Option(None, help="precompute (cached once) | adapter (LoRA disabled)."),
        ref_model: Optional[str] = typer.Option(None, help="A different reference model (precompute only)."),
        lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default 16); 0 = full fine-tuning."),
        merge_lora: Optional[bool] = typer.Option(None, "--merge-lora", help="Save LoRA merged into the base."),
        max_length: Optional[int] = typer.Option(None, help="Tokens per sequence (default 512)."),
        batch_size: Optional[int] = typer.Option(None, help="Pairs per micro-batch (default 8)."),
        gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Micro-batches per step (default 1)."),
        learning_rate: Optional[float] = typer.Option(None, "--lr", "--learning-rate", help="Peak LR (default 5e-5)."),
        epochs: Optional[float] = typer.Option(None, help="Passes over the pairs (default 1)."),
        max_steps: Optional[int] = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
        dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16."),
        activation_checkpointing: Optional[bool] = typer.Option(
            None, "--activation-checkpointing/--no-activation-checkpointing",
            help="Recompute activations in the backward: less memory, ~1 more forward (default off)."),
        mixed_precision: Optional[str] = typer.Option(None, help="no | bf16 | fp16."),
        save_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default 100)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
        log_with: Optional[str] = typer.Option(None, help="tensorboard | wandb."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Direct preference optimization from pairs; writes model/, metrics.jsonl and eval.json."""
        from rlhaif.policy.dpo import DPOConfig, run_dpo

        cfg = DPOConfig.from_sources(config, dict(
            pairs=pairs, model=model, output_dir=output_dir, eval_pairs=eval_pairs, eval_fraction=eval_fraction,
            max_pairs=max_pairs, loss=loss, beta=beta, label_smoothing=label_smoothing, nll_alpha=nll_alpha,
            reference=reference, ref_model=ref_model, lora_r=lora_r, merge_lora=merge_lora,
            max_length=max_length, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
            learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, dtype=dtype,
            mixed_precision=mixed_precision, activation_checkpointing=activation_checkpointing,
            save_every=save_every, seed=seed, log_with=log_with))
        result = run_dpo(cfg)
        typer.echo(json.dumps({"model": result["model"], "steps": result["steps"], **result["eval"]}))
