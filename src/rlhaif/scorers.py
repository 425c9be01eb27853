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
    ensemble:PATH[:RULE[:ALPHA]]   a reward-model ensemble (`rlhaif reward train --ensemble N`: a folder with
                               ensemble.json and one reward model per member; a bare folder holding
                               ensemble.json means the same), its members' scores combined by RULE: mean
                               (default), mean_minus_std (mean − ALPHA·std, ALPHA default 1) or min
                               (Coste et al. 2023; rlhaif.objectives.ensemble)
    judge:MODEL?OPTIONS        direct RLAIF (Lee et al. 2023): the AI judge's p(response ≻ reference response),
                               both orders (rlhaif.feedback.ai.judge). OPTIONS, '&'-separated key=value:
                               references=FILE (JSONL of prompt + response, or prompt + reference: each
                               prompt's reference response, e.g. the SFT model's completions.jsonl) or
                               baseline=TEXT (one fixed reference response); api=hf|completions|chat and
                               base_url=URL (the judge's backends), constitution=FILE, principle=NAME (default:
                               one principle per response, drawn by a seeded generator)

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
         "python:FILE.py:FUNCTION, python:MODULE:FUNCTION (or MODULE:FUNCTION), length, "
         "ensemble:PATH[:mean|:mean_minus_std[:ALPHA]|:min], judge:MODEL?references=FILE|baseline=TEXT")
ENSEMBLE_MANIFEST = "ensemble.json"
"""The file that makes a folder a reward-model ensemble: {"members": [member folders, relative to it], ...}."""
JUDGE_OPTIONS = ("references", "baseline", "api", "base_url", "constitution", "principle")


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec: ``kind`` and its parts (``path`` for models, files, ensemble folders and the judge
    model, ``module`` / ``function`` for Python scorers, ``label`` / ``output`` for classifiers, ``rule`` /
    ``alpha`` for ensembles, ``options`` (key, value) pairs for the judge)."""

    kind: Literal["reward_model", "classifier", "python", "length", "ensemble", "judge"]
    text: str
    path: Optional[str] = None
    module: Optional[str] = None
    function: Optional[str] = None
    label: Optional[str] = None
    output: Literal["logit", "logprob"] = "logit"
    rule: str = "mean"
    alpha: float = 1.0
    options: tuple[tuple[str, str], ...] = ()


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
    if sep and kind == "ensemble":
        return _ensemble(s, rest)
    if sep and kind == "judge":
        return _judge(s, rest)
    if Path(s).is_dir():
        return ScorerSpec("ensemble" if (Path(s) / ENSEMBLE_MANIFEST).exists() else "reward_model", s, path=s)
    if ":" in s:
        return _python(s, s)
    return ScorerSpec("reward_model", s, path=s)  # a bare name: a folder or a built-in reward model


def _ensemble(spec: str, rest: str) -> ScorerSpec:
    from rlhaif.objectives import ENSEMBLE_RULES

    parts, alpha = rest.split(":"), 1.0
    if len(parts) >= 3 and parts[-2] == "mean_minus_std":
        try:
            alpha = float(parts.pop())
        except ValueError:
            raise _bad(spec, "ALPHA after mean_minus_std must be a number") from None
    rule = parts.pop() if len(parts) >= 2 and parts[-1] in ENSEMBLE_RULES else "mean"
    if len(parts) >= 2 and parts[-1] and not Path(":".join(parts)).exists():
        raise _bad(spec, f"unknown ensemble rule '{parts[-1]}' (use one of: {', '.join(ENSEMBLE_RULES)})")
    if not ":".join(parts):
        raise _bad(spec, "no ensemble folder after 'ensemble:'")
    return ScorerSpec("ensemble", spec, path=":".join(parts), rule=rule, alpha=alpha)


def _judge(spec: str, rest: str) -> ScorerSpec:
    from urllib.parse import parse_qsl

    model, _, query = rest.partition("?")
    if not model:
        raise _bad(spec, "no judge model after 'judge:'")
    try:
        options = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad(spec, f"the options '{query}' are not key=value pairs joined by '&'") from None
    keys = [k for k, _ in options]
    unknown = [k for k in keys if k not in JUDGE_OPTIONS]
    if unknown:
        raise _bad(spec, f"unknown judge option '{unknown[0]}' (known: {', '.join(JUDGE_OPTIONS)})")
    if ("references" in keys) == ("baseline" in keys):
        raise _bad(spec, "the judge needs one reference: references=FILE (each prompt's reference response) "
                         "or baseline=TEXT (one fixed response)")
    return ScorerSpec("judge", spec, path=model, options=tuple(options))


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
    if s.kind == "ensemble":
        return EnsembleScorer([load_scorer(ScorerSpec("reward_model", m, path=m), device, dtype)
                               for m in ensemble_members(s)], s.rule, s.alpha)
    if s.kind == "judge":
        return _judge_scorer(s, device, dtype)
    from rlhaif.reward.model import load_reward_model

    return load_reward_model(s.path, device=device, dtype=dtype).score


# ----------------------------------------------------------------------------------------------- ensembles


def ensemble_members(spec: ScorerSpec) -> list[str]:
    """The member reward-model folders of an ensemble folder, from its ensemble.json."""
    import json

    folder = Path(spec.path)
    manifest = folder / ENSEMBLE_MANIFEST
    if not manifest.exists():
        raise ConfigError(f"scorer '{spec.text}': {manifest} not found; an ensemble folder is made by "
                          f"`rlhaif reward train --ensemble N`")
    try:
        members = json.loads(manifest.read_text(encoding="utf-8"))["members"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{manifest}: not an ensemble manifest with a 'members' list ({e})") from None
    if not members:
        raise ConfigError(f"{manifest}: 'members' is empty")
    return [str(folder / m) for m in members]


class EnsembleScorer:
    """Several scorers as one: every member scores the responses, ``rlhaif.objectives.ensemble`` combines."""

    def __init__(self, members: Sequence[Scorer], rule: str = "mean", alpha: float = 1.0):
        self.members, self.rule, self.alpha = list(members), rule, alpha

    def __call__(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        from rlhaif.objectives import ensemble

        return ensemble([[float(x) for x in m(prompts, responses)] for m in self.members], self.rule, self.alpha)


# ----------------------------------------------------------------------------------------------- the AI judge


class JudgeScorer:
    """Direct RLAIF (Lee et al. 2023): the score of a response is the judge's p(response ≻ reference), judged in
    both orders (``rlhaif.feedback.ai.judge.judge_pairs``). ``reference(prompt)`` gives the prompt's reference
    response; the principle is ``principle`` or one drawn per response by a generator seeded afresh each call."""

    def __init__(self, backend, reference: Callable[[Any], str], constitution, principle: Optional[str] = None,
                 seed: int = 0):
        self.backend, self.reference, self.constitution = backend, reference, constitution
        self.principle, self.seed = principle, seed

    def __call__(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        import random

        from rlhaif.feedback.ai.judge import judge_pairs

        rng = random.Random(self.seed)
        pick = (lambda: self.constitution.get(self.principle)) if self.principle else \
            (lambda: self.constitution.sample_principle(rng))
        items = [(p, r, self.reference(p), pick()) for p, r in zip(prompts, responses)]
        return [j.p for j in judge_pairs(self.backend, items, seed=self.seed)]


def reference_lookup(spec: ScorerSpec, options: dict[str, str]) -> Callable[[Any], str]:
    """prompt -> its reference response: the fixed ``baseline`` text, or the ``references`` file's response
    (field 'response', else 'reference') to the same prompt text; a prompt it lacks is an error naming it."""
    if "baseline" in options:
        text = options["baseline"]
        return lambda prompt: text
    from rlhaif.data.io import read_jsonl
    from rlhaif.errors import DataError

    path = options["references"]
    if not Path(path).exists():
        raise ConfigError(f"scorer '{spec.text}': references file {path} not found")
    table: dict[str, str] = {}
    for lineno, obj in read_jsonl(path):
        ref = obj.get("response", obj.get("reference")) if isinstance(obj, dict) else None
        if not isinstance(ref, str) or "prompt" not in obj:
            raise DataError(path, lineno, "response", "a reference needs 'prompt' and 'response' (or 'reference')")
        table.setdefault(_prompt_key(obj["prompt"]), ref)

    def lookup(prompt) -> str:
        key = _prompt_key(prompt)
        if key not in table:
            raise ConfigError(f"scorer '{spec.text}': {path} holds no reference response for the prompt "
                              f"{key[:80]!r}")
        return table[key]

    return lookup


def _prompt_key(prompt) -> str:
    """A prompt's text (a message list as 'role: content' lines), whether read from JSON or parsed."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" if isinstance(m, dict) else f"{m.role}: {m.content}"
                     for m in prompt)


def _judge_scorer(spec: ScorerSpec, device, dtype: str) -> Scorer:
    from rlhaif.feedback.ai.backends import make_backend
    from rlhaif.feedback.ai.constitution import load_constitution

    options = dict(spec.options)
    reference = reference_lookup(spec, options)
    constitution = load_constitution(options.get("constitution"))
    principle = options.get("principle")
    if principle:
        constitution.get(principle)  # an unknown name fails here, before training
    backend = make_backend(spec.path, api=options.get("api", "hf"), base_url=options.get("base_url"), dtype=dtype)
    return JudgeScorer(backend, reference, constitution, principle)
