"""`rlhaif sft`: a thin wrapper over rlhaif.policy.sft.run_sft (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("sft")
    def sft_cmd(
        model: Optional[str] = typer.Option(None, help="Base model folder, .gguf or built-in name "
                                            "(default smollm2-135m-instruct)."),
        data: Optional[str] = typer.Option(None, help="Demonstrations JSONL (prompt/response or messages)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Run folder (model in <dir>/model)."),
        max_length: Optional[int] = typer.Option(None, help="Tokens per example (default 512)."),
        batch_size: Optional[int] = typer.Option(None, help="Examples per micro-batch (default 8)."),
        gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Micro-batches per step."),
        learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="Peak LR (2e-5)."),
        epochs: Optional[int] = typer.Option(None, help="Passes over the data (default 1)."),
        max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
        lora_r: Optional[int] = typer.Option(None, help="LoRA rank (0 = full fine-tuning)."),
        lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha (default 2 * rank)."),
        merge_lora: Optional[bool] = typer.Option(None, "--merge-lora/--no-merge-lora", help="Save merged."),
        activation_checkpointing: Optional[bool] = typer.Option(
            None, "--activation-checkpointing/--no-activation-checkpointing",
            help="Recompute activations in the backward: less memory, ~1 more forward (default off)."),
        mixed_precision: Optional[str] = typer.Option(None, help="no | bf16 (where supported)."),
        save_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default 200)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Supervised fine-tuning: cross-entropy on response tokens (prompt masked), full or LoRA."""
        overrides = {k: v for k, v in locals().items() if k != "config"}
        from rlhaif.policy.sft import SFTConfig, run_sft

        out = run_sft(SFTConfig.from_sources(config, overrides))
        typer.echo(f"trained {out['steps']} steps on {out['examples']} examples "
                   f"(last loss {out['metrics'].get('sft/loss', float('nan')):.4f}) -> {out['model']}")
