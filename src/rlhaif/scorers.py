"""One scorer syntax: every stage that scores responses (PPO, best-of-N, evaluation, simulated annotators,
online DPO's labeler) names its scorer with one string and loads it here.

A scorer is ``score(prompts, responses) -> list[float]`` (one float per response). Specs:

    reward_model:PATH          a reward model trained by `rlhaif reward train` (normalized score); a bare
    PATH                       folder that exists means the same
    classifier:PATH:LABEL      any sequence classifier; reward = the logit of LABEL (a name of the model's
                               id2label, or its index), scored on the response text alone
    classifier:PATH:LABEL:logprob   the same with log p(LABEL | response) (log-softmax over the labels)
    python:FILE.py:FUNCTION    a Python function fn(prompt_texts, responses) -> list[float]
    python:MODULE:FUNCTION     the same from an importable module; the bare forms FILE.py:FUNCTION and
                               MODULE:FUNCTION are accepted too
    length                     words / 10 (a toy scorer for tests and demos: longer is better)

``parse_scorer`` reads a spec without loading anything (configs validate early); ``load_scorer`` loads it.
Reward models get the prompt as given (text or messages); Python functions get plain prompt text.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from rlhaif.errors import ConfigError

Scorer = Callable[[Sequence[Any], Sequence[str]], list[float]]

FORMS = ("reward_model:PATH (or a bare folder), classifier:PATH:LABEL[:logit|:logprob], "
         "python:FILE.py:FUNCTION, python:MODULE:FUNCTION (or MODULE:FUNCTION), length")


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec: ``kind`` and its parts (``path`` for models and files, ``module`` /
    ``function`` for Python scorers, ``label`` / ``output`` for classifiers)."""

    kind: Literal["reward_model", "classifier", "python", "length"]
    text: str
    path: Optional[str] = None
    module: Optional[str] = None
    function: Optional[str] = None
    label: Optional[str] = None
    output: Literal["logit", "logprob"] = "logit"


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"scorer '{spec}': {why}; a scorer is one of: {FORMS}")


def _python(spec: str, target: str) -> ScorerSpec:
    mod, sep, fn = target.rpartition(":")
    if not sep or not mod or not fn.isidentifier():
        raise _bad(spec, f"'{target}' is not FILE.py:FUNCTION or MODULE:FUNCTION")
    if mod.endswith(".py"):
        return ScorerSpec("python", spec, path=mod, function=fn)
    if not all(part.isidentifier() for part in mod.split(".")):
        raise _bad(spec, f"'{mod}' is not a module name or a .py file")
    return ScorerSpec("python", spec, module=mod, function=fn)


def parse_scorer(spec: str) -> ScorerSpec:
    """Parse a scorer spec (see the module docstring); a malformed one raises ``ConfigError`` naming it."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty")
    s = spec.strip()
    if s == "length":
        return ScorerSpec("length", s)
    kind, sep, rest = s.partition(":")
    if sep and kind == "reward_model":
        if not rest:
            raise _bad(s, "no reward-model folder after 'reward_model:'")
        return ScorerSpec("reward_model", s, path=rest)
    if sep and kind == "classifier":
        parts = rest.split(":")
        output = "logit"
        if len(parts) >= 3 and parts[-1] in ("logit", "logprob"):
            output = parts.pop()
        if len(parts) < 2 or not parts[-1] or not ":".join(parts[:-1]):
            raise _bad(s, "a classifier needs a folder and a label: classifier:PATH:LABEL")
        return ScorerSpec("classifier", s, path=":".join(parts[:-1]), label=parts[-1], output=output)
    if sep and kind == "python":
        return _python(s, rest)
    if Path(s).is_dir():
        return ScorerSpec("reward_model", s, path=s)
    if ":" in s:
        return _python(s, s)
    return ScorerSpec("reward_model", s, path=s)  # a bare name: a folder or a built-in reward model


def length_scorer(prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
    """Words / 10: longer is better (a toy scorer)."""
    return [len(r.split()) / 10.0 for r in responses]


def _python_scorer(spec: ScorerSpec) -> Scorer:
    if spec.path is not None:
        path = Path(spec.path)
        if not path.exists():
            raise ConfigError(f"scorer '{spec.text}': file {path} not found")
        mspec = importlib.util.spec_from_file_location(f"rlhaif_user_scorer_{path.stem}", path)
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        where = str(path)
    else:
        try:
            module = importlib.import_module(spec.module)
        except ImportError as e:
            raise ConfigError(f"scorer '{spec.text}': cannot import module '{spec.module}' ({e})") from None
        where = spec.module
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise ConfigError(f"scorer '{spec.text}': '{spec.function}' is not a function of {where}")
    from rlhaif.data.records import prompt_text

    return lambda prompts, responses: fn([prompt_text(p) for p in prompts], list(responses))


class ClassifierScorer:
    """Any sequence classifier as a scorer: the logit (or log-probability) of one label, per response."""

    def __init__(self, model, tokenizer, label_index: int, output: str = "logit", max_length: int = 512,
                 batch_size: int = 16):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.label_index, self.output, self.max_length, self.batch_size = label_index, output, max_length, batch_size

    def __call__(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(responses), self.batch_size):
                enc = self.tokenizer(list(responses[i:i + self.batch_size]), truncation=True, padding=True,
                                     max_length=self.max_length, return_tensors="pt")
                logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
                if self.output == "logprob":
                    logits = torch.log_softmax(logits, dim=-1)
                out.extend(logits[:, self.label_index].tolist())
        return out


def label_index(spec: ScorerSpec, id2label: dict) -> int:
    """The output index of ``spec.label``: a name of ``id2label`` or an index."""
    names = {str(v): int(k) for k, v in id2label.items()}
    if spec.label in names:
        return names[spec.label]
    if spec.label.isdigit() and int(spec.label) < len(id2label):
        return int(spec.label)
    raise ConfigError(f"scorer '{spec.text}': label '{spec.label}' is not one of the classifier's labels "
                      f"({', '.join(f'{i}={n}' for n, i in sorted(names.items(), key=lambda x: x[1]))})")


def _classifier(spec: ScorerSpec, device, dtype: str) -> Scorer:
    from transformers import AutoModelForSequenceClassification

    from rlhaif.errors import RlhaifError
    from rlhaif.models.loading import _auto_tokenizer, parse_dtype, resolve_model

    path, kw = resolve_model(spec.path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=parse_dtype(dtype), **kw)
        tok = _auto_tokenizer(path, **kw)
    except (OSError, ValueError) as e:
        raise RlhaifError(f"scorer '{spec.text}': could not load a sequence classifier from '{spec.path}': {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    idx = label_index(spec, model.config.id2label)
    import torch

    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return ClassifierScorer(model, tok, idx, spec.output)


def load_scorer(spec: str | ScorerSpec, device=None, dtype: str = "float32") -> Scorer:
    """Load the scorer a spec names (parsing it first when given as a string)."""
    s = parse_scorer(spec) if isinstance(spec, str) else spec
    if s.kind == "length":
        return length_scorer
    if s.kind == "python":
        return _python_scorer(s)
    if s.kind == "classifier":
        return _classifier(s, device, dtype)
    from rlhaif.reward.model import load_reward_model

    return load_reward_model(s.path, device=device, dtype=dtype).score
