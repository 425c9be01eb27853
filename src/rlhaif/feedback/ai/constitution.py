"""A constitution: the written principles that guide AI critique, revision and preference labels.

YAML layout (``data/default_constitution.yaml`` is the shipped default, written in this project's words)::

    principles:
      - name: harm
        critique_request: "Point out every way the last answer could hurt someone ..."
        revision_request: "Rewrite the answer so that ..."
        comparison_question: "Which of these answers is less likely to hurt anyone?"

Constitutional AI (Bai et al. 2022) draws one principle at random, with replacement, for every critique
round and every preference label; ``sample_principle`` is that draw.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rlhaif.errors import ConfigError

FIELDS = ("name", "critique_request", "revision_request", "comparison_question")


class Principle(BaseModel):
    """One principle of a constitution."""

    model_config = ConfigDict(extra="forbid")
    name: str
    """Short identifier, written into labels' ``source`` as ``ai:<model>:<name>``."""
    critique_request: str
    """Asks the model to critique its last answer under this principle."""
    revision_request: str
    """Asks the model to rewrite its answer so that the critique no longer applies."""
    comparison_question: str
    """The judge's multiple-choice question: which of (A) and (B) better satisfies the principle."""


class FewShotExample(BaseModel):
    """A worked critique and revision, shown before the real task so a small model stays in role."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


class Constitution(BaseModel):
    """A list of principles (at least one) and where they were read from."""

    model_config = ConfigDict(extra="forbid")
    principles: list[Principle]
    source: str = "<memory>"

    def sample_principle(self, rng: random.Random) -> Principle:
        """One principle drawn uniformly at random (with replacement across calls)."""
        return rng.choice(self.principles)

    def get(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise ConfigError(f"{self.source}: no principle named '{name}'")


def _read_yaml(path: Path, what: str):
    if not path.exists():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None


def _items(data, key: str, path: Path, what: str) -> list:
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a list under '{key}:' (see the default {what})")
    if not items:
        raise ConfigError(f"{path}: '{key}' is empty; a {what} needs at least one entry")
    return items


def _entry(model: type[BaseModel], item, path: Path, key: str, i: int):
    label = f"{path}: {key}[{i}]" + (f" ('{item['name']}')" if isinstance(item, dict) and "name" in item else "")
    if not isinstance(item, dict):
        raise ConfigError(f"{label}: expected a mapping with keys {', '.join(model.model_fields)}")
    try:
        return model.model_validate(item)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        msg = "is missing" if err["type"] == "missing" else err["msg"]
        raise ConfigError(f"{label}: field '{field}' {msg}") from None


def default_constitution_path() -> Path:
    return Path(str(resources.files("rlhaif.feedback.ai") / "data" / "default_constitution.yaml"))


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Read a constitution YAML (the shipped default when ``path`` is None). A missing field, an empty
    string or an empty principle list stops with a message naming the file and the principle index."""
    path = Path(path) if path else default_constitution_path()
    items = _items(_read_yaml(path, "constitution"), "principles", path, "constitution")
    principles = []
    for i, item in enumerate(items):
        p = _entry(Principle, item, path, "principles", i)
        for f in FIELDS:
            if not getattr(p, f).strip():
                raise ConfigError(f"{path}: principles[{i}] ('{p.name}'): field '{f}' is empty")
        principles.append(p)
    names = [p.name for p in principles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: principle names must be unique; repeated: {', '.join(dup)}")
    return Constitution(principles=principles, source=str(path))


def load_fewshot(path: str | Path | None = None) -> list[FewShotExample]:
    """Few-shot critique/revision examples (the shipped ones when ``path`` is None)."""
    path = Path(path) if path else Path(str(resources.files("rlhaif.feedback.ai") / "data" / "fewshot.yaml"))
    items = _items(_read_yaml(path, "few-shot"), "examples", path, "few-shot file")
    return [_entry(FewShotExample, item, path, "examples", i) for i, item in enumerate(items)]
