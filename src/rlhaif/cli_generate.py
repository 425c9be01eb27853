"""`rlhaif generate`: prompts -> K sampled responses per prompt -> completions.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("generate")
    def generate_cmd(
        model: Optional[str] = typer.Option(None, help="Model folder, .gguf file or built-in name "
                                            "(default smollm2-135m-instruct)."),
        prompts: Optional[str] = typer.Option(None, help="Prompts (.jsonl with 'prompt', or .txt one per line)."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Output completions.jsonl."),
        k: Optional[int] = typer.Option(None, "-k", "--k", help="Responses per prompt (default 4)."),
        max_new_tokens: Optional[int] = typer.Option(None, help="Response length cap (default 128)."),
        temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 0.7)."),
        top_p: Optional[float] = typer.Option(None, help="Nucleus sampling (default 1.0, off)."),
        top_k: Optional[int] = typer.Option(None, help="Top-k sampling (default 0, off)."),
        batch_size: Optional[int] = typer.Option(None, help="Sequences per batch (default 16)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
        dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16."),
        max_prompt_length: Optional[int] = typer.Option(None, help="Longest prompt in tokens (longer is an error)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Sample K responses per prompt and write completions.jsonl (with the sampling settings)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from rlhaif.cli import GenerateConfig
        from rlhaif.generate import run_generate

        cfg = GenerateConfig.from_sources(config, dict(model=model, prompts=prompts, output=output, k=k,
                                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                                       top_p=top_p, top_k=top_k, batch_size=batch_size, seed=seed,
                                                       dtype=dtype, max_prompt_length=max_prompt_length))
        typer.echo(f"loading {cfg.model} ...", err=True)
        with Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("generate", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            stats = run_generate(cfg, progress=progress)
        typer.echo(f"wrote {stats['responses']} completions to {stats['output']} "
                   f"({stats['tokens_per_second']} new tokens/s, {stats['finished_share']:.0%} reached EOS)")
