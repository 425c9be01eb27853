"""`rlhaif evaluate`: compare models on held-out prompts and write report.html (thin wrapper over run_evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: Optional[list[str]] = typer.Option(None, "--model", "-m",
                                                  help="name=path, repeated; the first is the baseline."),
        prompts: Optional[str] = typer.Option(None, help="Held-out prompts (.jsonl or .txt)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Report folder (default eval)."),
        proxy_scorer: Optional[str] = typer.Option(None, help="Training reward model folder or module:function."),
        gold_scorer: Optional[str] = typer.Option(None, help="Separate gold scorer (folder or module:function)."),
        reference: Optional[str] = typer.Option(None, help="KL reference: a model name or path (default baseline)."),
        judge: Optional[str] = typer.Option(None, help="AI judge model for win rates (both orders)."),
        training_metrics: Optional[list[str]] = typer.Option(None, help="label=metrics.jsonl to plot, repeated."),
        max_prompts: Optional[int] = typer.Option(None, help="Use only the first N prompts."),
        max_new_tokens: Optional[int] = typer.Option(None, help="Response length cap (default 64)."),
        seed: Optional[int] = typer.Option(None, help="Sampling seed (default 0)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Sample every model on the same prompts; proxy/gold scores, KL, win rate, diversity -> report.html."""
        from rlhaif.errors import ConfigError
        from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

        def pairs(items, flag):
            out = {}
            for it in items or []:
                if "=" not in it:
                    raise ConfigError(f"{flag} expects name=path, got '{it}'")
                k, v = it.split("=", 1)
                out[k.strip()] = v.strip()
            return out or None

        cfg = EvaluateConfig.from_sources(config, dict(
            models=pairs(model, "--model"), prompts=prompts, output_dir=output_dir, proxy_scorer=proxy_scorer,
            gold_scorer=gold_scorer, reference=reference, judge=judge,
            training_metrics=pairs(training_metrics, "--training-metrics"), max_prompts=max_prompts,
            max_new_tokens=max_new_tokens, seed=seed))
        res = run_evaluate(cfg)
        for name, r in res["models"].items():
            parts = [f"{k}={r[k]['mean']:.3f}" for k in ("proxy", "gold", "kl") if k in r]
            typer.echo(f"{name:>12}: " + "  ".join(parts + [f"len={r['length']:.1f}",
                                                           f"refusals={r['refusal_rate']:.0%}"]))
        typer.echo(f"report: {Path(res['report_html']).resolve()}")
