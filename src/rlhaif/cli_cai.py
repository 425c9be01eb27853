"""`rlhaif cai revise` (Constitutional AI critique → revision) and `rlhaif feedback ai-label` (the AI judge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @groups["cai"].command("revise")
    def revise_cmd(
        prompts: Optional[str] = typer.Option(None, help="Red-team prompts: .jsonl with 'prompt', .txt, or an "
                                              "hh-rlhf file (the human's first turn is used)."),
        model: Optional[str] = typer.Option(None, help="Model folder, .gguf or built-in name "
                                            "(default smollm2-135m-instruct)."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Output folder (default cai)."),
        constitution: Optional[str] = typer.Option(None, help="Constitution YAML (default: the shipped one)."),
        fewshot: Optional[str] = typer.Option(None, help="Few-shot examples YAML, or 'none'."),
        n_rounds: Optional[int] = typer.Option(None, "--rounds", help="Critique/revision rounds (default 4)."),
        limit: Optional[int] = typer.Option(None, help="Use only the first N prompts."),
        max_new_tokens: Optional[int] = typer.Option(None, help="Length cap per generation (default 128)."),
        temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 0.7)."),
        batch_size: Optional[int] = typer.Option(None, help="Prompts per batch (default 8)."),
        seed: Optional[int] = typer.Option(None, help="Seed of the principle draws and sampling (default 0)."),
        dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Answer red-team prompts, then critique and revise n times under randomly drawn principles;
        write revisions.jsonl (every round), sft.jsonl and pairs.jsonl (revision ≻ original). Resumable."""
        from rlhaif.feedback.ai.critique_revise import ReviseConfig, run_revise

        cfg = ReviseConfig.from_sources(config, dict(prompts=prompts, model=model, output_dir=output_dir,
                                                     constitution=constitution, fewshot=fewshot, n_rounds=n_rounds,
                                                     limit=limit, max_new_tokens=max_new_tokens,
                                                     temperature=temperature, batch_size=batch_size, seed=seed,
                                                     dtype=dtype))
        typer.echo(json.dumps(run_revise(cfg), indent=2))

    @groups["feedback"].command("ai-label")
    def ai_label_cmd(
        input: Optional[str] = typer.Option(None, "--input", "-i", help="completions.jsonl (K>=2 per prompt) or "
                                            "a pairs file to relabel."),
        db: Optional[str] = typer.Option(None, help="Instead of --input: a feedback store (SQLite path or "
                                         "postgresql:// URL) whose pairwise tasks are judged; labels are stored there."),
        campaign: Optional[str] = typer.Option(None, help="The store's pairwise campaign (with --db; default 'default')."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Output folder (default ai_labels)."),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Local model or the endpoint's model "
                                                  "name (default smollm2-135m-instruct)."),
        api: Optional[str] = typer.Option(None, help="hf (local model) | completions | chat (OpenAI-compatible)."),
        base_url: Optional[str] = typer.Option(None, help="Endpoint root, e.g. http://127.0.0.1:8000/v1."),
        constitution: Optional[str] = typer.Option(None, help="Constitution YAML (default: the shipped one)."),
        chain_of_thought: Optional[bool] = typer.Option(None, "--chain-of-thought/--no-chain-of-thought",
                                                        help="Sample reasoning first; clamp p to [0.4, 0.6]."),
        max_length: Optional[int] = typer.Option(None, help="Longest judge input in tokens (default 384)."),
        batch_size: Optional[int] = typer.Option(None, help="Questions per forward pass (default 8)."),
        limit: Optional[int] = typer.Option(None, help="Judge only the first N pairs."),
        skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help="Drop malformed hh-rlhf records."),
        concurrency: Optional[int] = typer.Option(None, help="Endpoint requests in flight (default 4)."),
        requests_per_second: Optional[float] = typer.Option(None, help="Endpoint request-rate cap."),
        timeout: Optional[float] = typer.Option(None, help="Seconds per endpoint request (default 60)."),
        max_retries: Optional[int] = typer.Option(None, help="Retries on 429/5xx/timeout (default 5)."),
        seed: Optional[int] = typer.Option(None, help="Seed of the principle draw (default 0)."),
        dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the same keys."),
    ):
        """Label pairs with an AI judge (both orders averaged): writes pairs.jsonl with soft labels p and
        source ai:<model>:<principle>; a cache makes reruns free. With --db, the labels also go into the feedback
        store beside the human judgments (`rlhaif feedback export` writes both)."""
        from rlhaif.feedback.ai.judge import AILabelConfig, run_ai_label

        cfg = AILabelConfig.from_sources(config, dict(input=input, db=db, campaign=campaign, output_dir=output_dir,
                                                      judge_model=judge_model,
                                                      api=api, base_url=base_url, constitution=constitution,
                                                      chain_of_thought=chain_of_thought, max_length=max_length,
                                                      batch_size=batch_size, limit=limit, skip_invalid=skip_invalid,
                                                      concurrency=concurrency,
                                                      requests_per_second=requests_per_second, timeout=timeout,
                                                      max_retries=max_retries, seed=seed, dtype=dtype))
        typer.echo(json.dumps(run_ai_label(cfg), indent=2))
