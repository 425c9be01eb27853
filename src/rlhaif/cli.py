"""The ``rlhaif`` command line. Each stage takes flags and/or ``--config file.yaml``; flags win.

Stage commands live beside their code (``rlhaif.<stage>`` modules expose ``register(app)``) and import
torch and friends inside the command body, so ``rlhaif --help`` and ``rlhaif feedback serve`` stay light.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from rlhaif.config import StageConfig
from rlhaif.errors import RlhaifError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RLHF and RLAIF end to end: sft, generate, feedback, reward, ppo, dpo, evaluate, run, demo.")

@app.callback()
def _root() -> None:
    """rlhaif: align a causal LM with human or AI feedback."""


# Command groups (`rlhaif feedback ...`, `rlhaif reward ...`, `rlhaif cai ...`); modules add commands to them.
GROUPS: dict[str, typer.Typer] = {
    "feedback": typer.Typer(no_args_is_help=True, help="Human and AI feedback: the annotation app, AI labels, export."),
    "reward": typer.Typer(no_args_is_help=True, help="Reward model: train, score, eval."),
    "cai": typer.Typer(no_args_is_help=True, help="Constitutional AI: critique and revision."),
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)

# Modules that add commands with `register(app, groups)`. One line per module.
COMMAND_MODULES = [
    "rlhaif.cli_evaluate",
    "rlhaif.cli_run",
    "rlhaif.cli_generate",
    "rlhaif.cli_ppo",
    "rlhaif.cli_feedback",
    "rlhaif.cli_cai",
    "rlhaif.cli_data",
    "rlhaif.cli_dpo",
    "rlhaif.cli_reward",
    "rlhaif.cli_sft",
]


class GenerateConfig(StageConfig):
    """Settings of `rlhaif generate`."""

    model: str = "smollm2-135m-instruct"
    """A model folder, a .gguf file or a built-in name."""
    prompts: str
    """Prompts file: JSONL with a 'prompt' field (text or messages), or .txt with one prompt per line."""
    output: str = "completions.jsonl"
    """Where to write the completions (JSONL)."""
    k: int = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 128
    """Cap on response length, in tokens."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    batch_size: int = 16
    """Sequences generated together."""
    seed: int = 0
    """Random seed: the same seed gives the same completions on the same machine."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    max_prompt_length: Optional[int] = None
    """Longest prompt in tokens; longer ones are an error."""


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app, GROUPS)


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    try:
        app(args=argv, standalone_mode=False)
    except RlhaifError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # click usage errors (bad flag) arrive here with standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
