"""Evaluation metrics as pure functions: diversity, length, refusal rate, win rate, paired gains (the KL to
the reference is ``rlhaif.policy.kl.sequence_kl``, the one PPO penalises).

Each takes plain lists and returns numbers; the evaluate stage composes them.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

# Phrases that open or carry a refusal, written for this project. Matching is case-insensitive on the
# response text with typographic apostrophes folded to "'"; a response counts once however many it holds.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i won't help",
    "i will not help",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i have to decline",
    "i'm sorry, but i",
    "i am sorry, but i",
    "sorry, i can't",
    "sorry, i cannot",
    "i can't do that",
    "i cannot do that",
    "i'm not going to",
    "i refuse to",
    "as an ai, i can't",
    "as an ai, i cannot",
    "it would not be appropriate",
    "it's not appropriate for me",
)

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the unit of distinct-n and of word length."""
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over every response.
    0.0 when the responses hold no n-gram at all."""
    total, seen = 0, set()
    for t in texts:
        w = words(t)
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def mean_length(lengths: Sequence[int | float]) -> float:
    """Mean of response lengths (tokens or words, whichever the caller counted)."""
    return sum(lengths) / len(lengths) if lengths else 0.0


def is_refusal(text: str, phrases: Sequence[str] = REFUSAL_PHRASES) -> bool:
    t = text.lower().replace("\u2019", "'")
    return any(p in t for p in phrases)


def refusal_rate(texts: Sequence[str], phrases: Sequence[str] = REFUSAL_PHRASES) -> float:
    """Share of responses that contain a refusal phrase (see REFUSAL_PHRASES)."""
    return sum(is_refusal(t, phrases) for t in texts) / len(texts) if texts else 0.0


def mean_and_ci(values: Sequence[float], z: float = 1.96) -> dict[str, float]:
    """Mean, standard error and a normal-approximation 95 % interval (mean ± z·se)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "se": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n)
    return {"mean": mean, "se": se, "low": mean - z * se, "high": mean + z * se, "n": n}


def win_rate(p_first: Sequence[float], p_second: Sequence[float]) -> dict[str, float]:
    """Win rate of a candidate against a baseline from judgments in both orders (position bias cancels).

    ``p_first[i]``: probability the judge prefers the candidate when it is shown first (as (A));
    ``p_second[i]``: the same probability with the candidate shown second (as (B)). Per prompt the label is
    their mean q_i; ``win_rate`` = mean q_i, ``wins``/``ties``/``losses`` count q_i >, =, < 0.5, and
    ``consistency`` is the share of prompts where both orders agree on the winner (Lee et al. 2023)."""
    assert len(p_first) == len(p_second), "one judgment per order per prompt"
    n = len(p_first)
    if n == 0:
        return {"win_rate": float("nan"), "wins": 0, "ties": 0, "losses": 0, "consistency": float("nan"), "n": 0}
    q = [(a + b) / 2 for a, b in zip(p_first, p_second)]
    eps = 1e-9
    return {
        "win_rate": sum(q) / n,
        "wins": sum(x > 0.5 + eps for x in q),
        "ties": sum(abs(x - 0.5) <= eps for x in q),
        "losses": sum(x < 0.5 - eps for x in q),
        "consistency": sum((a > 0.5) == (b > 0.5) for a, b in zip(p_first, p_second)) / n,
        "n": n,
    }


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None when fewer than 3 points or either side is constant. The report gives the
    correlation of each scorer with response length: a reward that mostly measures length is easy to hack by
    rambling (Singhal et al. 2023)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


# ----------------------------------------------------------------------------------------------- paired gains


def per_prompt_means(values: Sequence[float], samples_per_prompt: int) -> list[float]:
    """Means of consecutive runs of ``samples_per_prompt`` values: one per prompt (the evaluate stage lays
    a model's samples out prompt by prompt, k in a row)."""
    k = samples_per_prompt
    if k < 1 or len(values) % k:
        raise ValueError(f"{len(values)} values do not form runs of {k} samples per prompt")
    return [sum(values[i:i + k]) / k for i in range(0, len(values), k)]


def bootstrap_mean_ci(values: Sequence[float], rounds: int = 2000, seed: int = 0, level: float = 0.95
                      ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement ``rounds`` times
    (seeded), take the means' (1 − level)/2 and (1 + level)/2 quantiles (sorted means, indices
    ⌊rounds·(1 − level)/2⌋ and ⌈rounds·(1 + level)/2⌉ − 1)."""
    import random

    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    lo = means[int(math.floor(rounds * (1 - level) / 2))]
    hi = means[int(math.ceil(rounds * (1 + level) / 2)) - 1]
    return lo, hi


def paired_difference(values: Sequence[float], reference: Sequence[float], samples_per_prompt: int = 1,
                      rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """The paired gain of a model over a reference on the same prompts:  d_p = mean_k(model, p) −
    mean_k(reference, p), averaged over prompts, with a bootstrap 95 % interval over prompts (``low``,
    ``high``), the standard error of the mean difference (``se`` = sd(d)/√n) and the minimum detectable
    effect ``mde`` = 2.8·se (a true gain of that size is found with 80 % power at α = 0.05, two-sided:
    (1.96 + 0.84)·se). Pairing removes the prompt-to-prompt spread that unpaired intervals carry."""
    if len(values) != len(reference):
        raise ValueError(f"paired samples differ in number: {len(values)} vs {len(reference)}")
    d = [a - b for a, b in zip(per_prompt_means(values, samples_per_prompt),
                               per_prompt_means(reference, samples_per_prompt))]
    stats = mean_and_ci(d)
    lo, hi = bootstrap_mean_ci(d, rounds, seed)
    return {"mean": stats["mean"], "low": lo, "high": hi, "se": stats["se"], "mde": 2.8 * stats["se"],
            "prompts": len(d), "samples_per_prompt": samples_per_prompt}


def paired_comparisons(per_model: dict[str, dict[str, list[float]]], against: Sequence[str],
                       samples_per_prompt: int, kinds: Sequence[str] = ("gold", "proxy", "length"),
                       rounds: int = 2000, seed: int = 0) -> list[dict]:
    """``paired_difference`` of every model against each name in ``against`` (the baseline, the reference
    model), for each per-sample series in ``kinds`` both have: one row per (model, against, kind)."""
    rows = []
    for other in dict.fromkeys(against):  # in order, once each
        for name, series in per_model.items():
            if name == other or other not in per_model:
                continue
            for kind in kinds:
                if kind in series and kind in per_model[other]:
                    rows.append({"model": name, "against": other, "kind": kind,
                                 **paired_difference(series[kind], per_model[other][kind], samples_per_prompt,
                                                     rounds, seed)})
    return rows


def comparisons(models: Sequence[str], anchors: Sequence[str]) -> list[tuple[str, str]]:
    """(model, against) pairs of a report: every model against each anchor in turn (the reference model, then
    the baseline), except an anchor against the anchors before it — the baseline is the start, so the reference
    is shown as a gain over the baseline, not the baseline as a loss against the reference. Models [base, sft,
    rl] with anchors [sft, base] give (rl, sft), (sft, base), (rl, base)."""
    anchors = list(dict.fromkeys(anchors))
    return [(m, a) for i, a in enumerate(anchors) for m in models if m != a and m not in anchors[i + 1:]]


def objective_table(per_model: dict[str, dict[str, list[float]]], texts: dict[str, list[str]],
                    groups: Sequence[str] | None, objectives: Sequence[str], against: str | Sequence[str],
                    samples_per_prompt: int, rounds: int = 2000, seed: int = 0) -> list[dict]:
    """The evaluation by objective: for every model and anchor (``against``: one model, or several in the
    order of ``comparisons``), objective (a per-sample series of ``per_model``: each gold scorer) and prompt
    group (``groups``: one label per sample; with groups, 'all' follows them), the paired gain over the anchor
    on that group's prompts (``paired_difference``: mean, bootstrap 95 % interval, se, mde) beside the group's
    paired length change (``length_gain``, tokens) and both models' refusal rates (``refusal_rate``,
    ``refusal_rate_against``). One row per (model, anchor) × objective × group."""
    anchors = [against] if isinstance(against, str) else list(against)
    n = len(texts[anchors[0]])
    labels = list(groups) if groups is not None else ["all"] * n
    names = list(dict.fromkeys(labels)) + (["all"] if groups is not None else [])
    rows = []
    for model, anchor in comparisons([m for m in per_model if m in texts], anchors):
        series = per_model[model]
        for objective in objectives:
            if objective not in series or objective not in per_model[anchor]:
                continue
            for group in names:
                idx = [i for i in range(n) if group == "all" or labels[i] == group]
                pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
                row = {"objective": objective, "group": group, "model": model, "against": anchor,
                       **paired_difference(pick(series[objective]), pick(per_model[anchor][objective]),
                                           samples_per_prompt, rounds, seed)}
                if "length" in series and "length" in per_model[anchor]:
                    row["length_gain"] = paired_difference(pick(series["length"]), pick(per_model[anchor]["length"]),
                                                           samples_per_prompt, rounds, seed)["mean"]
                row["refusal_rate"] = refusal_rate(pick(texts[model]))
                row["refusal_rate_against"] = refusal_rate(pick(texts[anchor]))
                rows.append(row)
    return rows
