"""Typed stage configs: pydantic models that YAML only serialises, overridden by command-line flags.

A key that does not exist fails fast and names the closest real key:
``recipe.yaml: unknown key 'lerning_rate' in ppo; did you mean 'learning_rate'?``
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rlhaif.errors import ConfigError

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseModel):
    """Base of every stage's config: unknown keys are errors, fields are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def from_sources(cls: type[C], yaml_path: str | os.PathLike | None = None,
                     overrides: dict[str, Any] | None = None, where: str | None = None) -> C:
        """Build from an optional YAML file (or a sub-mapping of it, ``where``) then flag overrides.
        Flags left at ``None`` do not override."""
        data: dict[str, Any] = {}
        source = "<flags>"
        if yaml_path:
            source = str(yaml_path)
            data = load_yaml(yaml_path)
            if where:
                data = data.get(where) or {}
                if not isinstance(data, dict):
                    raise ConfigError(f"{source}: '{where}' must be a mapping of keys to values")
        for k, v in (overrides or {}).items():
            if v is not None:
                data[k] = v
        return cls.validate_dict(data, source)

    @classmethod
    def validate_dict(cls: type[C], data: dict[str, Any], source: str = "<config>") -> C:
        check_keys(cls, data, source)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = "is required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{source}: key '{loc}': {msg}") from None


class TrainLoopConfig(StageConfig):
    """Settings every training loop built on rlhaif.training shares (SFT, reward model); stage configs add
    their data, model, batch size and learning rate."""

    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up (then linear decay to 0)."""
    epochs: int = 1
    """Passes over the training data."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps (and size the schedule to it)."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """'bf16' autocast where the hardware supports it (falls back to fp32 elsewhere)."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward instead of keeping them (transformers' activation
    or gradient checkpointing): far less activation memory for about one more forward pass of compute. Off by
    default; TRL's trainers turn it on by default."""
    save_steps: int = 200
    """Checkpoint every N optimizer steps for resume (0 = only at the end)."""
    keep_checkpoints: bool = False
    """Keep checkpoints/ after a finished run (they hold optimizer state, about 3x the trained weights)."""
    resume: bool = True
    """Resume from the newest checkpoint in `output_dir` when one exists."""
    log_with: Optional[str] = None
    """Accelerate tracker: 'tensorboard' or 'wandb' (metrics.jsonl is always written)."""
    seed: int = 0
    """Seed of weight initialization (new heads, LoRA), dropout, data order and held-out splits."""


def check_keys(model: type[BaseModel], data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Reject unknown keys with a did-you-mean suggestion (nested config models are checked too)."""
    known = list(model.model_fields)
    for key, value in data.items():
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' for {model.__name__}{hint}")
        sub = model.model_fields[key].annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            check_keys(sub, value, source, f"{prefix}{key}.")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level mapping of a YAML file; a syntax error names the file and line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def dump_yaml(cfg: BaseModel, path: str | os.PathLike) -> None:
    """Write a config as YAML (the same keys ``from_sources`` reads back)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
