"""`rlhaif run recipe.yaml` and `rlhaif demo`: thin wrappers over rlhaif.pipeline.run_recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _print_report(summary: dict) -> None:
    for st in summary["stages"]:
        where = f" round {st['round']}" if st["round"] else ""
        typer.echo(f"  {st['status']:>7}  {st['name']}{where}  ->  {st['output_dir']}")
    for st in summary["stages"][::-1]:
        html = st["outputs"].get("report")
        if html:
            typer.echo(f"report: {Path(html).resolve()}")
            break


# the names `rlhaif run NAME` takes (rlhaif.pipeline.packaged_recipes, listed here without importing the pipeline)
PACKAGED = sorted(p.stem for p in (Path(__file__).parent.parent / "assets" / "recipes").glob("*.yaml"))
FORCE_HELP = ("Replace results that another recipe (or a stage run alone) left in a stage's folder, instead of "
              "stopping; a re-run of the same recipe redoes a stage whose config changed without it.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("run")
    def run_cmd(
        recipe: str = typer.Argument(..., help="Recipe YAML (run_dir, policy, rounds, stages), or the name of a "
                                     f"packaged recipe: {', '.join(PACKAGED)}."),
        run_dir: Optional[str] = typer.Option(None, help="Override the recipe's run_dir."),
        rounds: Optional[int] = typer.Option(None, help="Override the recipe's rounds (iterated RLHF)."),
        seed: Optional[int] = typer.Option(None, min=0, help="The seed of every stage that sets none of its own."),
        only: Optional[str] = typer.Option(None, help="Run only these stages (comma-separated names); "
                                           "the others must have finished before."),
        check: bool = typer.Option(False, "--check", help="Only check the recipe (stages exist, keys and "
                                   "their values are valid); run nothing."),
        force: bool = typer.Option(False, "--force", help=FORCE_HELP),
        show: bool = typer.Option(False, "--show", help="Only print the recipe's YAML (`rlhaif run rlhf --show > "
                                  "my.yaml` copies a packaged recipe to edit); run nothing."),
    ):
        """Run a recipe: every stage in order, skipping finished ones, resuming an interrupted one."""
        from rlhaif.pipeline import check_recipe, load_recipe, recipe_path, run_recipe

        if show:
            typer.echo(recipe_path(recipe).read_text(encoding="utf-8"), nl=False)
            return
        r = load_recipe(recipe, {"run_dir": run_dir, "rounds": rounds, "seed": seed})
        if check:
            for line in check_recipe(r):
                typer.echo(line)
            typer.echo(f"{recipe}: ok ({len(r.stages)} stages, {r.rounds} round(s))")
            return
        summary = run_recipe(r, only=only.split(",") if only else None, log=lambda m: typer.echo(m, err=True),
                             force=force)
        _print_report(summary)

    @app.command("demo")
    def demo_cmd(
        human: bool = typer.Option(False, "--human", help="Label the responses yourself in the annotation app "
                                   "instead of the simulated panel."),
        cai: bool = typer.Option(False, "--cai", help="Run the Constitutional AI recipe instead."),
        hh_rlhf: Optional[str] = typer.Option(None, "--hh-rlhf", help="Train the gold reward model on this "
                                              "hh-rlhf file (.jsonl or .jsonl.gz) instead of the bundled pairs."),
        run_dir: Optional[str] = typer.Option(None, help="Where every stage writes (default: runs/demo; "
                                              "runs/demo-cai with --cai, runs/demo-hh with --hh-rlhf, "
                                              "-human added with --human)."),
        check: bool = typer.Option(False, "--check", help="Only check the demo's recipe (with --human / --cai "
                                   "as given); run nothing."),
        force: bool = typer.Option(False, "--force", help=FORCE_HELP),
        seed: int = typer.Option(0, min=0, help="The seed of every stage (a seed other than 0 runs into its own "
                                 "folder, -seed<N> added)."),
    ):
        """The whole loop on SmolLM2-135M-Instruct + LoRA on bundled prompts; prints where report.html is."""
        from rlhaif.pipeline import check_recipe, demo_recipe, demo_run_dir, run_recipe

        run_dir = run_dir or demo_run_dir(cai=cai, hh_rlhf=bool(hh_rlhf), human=human) + (f"-seed{seed}" if seed else "")
        recipe = demo_recipe("cai" if cai else "rlhf", run_dir=run_dir, hh_rlhf=hh_rlhf, human=human)
        if seed:
            recipe = recipe.model_copy(update={"seed": seed})
        if check:
            for line in check_recipe(recipe):
                typer.echo(line)
            typer.echo(f"demo ({'cai' if cai else 'rlhf'}{', human feedback' if human else ''}): ok, "
                       f"{len(recipe.stages)} stages into {recipe.run_dir}")
            return
        summary = run_recipe(recipe, log=lambda m: typer.echo(m, err=True), force=force)
        _print_report(summary)
