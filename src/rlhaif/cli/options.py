"""Command-line options made from a stage's pydantic config, so the flags cannot drift from the config.

Each field becomes ``--field-name`` (underscores -> dashes) with the field's docstring as its help and its
default shown; ``Literal`` -> a choice, ``bool`` -> ``--x/--no-x``, ``list`` -> a repeatable flag,
``dict[str, str]`` -> a repeatable ``key=value`` flag, anything else nested -> a YAML value. Every flag
defaults to None, so a flag left out never overrides ``--config file.yaml`` (flags win over the YAML,
the YAML over the config's defaults).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import click
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rlhaif.config import RANGES
from rlhaif.errors import ConfigError

# Short names every command gives the same field.
COMMON_FLAGS: dict[str, list[str]] = {
    "output_dir": ["--output-dir", "-o"],
    "output": ["--output", "-o"],
    "learning_rate": ["--learning-rate", "--lr"],
    "input": ["--input", "-i"],
    "k": ["--k", "-k"],
}


def field_docs(cls: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field (``x: int = 0`` then ``\"\"\"...\"\"\"``), from the class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class FieldOption:
    """How one config field is read from the command line: the click option and the conversion back."""

    name: str
    option: click.Option
    convert: Callable[[Any, str], Any] = lambda v, flag: v


def _key_values(items: tuple[str, ...], flag: str) -> dict[str, str] | None:
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"{flag} expects name=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out or None


def _yaml_value(v: Any, flag: str) -> Any:
    import yaml

    if v is None:
        return None
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError as e:
        raise ConfigError(f"{flag}: not a valid YAML value ({e})") from None


def field_option(name: str, info: Any, doc: str, decls: list[str] | None = None) -> FieldOption:
    """The option of one pydantic field (``info``: its FieldInfo)."""
    tp = _unwrap_optional(info.annotation)
    origin = typing.get_origin(tp)
    decls = list(decls or [flag_name(name)])
    kw: dict[str, Any] = {"default": None, "show_default": False}
    note = ""
    convert: Callable[[Any, str], Any] = lambda v, flag: v
    if tp is bool:
        if "/" not in decls[0]:
            decls[0] = f"{decls[0]}/--no-{decls[0].removeprefix('--')}"
        kw["is_flag"] = True
    elif origin is Literal:
        kw["type"] = click.Choice([str(a) for a in typing.get_args(tp)])
    elif tp in (int, float, str):
        kw["type"] = tp
    elif origin is list and typing.get_args(tp) and typing.get_args(tp)[0] in (int, float, str):
        kw.update(type=typing.get_args(tp)[0], multiple=True)
        note = " Repeat the flag for more."
        convert = lambda v, flag: list(v) or None  # noqa: E731
    elif origin is dict:
        kw.update(type=str, multiple=True, metavar="NAME=VALUE")
        note = " Repeat the flag for more."
        convert = _key_values
    elif origin is tuple and all(a in (int, float, str) for a in typing.get_args(tp)):
        kw["type"] = tuple(typing.get_args(tp))
    else:
        kw.update(type=str, metavar="YAML")
        note = " Given as a YAML value."
        convert = _yaml_value
    if info.is_required():
        shown = "required"
    elif info.default in (None, PydanticUndefined) or info.default == {} or info.default == []:
        shown = ""
    else:
        shown = f"default: {info.default}"
    if name in RANGES:  # checked by StageConfig: say it where the flag is described
        note += f" Must be {RANGES[name].replace(', ', ' and ')}."
    kw["help"] = doc + note + (f"  [{shown}]" if shown else "")
    return FieldOption(name, click.Option(decls, **kw), convert)


def config_options(cls: type[BaseModel], flags: dict[str, list[str]] | None = None) -> list[FieldOption]:
    """One option per field of ``cls``; ``flags`` gives a field other names (e.g. ``--lr``)."""
    docs = field_docs(cls)
    unknown = sorted(set(flags or {}) - set(cls.model_fields))
    if unknown:  # an alias for a field the config no longer has would silently vanish from the command line
        raise ValueError(f"flags for fields {cls.__name__} does not have: {', '.join(unknown)}")
    names = {**COMMON_FLAGS, **(flags or {})}
    return [field_option(name, info, docs.get(name) or info.description or "", names.get(name))
            for name, info in cls.model_fields.items()]


@dataclass
class StageCommand:
    """A command that runs one stage: its options come from the stage's config class.

    ``stage``: a key of ``rlhaif.pipeline.STAGES`` or ``module:function`` (the function takes the config,
    found from its annotation, exactly as a recipe stage). ``report``: what to print from its result (the
    stage's result record). ``call``: how to call the function (default ``fn(cfg)``)."""

    path: tuple[str, ...]
    stage: str
    help: str
    report: Callable[[Any, Any], Optional[str]]
    flags: dict[str, list[str]] = field(default_factory=dict)
    call: Optional[Callable[[Callable, Any], Any]] = None

    def command(self) -> click.Command:
        return _LazyStageCommand(self)


class _LazyStageCommand(click.Command):
    """Imports the stage (and torch) only when the command runs or shows its help: ``rlhaif --help`` and
    the annotation app's commands stay light."""

    def __init__(self, spec: StageCommand):
        super().__init__(spec.path[-1], help=spec.help, short_help=spec.help.split(". ")[0].rstrip("."),
                         callback=self._run)
        self.spec = spec
        self._fields: list[FieldOption] | None = None

    def _load(self):
        from rlhaif.pipeline import stage_function

        fn, cls = stage_function(self.spec.stage, "rlhaif " + " ".join(self.spec.path))
        if self._fields is None:
            self._fields = config_options(cls, self.spec.flags)
            self.params = [f.option for f in self._fields] + [
                click.Option(["--config", "-c"], type=click.Path(path_type=Path), default=None,
                             help=f"YAML file with {cls.__name__} keys (the field names above); flags win.")]
        return fn, cls

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        self._load()
        return super().get_params(ctx)

    def _run(self, config: Optional[Path] = None, **values: Any) -> None:
        fn, cls = self._load()
        overrides = {f.name: f.convert(values[f.option.name], f.option.opts[0]) for f in self._fields}
        cfg = cls.from_sources(config, overrides)
        result = self.spec.call(fn, cfg) if self.spec.call else fn(cfg)
        line = self.spec.report(result, cfg)
        if line:
            click.echo(line)
