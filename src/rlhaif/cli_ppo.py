"""`rlhaif ppo`: PPO with a KL penalty against the reference policy (thin wrapper over ``run_ppo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("ppo")
    def ppo_cmd(
        model: Optional[str] = typer.Option(None, help="Policy: folder (full or LoRA SFT adapter), .gguf or "
                                            "built-in name (default smollm2-135m-instruct)."),
        prompts: Optional[str] = typer.Option(None, help="Prompts (.jsonl with 'prompt', or .txt one per line)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Run folder (default runs/ppo)."),
        reward_model: Optional[str] = typer.Option(None, help="Reward model folder from `rlhaif reward train`."),
        reward_fn: Optional[str] = typer.Option(None, help="Rule-based reward: 'module:function' or "
                                                "'file.py:function', score(prompts, responses) -> list of floats."),
        value_model: Optional[str] = typer.Option(None, help="Separate value model (default: a head on the policy)."),
        lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default 16); 0 = full fine-tuning."),
        learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr", help="AdamW lr (default 1e-5)."),
        steps: Optional[int] = typer.Option(None, help="PPO steps (default 100)."),
        batch_size: Optional[int] = typer.Option(None, help="Rollouts per step per process (default 16)."),
        mini_batch_size: Optional[int] = typer.Option(None, help="Rollouts per optimizer step (default 4)."),
        ppo_epochs: Optional[int] = typer.Option(None, help="Passes over each rollout batch (default 4)."),
        max_new_tokens: Optional[int] = typer.Option(None, help="Response length cap (default 64)."),
        temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 0.7)."),
        kl_coef: Optional[float] = typer.Option(None, help="KL penalty β (default 0.05)."),
        kl_target: Optional[float] = typer.Option(None, help="Adaptive KL target per sequence (default off)."),
        missing_eos_penalty: Optional[float] = typer.Option(None, help="Score penalty without EOS (default off)."),
        save_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default 50)."),
        sample_every: Optional[int] = typer.Option(None, help="Samples to samples.jsonl every N steps (default 10)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
        merge_lora: Optional[bool] = typer.Option(None, "--merge-lora/--no-merge-lora",
                                                  help="Save the policy merged (default: the adapter)."),
        log_with: Optional[str] = typer.Option(None, help="tensorboard or wandb."),
        resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue from the newest "
                                              "checkpoint in the output folder (default on)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with PPOConfig keys; flags win."),
    ):
        """Optimise the policy against a reward model (or a Python reward) with PPO and a KL penalty."""
        from rlhaif.policy.ppo import PPOConfig, run_ppo

        flags = dict(model=model, prompts=prompts, output_dir=output_dir, reward_model=reward_model,
                     reward_fn=reward_fn, value_model=value_model, lora_r=lora_r, learning_rate=learning_rate,
                     steps=steps, batch_size=batch_size, mini_batch_size=mini_batch_size, ppo_epochs=ppo_epochs,
                     max_new_tokens=max_new_tokens, temperature=temperature, kl_coef=kl_coef, kl_target=kl_target,
                     missing_eos_penalty=missing_eos_penalty, save_every=save_every, sample_every=sample_every,
                     seed=seed, merge_lora=merge_lora, log_with=log_with, resume=resume)
        cfg = PPOConfig.from_sources(config, flags)
        result = run_ppo(cfg)
        m = result["metrics"]
        if result["rank"] == 0:
            typer.echo(f"ppo: {result['steps']} steps, score {m.get('objective/score', float('nan')):.4f}, "
                       f"kl {m.get('objective/kl', float('nan')):.4f}; policy saved to {result['model']}")
