"""Several objectives in one reward: the combination rules of the online loop and of reward-model ensembles,
as pure functions (docs/ppo.md, "Several objectives"; ../DESIGN.md).

    weighted     R = Σ_k w_k·s_k
    gated        R = s_safety  where the prompt is flagged risky or s_safety < τ,  else s_help      (Llama 2, τ = 0.15)
    constrained  R = (s_help − λ·s_cost) / (1 + λ),
                 λ ← max(0, λ + η_λ·(mean batch cost − d))  after every step                  (Safe RLHF, Dai et al. 2023)
    ensemble     s = mean_m s_m,   mean_m s_m − α·std_m s_m (population std),   or min_m s_m    (Coste et al. 2023)

Each scorer of an objective has a role: ``help`` (the reward to raise), ``safety`` (gated's safety score) or
``cost`` (constrained's cost, kept under the limit d). ``weighted`` combines every scorer by its weight, whatever
its role. Under ``gated`` and ``constrained`` a weight scales its scorer's score before the rule sees it (w = −1
makes a harmlessness score a cost: c = −s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Sequence

import torch

from rlhaif.config import StageConfig
from rlhaif.errors import ConfigError

RULES = ("weighted", "gated", "constrained")
"""The combination rules, by name."""
ROLES = ("help", "safety", "cost")
"""The roles a scorer can have in a rule."""
RULE_ROLES = {"gated": ("help", "safety"), "constrained": ("help", "cost")}
"""The roles each rule needs, one scorer each (``weighted`` needs none)."""
ENSEMBLE_RULES = ("mean", "mean_minus_std", "min")
"""How the members of a reward-model ensemble are combined."""
LOGGED = frozenset({"score", "kl", "beta", "entropy", "non_score_reward", "rlhf_reward", "zero_std_share",
                    "group_score_std", "lambda"})
"""The loop's own ``objective/<x>`` metrics: no scorer may take one of these names (and the report tells a
scorer's curve from them by this set)."""


# ----------------------------------------------------------------------------------------------- the rules


def weighted(scores: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """R = Σ_k w_k·s_k over the scorers in ``scores`` (a scorer missing from ``weights`` has weight 1)."""
    return sum(float(weights.get(name, 1.0)) * torch.as_tensor(s, dtype=torch.float32) for name, s in scores.items())


def gated(help_scores: torch.Tensor, safety_scores: torch.Tensor, risky: torch.Tensor,
          threshold: Optional[float] = 0.15) -> torch.Tensor:
    """R = s_safety where ``risky`` (the prompt is flagged) or s_safety < ``threshold``, else s_help (Touvron
    et al. 2023, Llama 2 §3.2.2: τ = 0.15). ``threshold`` None gates by the prompt flag alone."""
    help_scores = torch.as_tensor(help_scores, dtype=torch.float32)
    safety_scores = torch.as_tensor(safety_scores, dtype=torch.float32)
    use_safety = torch.as_tensor(risky, dtype=torch.bool)
    if threshold is not None:
        use_safety = use_safety | (safety_scores < threshold)
    return torch.where(use_safety, safety_scores, help_scores)


def constrained(help_scores: torch.Tensor, cost_scores: torch.Tensor, lam: float) -> torch.Tensor:
    """R = (s_help − λ·s_cost) / (1 + λ) (Dai et al. 2023, Safe RLHF, eq. 11: the Lagrangian, rescaled so the
    reward keeps its scale as λ grows)."""
    help_scores = torch.as_tensor(help_scores, dtype=torch.float32)
    cost_scores = torch.as_tensor(cost_scores, dtype=torch.float32)
    return (help_scores - lam * cost_scores) / (1.0 + lam)


@dataclass
class Lagrangian:
    """The Lagrange multiplier of ``constrained``: after every step λ ← max(0, λ + lr·(mean batch cost − limit)).
    It grows while the mean cost is over the limit d and shrinks (to 0 at least) while under it."""

    lam: float
    lr: float
    limit: float

    def update(self, mean_cost: float) -> float:
        self.lam = max(0.0, self.lam + self.lr * (float(mean_cost) - self.limit))
        return self.lam

    def state_dict(self) -> dict[str, float]:
        return {"lam": self.lam}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.lam = float(state["lam"])


def ensemble(member_scores: Sequence[Sequence[float]] | torch.Tensor, rule: str = "mean",
             alpha: float = 1.0) -> list[float]:
    """Combine an ensemble's scores, (members M, responses B) → B: ``mean``, ``mean_minus_std`` (mean − α·std,
    the population std over the members: an uncertainty penalty) or ``min`` (Coste et al. 2023, worst-case
    optimization; Eisenstein et al. 2023)."""
    s = torch.as_tensor(member_scores, dtype=torch.float64)
    if s.dim() != 2 or s.shape[0] < 1:
        raise ValueError(f"ensemble scores must be (members, responses), got shape {tuple(s.shape)}")
    if rule == "mean":
        out = s.mean(0)
    elif rule == "mean_minus_std":
        out = s.mean(0) - alpha * s.std(0, unbiased=False)
    elif rule == "min":
        out = s.min(0).values
    else:
        raise ConfigError(f"unknown ensemble rule '{rule}'; use one of: {', '.join(ENSEMBLE_RULES)}")
    return out.tolist()


# ----------------------------------------------------------------------------------------------- set-up


@dataclass
class Objectives:
    """Several named scorers combined into one reward by a rule (``RULES``). ``roles``: name → role (``ROLES``);
    ``weights``: name → w (``weighted``); ``risky_field`` / ``risky_values``: the prompt-file field and the
    values that flag a prompt risky (``gated``); ``safety_threshold``: τ (``gated``); ``cost_limit`` d,
    ``lagrange_lr`` η_λ and ``lagrange_init`` λ₀ (``constrained``)."""

    specs: dict[str, str]
    rule: str = "weighted"
    roles: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    risky_field: Optional[str] = None
    risky_values: list[str] = field(default_factory=list)
    safety_threshold: Optional[float] = 0.15
    cost_limit: Optional[float] = None
    lagrange_lr: float = 0.05
    lagrange_init: float = 1.0
    lagrangian: Optional[Lagrangian] = None

    def __post_init__(self) -> None:
        check_objectives(self.specs, self.rule, self.roles, self.weights, self.cost_limit, self.risky_field,
                         self.risky_values)
        if self.rule == "constrained":
            self.lagrangian = Lagrangian(self.lagrange_init, self.lagrange_lr, self.cost_limit)

    def scorer_of(self, role: str) -> str:
        return next(name for name, r in self.roles.items() if r == role)

    def risky(self, records: Sequence[Any]) -> torch.Tensor:
        """Per prompt record (extra fields kept, e.g. ``kind``): flagged risky by ``risky_field``."""
        if not self.risky_field:
            return torch.zeros(len(records), dtype=torch.bool)
        return torch.tensor([str(prompt_field(r, self.risky_field)) in self.risky_values for r in records])

    def scaled(self, scores: Mapping[str, Any]) -> dict[str, Any]:
        """Each scorer's score times its weight (default 1): what ``gated`` and ``constrained`` combine."""
        return {name: float(self.weights.get(name, 1.0)) * s for name, s in scores.items()}

    def combine(self, scores: Mapping[str, torch.Tensor], records: Sequence[Any]) -> torch.Tensor:
        """The one reward R per response from every scorer's scores (name → (B,)) and the prompts' records."""
        if self.rule == "weighted":
            return weighted(scores, self.weights)
        scores = self.scaled(scores)
        if self.rule == "gated":
            return gated(scores[self.scorer_of("help")], scores[self.scorer_of("safety")], self.risky(records),
                         self.safety_threshold)
        return constrained(scores[self.scorer_of("help")], scores[self.scorer_of("cost")], self.lagrangian.lam)

    def after_step(self, mean_scores: Mapping[str, float]) -> dict[str, float]:
        """Update λ from the step's mean cost (``constrained``); the metrics to log (``objective/lambda``: the
        λ the step's rewards used)."""
        if self.lagrangian is None:
            return {}
        used = self.lagrangian.lam
        self.lagrangian.update(self.scaled(mean_scores)[self.scorer_of("cost")])
        return {"objective/lambda": used}

    def state_dict(self) -> dict[str, Any]:
        return {"lagrangian": self.lagrangian.state_dict()} if self.lagrangian else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.lagrangian is not None and state.get("lagrangian"):
            self.lagrangian.load_state_dict(state["lagrangian"])


def prompt_field(record: Any, name: str) -> Any:
    """A field of a prompt record, known or extra (``kind`` of the held-out prompts); None when absent."""
    if isinstance(record, Mapping):
        return record.get(name)
    value = getattr(record, name, None)
    if value is None:
        value = (getattr(record, "model_extra", None) or {}).get(name)
    return value


def prompt_field_values(path: str, name: str) -> list[str]:
    """The value of field ``name`` of every prompt in a JSONL prompt file, in file order (as read_prompts reads
    them); a prompt without it (or a .txt file, which has no fields) is one message naming the file, the line
    and the field."""
    from rlhaif.data.io import read_jsonl
    from rlhaif.errors import DataError

    if str(path).endswith(".txt"):
        raise DataError(path, None, name, f"a .txt prompt file has no fields; the prompts need a '{name}' field "
                        f"(JSONL: {{\"prompt\": ..., \"{name}\": ...}})")
    values = []
    for lineno, obj in read_jsonl(path):
        if obj.get(name) is None:
            raise DataError(path, lineno, name, f"the prompt has no '{name}' field (the field that groups or "
                            f"flags the prompts; every prompt needs one)")
        values.append(str(obj[name]))
    return values


def check_objectives(specs: Mapping[str, str], rule: str, roles: Mapping[str, str], weights: Mapping[str, float],
                     cost_limit: Optional[float], risky_field: Optional[str] = None,
                     risky_values: Sequence[str] = ()) -> None:
    """One clear message for a bad set-up: an unknown rule or role, a weight or role for a scorer that is not
    there, a rule without the roles it needs, a cost limit without a cost scorer, a name the loop logs itself."""
    from rlhaif.scorers import parse_scorer

    names = ", ".join(specs) or "none"
    if rule not in RULES:
        raise ConfigError(f"unknown combination rule '{rule}'; use one of: {', '.join(RULES)}")
    if not specs:
        raise ConfigError("objectives is empty: give name: scorer spec for each objective")
    for name, spec in specs.items():
        if name in LOGGED or not name or "/" in name:
            raise ConfigError(f"objective name '{name}' is taken by the loop's own objective/{name} metric or is "
                              f"not a plain name; the names it may not take: {', '.join(sorted(LOGGED))}")
        parse_scorer(spec)
    for what, mapping in (("weight", weights), ("role", roles)):
        for name in mapping:
            if name not in specs:
                raise ConfigError(f"objective_{what}s names '{name}', which is not a scorer of objectives ({names})")
    for name, role in roles.items():
        if role not in ROLES:
            raise ConfigError(f"objective '{name}' has unknown role '{role}'; use one of: {', '.join(ROLES)}")
    if cost_limit is not None and "cost" not in roles.values():
        raise ConfigError(f"cost_limit {cost_limit} is set but no objective has the role 'cost' "
                          f"(objective_roles: {dict(roles) or 'none'}): give the cost scorer role 'cost'")
    needed = RULE_ROLES.get(rule, ())
    for role in needed:
        have = [n for n, r in roles.items() if r == role]
        if len(have) != 1:
            raise ConfigError(f"combine '{rule}' needs exactly one objective with role '{role}' (roles: "
                              f"{', '.join(needed)}); objective_roles gives {dict(roles) or 'none'}")
    if needed and set(roles) != set(specs):
        missing = ", ".join(n for n in specs if n not in roles)
        raise ConfigError(f"combine '{rule}' combines only scorers with a role; {missing} has none (watch a "
                          f"scorer with monitor_scorers instead)")
    if rule == "constrained" and cost_limit is None:
        raise ConfigError("combine 'constrained' needs cost_limit (the limit d of the mean cost per response)")
    if risky_values and not risky_field:
        raise ConfigError("risky_values is set but risky_field is not: name the prompt-file field (e.g. kind)")


# ----------------------------------------------------------------------------------------------- the online loop


class ObjectivesConfig(StageConfig):
    """The several-objective settings of the online loop (``rlhaif ppo``: PPO, RLOO, GRPO, Dr. GRPO), in place of
    one ``reward_model`` / ``reward_fn``."""

    objectives: dict[str, str] = {}
    """Several named scorers, name -> scorer spec (rlhaif.scorers: reward_model:PATH, ensemble:PATH,
    classifier:PATH:LABEL, judge:MODEL?..., python:FILE.py:FUNCTION), combined into the one reward by `combine`;
    each one's mean is logged every step as objective/<name>."""
    combine: Literal["weighted", "gated", "constrained"] = "weighted"
    """How `objectives` make the reward: 'weighted' R = Σ w·s; 'gated' (Llama 2) the safety score on risky
    prompts or below `safety_threshold`, else the help score; 'constrained' (Safe RLHF) R = (s_help −
    λ·s_cost)/(1 + λ) with λ updated online to keep the mean cost under `cost_limit` (docs/ppo.md)."""
    objective_roles: dict[str, Literal["help", "safety", "cost"]] = {}
    """Each objective's role, name -> help | safety | cost: 'gated' needs one help and one safety scorer,
    'constrained' one help and one cost scorer; 'weighted' needs none."""
    objective_weights: dict[str, float] = {}
    """name -> weight w (default 1). 'weighted': R = Σ w·s (a negative weight penalizes); 'gated' and
    'constrained': each score is scaled by its w before the rule (w = -1 turns a harmlessness score into a cost);
    objective/<name> logs the unscaled score."""
    risky_field: Optional[str] = None
    """'gated': the prompt-file field that flags a risky prompt (e.g. kind); every prompt must have it."""
    risky_values: list[str] = []
    """'gated': the values of `risky_field` that count as risky (e.g. red-team)."""
    safety_threshold: Optional[float] = 0.15
    """'gated': τ, the safety score below which the safety score is the reward on any prompt (Llama 2: 0.15,
    on its safety model's scale; set it on your scorer's scale); None = the prompt flag alone."""
    cost_limit: Optional[float] = None
    """'constrained': d, the limit of the mean cost per response (the cost scorer's scale)."""
    lagrange_lr: float = 0.05
    """'constrained': η_λ, the step of λ ← max(0, λ + η_λ·(mean batch cost − d)) after every step."""
    lagrange_init: float = 1.0
    """'constrained': λ at the start (checkpointed with the run, so a resume continues from the saved λ)."""

    def build_objectives(self) -> Objectives:
        return Objectives(dict(self.objectives), self.combine, dict(self.objective_roles),
                          dict(self.objective_weights), self.risky_field, list(self.risky_values),
                          self.safety_threshold, self.cost_limit, self.lagrange_lr, self.lagrange_init)


class ObjectiveScorers:
    """The scoring of the online loop with several objectives: every named scorer scores the responses (each
    checked: one finite number per response, a message naming the scorer), the rule combines them."""

    def __init__(self, cfg: ObjectivesConfig, device=None):
        from rlhaif.scorers import load_scorer

        self.objectives = cfg.build_objectives()
        self.scorers = {name: load_scorer(spec, device=device) for name, spec in cfg.objectives.items()}

    def __call__(self, records: Sequence[Any], responses: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the reward R (B,), each scorer's scores name -> (B,)) for the prompt records and their responses."""
        from rlhaif.policy.ppo import check_scores

        prompts = [r.prompt for r in records]
        scores = {name: check_scores(fn(prompts, responses), len(responses), f"objective '{name}'")
                  for name, fn in self.scorers.items()}
        return self.objectives.combine(scores, records), scores

    def after_step(self, row: Mapping[str, float]) -> dict[str, float]:
        """Update λ from the step's logged mean scores (``objective/<name>``, averaged over processes, so every
        process updates alike); the metrics to add to the step's row."""
        return self.objectives.after_step({name: row[f"objective/{name}"] for name in self.scorers})

    def state_dict(self) -> dict[str, Any]:
        return self.objectives.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.objectives.load_state_dict(state)
