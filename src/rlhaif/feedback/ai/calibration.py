"""Measure an AI labeler against people before its labels are used (Lee et al. 2023 report exactly this:
the labeler's agreement with human preferences, before RLAIF trains on its labels).

On N human-labelled pairs (human p_h = probability that the first response is preferred; ties dropped) the
judge's debiased probability p (judge.py, both orders averaged) gives:

    agreement        a_i = 1 if (p > ½) = (p_h > ½),  ½ if p = ½,  0 otherwise;   A = mean a_i,
                     with a percentile-bootstrap 95 % interval over pairs (evaluate.metrics.bootstrap_mean_ci)
    first-slot share share of the 2N single-order verdicts that pick the response shown as (A): ½ is unbiased
    order agreement  share of pairs whose two single-order verdicts pick the same response
    mean confidence  mean max(p, 1 − p)
    at chance        the interval's lower bound ≤ the chance level (½ by default): the labels are not shown to
                     be better than a coin

Temperature scaling of the soft labels (Guo et al. 2017; the CAI paper trains on calibrated preference
probabilities): with z = logit(p), p' = σ(z / T), T chosen to minimise the mean log-loss against p_h,

    NLL(T) = −mean[ p_h·log σ(z/T) + (1 − p_h)·log σ(−z/T) ],

which is convex in a = 1/T; a is searched on [0, A_MAX] by golden section (a = 0: every label ½).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from rlhaif.evaluate.metrics import bootstrap_mean_ci

A_MAX = 20.0  # the sharpest calibration allowed: T ≥ 1/20
EPS = 1e-6  # p is clipped to [EPS, 1 − EPS] before taking log-odds


def agreement_scores(p_judge: Sequence[float], p_human: Sequence[float]) -> list[float]:
    """1 where the judge's pick is the human's, ½ where the judge is undecided (p = ½), 0 otherwise."""
    return [0.5 if p == 0.5 else float((p > 0.5) == (h > 0.5)) for p, h in zip(p_judge, p_human)]


def log_odds(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def mean_log_loss(p_judge: Sequence[float], p_human: Sequence[float], temperature: float = 1.0) -> float:
    """−mean[p_h·log σ(z/T) + (1 − p_h)·log σ(−z/T)], z = logit(p); log σ(x) = −log(1 + e^(−x)), stably."""
    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))

    total = 0.0
    for p, h in zip(p_judge, p_human):
        z = log_odds(p) / temperature
        total -= h * log_sigmoid(z) + (1.0 - h) * log_sigmoid(-z)
    return total / len(p_judge)


def fit_temperature(p_judge: Sequence[float], p_human: Sequence[float], iters: int = 80) -> float:
    """The T of temperature scaling that minimises the mean log-loss (golden section on a = 1/T ∈ [0, A_MAX]);
    ``math.inf`` when the best scale is 0 (the judge's log-odds carry no information)."""
    z = [log_odds(p) for p in p_judge]

    def loss(a: float) -> float:
        return mean_log_loss([sigmoid(a * zi) for zi in z], p_human) if a > 0 else math.log(2.0)

    lo, hi = 0.0, A_MAX
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc <= fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = loss(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = loss(d)
    a = (lo + hi) / 2.0
    return math.inf if a < 1e-4 else 1.0 / a


def apply_temperature(p: float, temperature: float) -> float:
    """p' = σ(logit(p) / T); T = ∞ gives ½."""
    return 0.5 if math.isinf(temperature) else sigmoid(log_odds(p) / temperature)


@dataclass(frozen=True)
class LabelerCheck:
    """The labeler measured on a human-labelled calibration set."""

    n: int
    """Calibration pairs with a human preference (human ties are dropped)."""
    agreement: float
    low: float
    high: float
    """Agreement with the people and its bootstrap 95 % interval over pairs."""
    first_slot_share: float
    """Share of single-order verdicts picking the response shown first; ½ is no position bias."""
    order_agreement: float
    """Share of pairs on which both orders pick the same response."""
    mean_confidence: float
    """mean max(p, 1 − p) of the judge's debiased labels."""
    temperature: float
    """Temperature-scaling T fitted on the set (inf: the labels carry no information, every p becomes ½)."""
    log_loss: float
    log_loss_calibrated: float
    """Mean log-loss of the labels against the people before and after temperature scaling (in sample)."""
    chance: float
    """The level at or below which the interval's lower bound means 'not better than chance'."""

    @property
    def at_chance(self) -> bool:
        return not self.low > self.chance

    def as_dict(self) -> dict:
        d = asdict(self)
        d["temperature"] = None if math.isinf(self.temperature) else round(self.temperature, 4)
        d["at_chance"] = self.at_chance
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}

    def summary(self) -> str:
        line = (f"labeler agreement with people: {self.agreement:.1%} [{self.low:.1%}, {self.high:.1%}] on {self.n} "
                f"pairs; first-slot picks {self.first_slot_share:.1%}, orders agree {self.order_agreement:.1%}, "
                f"mean confidence {self.mean_confidence:.3f}")
        if self.at_chance:
            line += (f"\nWARNING: the judge's labels are not better than chance (the interval's lower bound "
                     f"{self.low:.1%} is not above {self.chance:.0%}). Use a larger judge model (--judge-model) or "
                     "an endpoint serving one (--api chat|completions --base-url URL); docs/ai-feedback.md.")
        return line


def measure_labeler(p_ab: Sequence[float], p_ba: Sequence[float], p: Sequence[float], p_human: Sequence[float],
                    chance: float = 0.5, seed: int = 0) -> LabelerCheck:
    """The check of ``LabelerCheck`` from the judge's single-order P(A)s (``p_ab``: first response shown as A;
    ``p_ba``: shown as B), its debiased p and the people's p_h, all of the first response. Pairs whose human
    label is a tie are dropped."""
    keep = [i for i, h in enumerate(p_human) if h != 0.5]
    if not keep:
        raise ValueError("the calibration set holds no pair with a human preference (all ties)")
    p_ab, p_ba, p, h = ([xs[i] for i in keep] for xs in (p_ab, p_ba, p, p_human))
    scores = agreement_scores(p, h)
    low, high = bootstrap_mean_ci(scores, seed=seed)
    n = len(scores)
    temperature = fit_temperature(p, h)
    return LabelerCheck(
        n=n, agreement=sum(scores) / n, low=low, high=high,
        first_slot_share=sum((a > 0.5) + (b > 0.5) for a, b in zip(p_ab, p_ba)) / (2 * n),
        order_agreement=sum((a > 0.5) == (b < 0.5) for a, b in zip(p_ab, p_ba)) / n,
        mean_confidence=sum(max(x, 1 - x) for x in p) / n,
        temperature=temperature, log_loss=mean_log_loss(p, h),
        log_loss_calibrated=mean_log_loss([apply_temperature(x, temperature) for x in p], h),
        chance=chance)
