"""Typed stage configs: pydantic models that YAML only serialises, overridden by command-line flags.

A key that does not exist fails fast and names the closest real key:
``recipe.yaml: unknown key 'lerning_rate' in ppo; did you mean 'learning_rate'?``
"""

from __future__ import annotations

import difflib
import operator
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, ValidationInfo, field_validator

from rlhaif.errors import ConfigError

C = TypeVar("C", bound="StageConfig")

_POSITIVE, _NON_NEGATIVE, _AT_LEAST_1, _SHARE, _PROBABILITY = "> 0", ">= 0", ">= 1", ">= 0, < 1", "> 0, <= 1"
RANGES: dict[str, str] = {
    **dict.fromkeys(("learning_rate", "epochs", "clip_range", "clip_range_value", "kl_target", "kl_ceiling",
                     "score_clip", "tis_cap", "timeout", "requests_per_second", "beta"), _POSITIVE),
    **dict.fromkeys(("max_grad_norm", "weight_decay", "warmup_steps", "save_every", "lora_r", "temperature",
                     "top_k", "vf_coef", "entropy_coef", "kl_coef", "kl_loss_coef", "nll_alpha", "center_coef",
                     "kto_lambda_d", "kto_lambda_u", "max_retries", "sample_every", "samples_in_report",
                     "bootstrap_rounds", "normalize_samples", "seed", "lora_alpha"), _NON_NEGATIVE),
    **dict.fromkeys(("batch_size", "eval_batch_size", "mini_batch_size", "gradient_accumulation_steps", "max_steps",
                     "steps", "ppo_epochs", "k", "num_generations", "max_length", "max_new_tokens",
                     "max_prompt_length", "cot_max_new_tokens", "n_rounds", "kl_horizon", "concurrency", "overlap",
                     "max_prompts", "max_pairs", "limit", "best_of", "n", "per_prompt", "budget"), _AT_LEAST_1),
    **dict.fromkeys(("eval_fraction",), _SHARE),
    **dict.fromkeys(("top_p", "top_share"), _PROBABILITY),
    "gamma": ">= 0, <= 1", "lam": ">= 0, <= 1", "label_smoothing": ">= 0, <= 0.5", "port": ">= 0, <= 65535",
    # several objectives, the 2025–2026 knobs, the labeler check, label costs
    **dict.fromkeys(("lagrange_lr", "verdict_temperature"), _POSITIVE),
    **dict.fromkeys(("lagrange_init", "cost_per_hour"), _NON_NEGATIVE),
    **dict.fromkeys(("ensemble", "verdicts", "calibration_limit"), _AT_LEAST_1),
    "chance_level": ">= 0, <= 1", "min_agreement": ">= 0, <= 1",
}
"""The valid range of every numeric setting, by field name (a name means one thing in every stage, issue 14):
``StageConfig`` checks it in every stage's config, so a YAML file, a flag or a recipe (``rlhaif run --check``)
with a negative learning rate fails before anything loads. None (an unset optional) is not checked."""

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def range_error(name: str, value: Any) -> str | None:
    """Why ``value`` is out of the range RANGES gives the field ``name`` (None when it is in range, unset, not a
    number, or the field has no range)."""
    if name not in RANGES or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for bound in RANGES[name].split(", "):
        op, limit = bound.split(" ")
        if not _COMPARE[op](value, float(limit)):
            return f"must be {RANGES[name].replace(', ', ' and ')} (got {value})"
    return None


class StageConfig(BaseModel):
    """Base of every stage's config: unknown keys are errors, fields are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="after")
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        error = range_error(info.field_name, value)
        if error:
            raise ValueError(error)
        return value

    @classmethod
    def from_sources(cls: type[C], yaml_path: str | os.PathLike | None = None,
                     overrides: dict[str, Any] | None = None, where: str | None = None) -> C:
        """Build from an optional YAML file (or a sub-mapping of it, ``where``) then flag overrides.
        Flags left at ``None`` do not override."""
        data: dict[str, Any] = {}
        source = "<flags>"
        flags = {k for k, v in (overrides or {}).items() if v is not None}
        if yaml_path:
            source = str(yaml_path)
            data = load_yaml(yaml_path)
            if where:
                data = data.get(where) or {}
                if not isinstance(data, dict):
                    raise ConfigError(f"{source}: '{where}' must be a mapping of keys to values")
        for k in flags:
            data[k] = overrides[k]  # type: ignore[index]
        return cls.validate_dict(data, source, flags)

    @classmethod
    def validate_dict(cls: type[C], data: dict[str, Any], source: str = "<config>",
                      flags: set[str] | frozenset[str] = frozenset()) -> C:
        """Validate ``data`` (from ``source``); an error names the key, or the flag for the keys in ``flags``
        (given on the command line), or the source alone for a rule across keys."""
        check_keys(cls, data, source)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            msg = "is required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule across several keys (e.g. best_of needs a scorer): its message names them
                where = source if not flags else "the flags" if source == "<flags>" else f"{source} with the flags"
                raise ConfigError(f"{where}: {msg}") from None
            loc = ".".join(str(x) for x in err["loc"])
            if str(err["loc"][0]) in flags:
                raise ConfigError(f"{'--' + loc.replace('_', '-')}: {msg}") from None
            raise ConfigError(f"{source}: key '{loc}': {msg}") from None

    @classmethod
    def check_values(cls, data: dict[str, Any], source: str) -> None:
        """Check each value of ``data`` that holds no ``${...}`` reference against its field's type and range,
        alone (``rlhaif run --check``: the references are known only when the stages before have run)."""
        for key, value in data.items():
            info = cls.model_fields.get(key)
            if info is None or "${" in repr(value):
                continue
            try:
                value = TypeAdapter(info.annotation).validate_python(value)
            except ValidationError as e:
                raise ConfigError(f"{source}: key '{key}': {e.errors()[0]['msg']}") from None
            error = range_error(key, value)
            if error:
                raise ConfigError(f"{source}: key '{key}': {error}")


class TrainConfig(StageConfig):
    """Settings every trainer shares (SFT, reward model, DPO, PPO): output folder, learning rate, seed,
    checkpoints and resume, logging, precision. Stages set their own defaults for some of them.

    ``resume_may_change`` names the fields a resumed run may change (how long it runs, how it logs and
    saves); a resume with any other field changed is refused (``rlhaif.training.start_run``)."""

    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {"output_dir", "resume", "save_every", "keep_checkpoints", "log_with", "epochs", "max_steps"})

    output_dir: str = "runs/train"
    """Where the trained model, checkpoints/, metrics.jsonl and manifest.json go."""
    learning_rate: float = 1e-5
    """Peak AdamW learning rate (linear warm-up, then linear decay to 0)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 = off; the norm is logged either way)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Accelerate autocast: 'bf16' where the hardware supports it (falls back to fp32 elsewhere), 'fp16'."""
    save_every: int = 200
    """Checkpoint every N optimizer steps (and at the end) for resume; 0 = only at the end."""
    keep_checkpoints: bool = False
    """Keep checkpoints/ after a finished run (they hold optimizer state, about 3x the trained weights)."""
    resume: bool = True
    """Resume from the newest checkpoint in `output_dir` when one exists (refused when it was made with other
    settings); false = start afresh, deleting the folder's old checkpoints and metrics."""
    log_with: Optional[str] = None
    """Accelerate tracker: 'tensorboard' or 'wandb' (metrics.jsonl is always written)."""
    seed: int = 0
    """Seed of weight initialization (new heads, LoRA), dropout, data order and held-out splits."""


class TrainLoopConfig(TrainConfig):
    """Settings of the epoch-driven loops (SFT, reward model, DPO); stage configs add their data, model and
    batch size."""

    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up (then linear decay to 0)."""
    epochs: float = 1.0
    """Passes over the training data (fractions allowed); `max_steps` wins when set."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps (and size the schedule to it)."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in the backward instead of keeping them (transformers' activation
    or gradient checkpointing): far less activation memory for about one more forward pass of compute. Off by
    default; TRL's trainers turn it on by default."""


class LoRAConfig(StageConfig):
    """The LoRA settings of the policy trainers (SFT, DPO, PPO)."""

    lora_r: int = 16
    """LoRA rank; 0 = full fine-tuning."""
    lora_alpha: Optional[int] = None
    """LoRA scaling numerator α (the update is scaled by α / r); default 2 * lora_r."""
    merge_lora: bool = False
    """Save the LoRA adapter merged into the base (a plain model) instead of the adapter alone."""

    @property
    def lora_scale_alpha(self) -> int:
        """α as used: ``lora_alpha``, or 2 · ``lora_r`` when unset."""
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r


RENAMED_KEYS = {
    "save_steps": ("save_every", ""),
    "lora": ("lora_r", " (lora: false is lora_r: 0, full fine-tuning; lora: true is lora_r > 0)"),
}
"""Old keys that were renamed (issue 14: one name for one thing): old -> (new, note). An old key fails with
the usual unknown-key message, which suggests the new name."""


def check_keys(model: type[BaseModel], data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Reject unknown keys with a did-you-mean suggestion (nested config models are checked too; a renamed
    key suggests its new name)."""
    known = list(model.model_fields)
    for key, value in data.items():
        if key not in known:
            renamed = RENAMED_KEYS.get(key)
            near = ([renamed[0]] if renamed and renamed[0] in known
                    else difflib.get_close_matches(key, known, n=1, cutoff=0.6))
            note = renamed[1] if renamed and renamed[0] in known else ""
            hint = (f"; did you mean '{prefix}{near[0]}'?{note}" if near
                    else f"; known keys: {', '.join(sorted(known))}")
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
