"""The ``rlhaif`` command line.

- ``rlhaif.cli.stages``: the commands that run one stage (sft, generate, reward …, ppo, dpo, evaluate,
  feedback simulate / ai-label, cai revise); their flags are made from the stage's config by
  ``rlhaif.cli.options`` and take ``--config file.yaml`` too (flags win).
- ``rlhaif.cli.run`` (run, demo), ``rlhaif.cli.feedback`` (the annotation store and app), ``rlhaif.cli.data``:
  written by hand.

Stages are imported (with torch) only when their command runs or shows its help, so ``rlhaif --help`` and
``rlhaif feedback serve`` stay light.
"""

from __future__ import annotations

import importlib
import os
import sys

# Hugging Face's own progress bars ("Loading weights", "Writing model shards", one per model load or save) bury
# rlhaif's one progress line per stage; set HF_HUB_DISABLE_PROGRESS_BARS=0 to see them again. (Read by
# huggingface_hub and transformers when they are first imported, which the commands do only later.)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import click
import typer

from rlhaif.errors import RlhaifError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RLHF and RLAIF end to end: sft, generate, feedback, reward, ppo, dpo, evaluate, run, demo.")


@app.callback()
def _root() -> None:
    """rlhaif: align a causal LM with human or AI feedback."""


# Command groups (`rlhaif feedback ...`, `rlhaif reward ...`, `rlhaif cai ...`, `rlhaif data ...`).
GROUPS: dict[str, typer.Typer] = {
    "feedback": typer.Typer(no_args_is_help=True, help="Human and AI feedback: the annotation app, AI labels, export."),
    "reward": typer.Typer(no_args_is_help=True, help="Reward model: train, score, eval."),
    "cai": typer.Typer(no_args_is_help=True, help="Constitutional AI: critique and revision."),
    "data": typer.Typer(no_args_is_help=True, help="Data files: convert between rlhaif, TRL and hh-rlhf formats."),
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)

# Modules of hand-written commands: each has `register(groups)`.
HAND_WRITTEN = ["rlhaif.cli.run", "rlhaif.cli.feedback", "rlhaif.cli.data"]


_registered: list[str] = []  # hand-written modules already registered (build() runs once per main() call)


def build() -> click.Group:
    """The whole command tree: the hand-written typer commands, then one command per stage."""
    from rlhaif.cli.stages import COMMANDS

    for name in HAND_WRITTEN:
        if name not in _registered:  # registering again would add every command a second time
            importlib.import_module(name).register(app, GROUPS)
            _registered.append(name)
    root = typer.main.get_group(app)
    for spec in COMMANDS:
        group = root
        for part in spec.path[:-1]:
            group = group.commands[part]
        group.add_command(spec.command())
    return root


def _click_errors(name: str) -> tuple[type, ...]:
    """click's exception class ``name``, from click and from the copy of click that typer ships (typer's own
    commands raise that one's, the stage commands click's)."""
    mods = [click.exceptions, typer]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        mods.append(vendored)
    return tuple({c for m in mods if isinstance(c := getattr(m, name, None), type)})


def main(argv: list[str] | None = None) -> None:
    try:
        code = build().main(args=argv, prog_name="rlhaif", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except RlhaifError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (*_click_errors("Exit"), SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except _click_errors("ClickException") as e:  # usage errors (a bad flag)
        e.show()
        sys.exit(e.exit_code)
    except _click_errors("Abort"):
        typer.echo("aborted", err=True)
        sys.exit(130)


def __getattr__(name: str):
    if name == "GenerateConfig":  # where it was before it moved beside the generate stage
        from rlhaif.generate import GenerateConfig

        return GenerateConfig
    raise AttributeError(name)
