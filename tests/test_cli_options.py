"""The stage commands' flags are made from their configs: every field has a flag with its docstring as help,
flags left out do not override the YAML, and `rlhaif --help` stays light."""

import subprocess
import sys
from typing import Literal, Optional

import click
import pytest

from rlhaif.cli import build
from rlhaif.cli.options import config_options, field_docs
from rlhaif.cli.stages import COMMANDS
from rlhaif.config import StageConfig
from rlhaif.errors import ConfigError


def _command(path):
    group = build()
    for part in path:
        group = group.commands[part]
    return group


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: " ".join(s.path))
def test_every_config_field_has_a_flag_with_its_docstring(spec):
    from rlhaif.pipeline import stage_function

    _, cls = stage_function(spec.stage)
    cmd = _command(spec.path)
    ctx = click.Context(cmd)
    params = {p.name: p for p in cmd.get_params(ctx)}
    docs = field_docs(cls)
    for name in cls.model_fields:
        assert name in params, f"rlhaif {' '.join(spec.path)}: no flag for {cls.__name__}.{name}"
        opt = params[name]
        renamed = name in spec.flags and "--" + name.replace("_", "-") not in " ".join(spec.flags[name])
        assert renamed or "--" + name.replace("_", "-") in opt.opts  # --field-name, unless renamed on purpose
        assert docs.get(name), f"{cls.__name__}.{name} has no docstring"
        assert opt.help.startswith(docs[name]), (name, opt.help)
    assert "config" in params
    flags = [o for p in params.values() for o in (*p.opts, *p.secondary_opts)]
    assert len(flags) == len(set(flags)), "a flag is given to two fields"
    help_text = cmd.get_help(ctx)
    for name in cls.model_fields:  # what `rlhaif <cmd> --help` prints holds each field's docstring (its first words)
        assert " ".join(docs[name].split()[:3]) in " ".join(help_text.split()), name


def test_help_of_a_stage_command_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "rlhaif.cli", "ppo", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--kl-estimator [k1|k3]" in text and "--merge-lora / --no-merge-lora" in text
    assert "[default: 0.05]" in text  # kl_coef's default is shown


class Toy(StageConfig):
    output_dir: str
    """Where it goes."""
    rate: float = 0.5
    """How fast."""
    mode: Literal["a", "b"] = "a"
    """Which way."""
    switch: bool = True
    """Switch."""
    quiet: bool = False
    """Say less."""
    limit: Optional[int] = None
    """At most this many."""
    names: dict[str, str] = {}
    """Named paths."""
    items: list[str] = []
    """Some items."""
    new_field: int = 3
    """A field added later shows up on the command line with this help."""


def _parse(args, yaml_path=None):
    fields = config_options(Toy, {"output_dir": ["--output-dir", "-o"]})
    cmd = click.Command("toy", params=[f.option for f in fields])
    ctx = cmd.make_context("toy", list(args))
    overrides = {f.name: f.convert(ctx.params[f.option.name], f.option.opts[0]) for f in fields}
    return Toy.from_sources(yaml_path, overrides)


def test_flags_typed_and_left_out_flags_keep_the_yaml(tmp_path):
    (tmp_path / "t.yaml").write_text("output_dir: y\nrate: 0.25\nswitch: false\nquiet: true\nmode: b\n"
                                     "names: {x: '1'}\n")
    cfg = _parse([], tmp_path / "t.yaml")  # nothing given: the YAML stands, not the config's defaults
    assert cfg.quiet is True  # an absent --quiet/--no-quiet is None, not False
    assert (cfg.output_dir, cfg.rate, cfg.switch, cfg.mode, cfg.names, cfg.new_field) == ("y", 0.25, False, "b",
                                                                                      {"x": "1"}, 3)
    cfg = _parse(["-o", "z", "--rate", "2", "--switch", "--mode", "a", "--names", "p=q", "--names", "r=s=t",
                  "--items", "u", "--items", "v", "--new-field", "7"], tmp_path / "t.yaml")
    assert (cfg.output_dir, cfg.rate, cfg.switch, cfg.mode) == ("z", 2.0, True, "a")
    assert cfg.names == {"p": "q", "r": "s=t"} and cfg.items == ["u", "v"] and cfg.new_field == 7
    assert _parse(["-o", "z", "--no-switch"]).switch is False
    with pytest.raises(click.BadParameter):
        _parse(["-o", "z", "--mode", "c"])
    with pytest.raises(ConfigError, match="--names expects name=value, got 'p'"):
        _parse(["-o", "z", "--names", "p"])
    helps = {f.name: f.option.help for f in config_options(Toy)}
    assert helps["new_field"] == "A field added later shows up on the command line with this help.  [default: 3]"
    assert helps["output_dir"] == "Where it goes.  [required]" and helps["limit"] == "At most this many. Must be >= 1."


def test_help_and_the_annotation_commands_do_not_import_torch():
    code = ("import sys; from rlhaif.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['feedback', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "False", out.stderr
    assert "ai-label" in out.stdout and "simulate" in out.stdout and "serve" in out.stdout


def test_flag_names_kept(capsys):
    """The flags the commands had before they were made from the configs still parse."""
    for path, flags in [(("dpo",), ["--lr", "--lora-r", "--merge-lora", "-o"]),
                        (("ppo",), ["--learning-rate", "--lr", "--resume", "--no-resume", "--save-every"]),
                        (("cai", "revise"), ["--rounds", "-o"]), (("feedback", "ai-label"), ["-i", "--judge-model",
                                                                                          "--skip-invalid"]),
                        (("evaluate",), ["--model", "-m", "--training-metrics", "-o"]),
                        (("generate",), ["-k", "-o", "--output", "--max-prompt-length"]),
                        (("reward", "eval"), ["-o", "--data-lines"]), (("sft",), ["--lr", "--lora-r"])]:
        cmd = _command(path)
        names = {o for p in cmd.get_params(click.Context(cmd)) for o in (*p.opts, *p.secondary_opts)}
        assert set(flags) <= names, (path, set(flags) - names)


@pytest.mark.parametrize("args", [["feedback", "init", "--bogus"], ["generate", "--bogus"], ["nope"],
                                  ["generate", "--k", "x"]])
def test_a_usage_error_is_one_message_and_exit_code_2(args):
    out = subprocess.run([sys.executable, "-m", "rlhaif.cli", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Error:" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_build_twice_registers_each_command_once():
    """`main` builds the tree on every call; in one process (tests, notebooks) the commands must not pile up."""
    from rlhaif.cli import GROUPS, app, build

    build()
    counts = (len(app.registered_commands), {k: len(g.registered_commands) for k, g in GROUPS.items()})
    build()
    assert (len(app.registered_commands), {k: len(g.registered_commands) for k, g in GROUPS.items()}) == counts
    assert len(app.registered_commands) == 2  # run, demo
