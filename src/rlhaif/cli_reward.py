"""`rlhaif reward train | score | eval`: thin wrappers over rlhaif.reward (heavy imports inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    reward = groups["reward"]

    @reward.command("train")
    def train_cmd(
        data: Optional[str] = typer.Option(None, help="Training pairs (rlhaif pairs, TRL rows or hh-rlhf; .gz ok)."),
        data_lines: Optional[str] = typer.Option(None, help="Only these 1-based lines of --data, e.g. 1-1500."),
        eval_data: Optional[str] = typer.Option(None, help="Held-out pairs (default: hold out --eval-fraction)."),
        eval_lines: Optional[str] = typer.Option(None, help="Only these lines of --eval-data, e.g. 1501-1800."),
        eval_fraction: Optional[float] = typer.Option(None, help="Share of --data held out (default 0.1)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Reward model folder."),
        backbone: Optional[str] = typer.Option(None, help="Backbone (default minilm-l6) or model folder."),
        max_length: Optional[int] = typer.Option(None, help="Tokens per (prompt, response) (default 256)."),
        truncation_side: Optional[str] = typer.Option(None, help="left (keep latest turns) | right."),
        batch_size: Optional[int] = typer.Option(None, help="Pairs per micro-batch (default 16)."),
        group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length",
                                                       help="Batch pairs of similar length (default on)."),
        gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Micro-batches per step."),
        learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="Peak LR (5e-5)."),
        warmup_steps: Optional[int] = typer.Option(None, help="Steps of linear LR warm-up (default 0)."),
        epochs: Optional[int] = typer.Option(None, help="Passes over the pairs (default 1)."),
        max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
        center_coef: Optional[float] = typer.Option(None, help="Centering coefficient η (default 0)."),
        activation_checkpointing: Optional[bool] = typer.Option(
            None, "--activation-checkpointing/--no-activation-checkpointing",
            help="Recompute activations in the backward: less memory, ~1 more forward (default off)."),
        mixed_precision: Optional[str] = typer.Option(None, help="no | bf16 (where supported)."),
        save_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default 200)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Train a Bradley–Terry reward model on preference pairs; writes the model, eval.json, metrics."""
        overrides = {k: v for k, v in locals().items() if k != "config"}
        from rlhaif.reward.train import RewardTrainConfig, run_reward_train

        cfg = RewardTrainConfig.from_sources(config, overrides)
        report = run_reward_train(cfg)
        acc = report.get("accuracy")
        typer.echo(f"trained {report['steps']} steps on {report['train_pairs']} pairs -> {cfg.output_dir}"
                   + (f"; held-out accuracy {acc:.1%} on {report['n_decided']} pairs, "
                      f"mean margin {report['mean_margin']:.3f}" if acc is not None else ""))

    @reward.command("eval")
    def eval_cmd(
        model: Optional[str] = typer.Option(None, help="Reward model folder."),
        data: Optional[str] = typer.Option(None, help="Pairs to evaluate (rlhaif pairs, TRL rows or hh-rlhf)."),
        data_lines: Optional[str] = typer.Option(None, help="Only these 1-based lines, e.g. 1501-1800."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the report here (JSON)."),
        batch_size: Optional[int] = typer.Option(None, help="Sequences per batch (default 32)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Accuracy, mean margin and calibration of a reward model on a pairs file."""
        overrides = {k: v for k, v in locals().items() if k != "config"}
        from rlhaif.reward.evaluate import RewardEvalConfig, run_reward_eval

        report = run_reward_eval(RewardEvalConfig.from_sources(config, overrides))
        typer.echo(json.dumps(report, indent=2))

    @reward.command("score")
    def score_cmd(
        model: Optional[str] = typer.Option(None, help="Reward model folder."),
        data: Optional[str] = typer.Option(None, help="completions.jsonl to score."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Scored JSONL (default scored.jsonl)."),
        batch_size: Optional[int] = typer.Option(None, help="Sequences per batch (default 32)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Add `score` (normalized) and `raw_score` to every completion."""
        overrides = {k: v for k, v in locals().items() if k != "config"}
        from rlhaif.reward.evaluate import RewardScoreConfig, run_reward_score

        out = run_reward_score(RewardScoreConfig.from_sources(config, overrides))
        typer.echo(f"scored {out['n']} completions -> {out['output']} (mean score {out['mean_score']:.3f})")
