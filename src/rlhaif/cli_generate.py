"""`rlhaif generate`: prompts -> K sampled responses per prompt -> completions.jsonl."""

from __future__ import annotations

import json
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
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Sample K responses per prompt and write completions.jsonl (with the sampling settings)."""
        from rlhaif.cli import GenerateConfig
        from rlhaif.data.io import write_records
        from rlhaif.generate import SamplingConfig, generate_completions, read_prompts
        from rlhaif.models.loading import load_causal_lm
        from rlhaif.metrics import MetricsLogger

        cfg = GenerateConfig.from_sources(config, dict(model=model, prompts=prompts, output=output, k=k,
                                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                                       top_p=top_p, top_k=top_k, batch_size=batch_size, seed=seed,
                                                       dtype=dtype))
        recs = read_prompts(cfg.prompts)
        typer.echo(f"loading {cfg.model} ...", err=True)
        lm, tok = load_causal_lm(cfg.model, dtype=cfg.dtype)
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k)
        out = Path(cfg.output)
        with MetricsLogger(out.parent, total_steps=len(recs) * cfg.k, description="generate", enabled=True) as log:
            last = [0]

            def progress(done: int, total: int) -> None:
                log._progress.update(log._task, advance=done - last[0]) if log._progress else None
                last[0] = done

            completions, stats = generate_completions(lm, tok, recs, cfg.k, sampling, cfg.batch_size, cfg.seed,
                                                      model_name=cfg.model, max_prompt_length=cfg.max_prompt_length,
                                                      progress=progress)
        write_records(out, completions)
        (out.parent / "generate_stats.json").write_text(json.dumps(stats, indent=2))
        typer.echo(f"wrote {len(completions)} completions to {out} "
                   f"({stats['tokens_per_second']} new tokens/s, {stats['finished_share']:.0%} reached EOS)")
