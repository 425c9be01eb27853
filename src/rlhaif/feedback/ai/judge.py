"""The AI judge (RLAIF): a multiple-choice question whose normalized (A)/(B) probabilities are soft labels.

For a conversation c, responses y1 and y2 and one principle drawn at random (Bai et al. 2022, §4.1), the judge
sees the conversation, the principle's comparison question and the options, then "The answer is:".

    P(A | y1 first) = exp ℓ_A / (exp ℓ_A + exp ℓ_B) = σ(ℓ_A − ℓ_B)     ℓ_X = log P(" (X)" | question), all tokens
    p(y1 ≻ y2)      = ½ [ P(A | y1 first) + P(B | y2 first) ]          both orders, against position bias
                                                                        (Lee et al. 2023, RLAIF §2.1)

Chain-of-thought mode samples the judge's reasoning first, then reads the answer the same way; its labels
are near 0/1, so p is clamped to [0.4, 0.6] by default (Bai et al. 2022, §4.1).

``run_ai_label`` reads completions.jsonl (every pair of the K responses of a prompt), a pairs file (to
relabel) or the pairwise tasks of a feedback store (labels then also go into the store, beside the human
judgments), and writes pairs.jsonl oriented so that ``chosen`` is the judge's pick (p ≥ 0.5), with
source ``ai:<model>:<principle>``. A cache file makes a rerun pay nothing for labels it already has.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from rlhaif.config import StageConfig
from rlhaif.data.records import Prompt, as_messages
from rlhaif.feedback.ai.backends import Query
from rlhaif.feedback.ai.constitution import Constitution, Principle

ANSWER_PREFILL = "The answer is:"
COT_PREFILL = "Let's think step by step:"
OPTIONS = (" (A)", " (B)")


def ab_probability(logprob_a: float, logprob_b: float) -> float:
    """P(A) normalized over the two options: exp ℓ_A / (exp ℓ_A + exp ℓ_B) = σ(ℓ_A − ℓ_B)."""
    d = logprob_a - logprob_b
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))


def debiased_probability(p_a_first: float, p_a_second: float) -> float:
    """p(y1 ≻ y2) = ½[P(A | y1 shown as A) + P(B | y1 shown as B)] = ½[p_ab + (1 − p_ba)]."""
    return 0.5 * (p_a_first + (1.0 - p_a_second))


def conversation_text(prompt: Prompt) -> str:
    return "\n".join(f"{'Human' if m['role'] != 'assistant' else 'Assistant'}: {m['content']}"
                     for m in as_messages(prompt) if m["role"] != "system")


def judge_messages(prompt: Prompt, principle: Principle, response_a: str, response_b: str) -> list[dict[str, str]]:
    """The multiple-choice question as one user turn (the prefill "The answer is:" follows as the assistant)."""
    text = (f"Consider the following conversation between a human and an assistant:\n\n{conversation_text(prompt)}"
            f"\n\n{principle.comparison_question}\nOptions:\n(A) {response_a.strip()}\n(B) {response_b.strip()}")
    return [{"role": "user", "content": text}]


@dataclass
class Judgment:
    """Both orders of one pair. ``p`` is the debiased probability that the first response is better."""

    p_ab: float  # P(A) with the first response shown as (A)
    p_ba: float  # P(A) with the first response shown as (B)
    p: float
    reasoning: tuple[str, str] | None = None
    failures: int = 0  # sampled verdicts naming no option (verdict mode), both orders


def vote_share(votes_a: int, votes_b: int) -> float:
    """P(A) of a verdict-mode order: the share of the parsed answers naming (A); ½ when none parsed."""
    return votes_a / (votes_a + votes_b) if votes_a + votes_b else 0.5


def judge_pairs(backend, items: Sequence[tuple[Prompt, str, str, Principle]], chain_of_thought: bool = False,
                clamp: tuple[float, float] = (0.4, 0.6), cot_max_new_tokens: int = 128,
                seed: int = 0, verdicts: int = 0, verdict_temperature: float = 1.0) -> list[Judgment]:
    """Judge (prompt, first, second, principle) items in both orders with one batched backend call.
    ``verdicts`` > 0: P(A) of each order is the share of that many sampled answers naming (A) (servers that
    return no log-probabilities); otherwise it is read from the log-probabilities of the options."""
    orders = []  # 2 per item: (messages, first response is A?)
    for prompt, y1, y2, pr in items:
        orders.append(judge_messages(prompt, pr, y1, y2))
        orders.append(judge_messages(prompt, pr, y2, y1))
    prefills = [ANSWER_PREFILL] * len(orders)
    reasoning = None
    if chain_of_thought:
        reasoning = backend.generate([(m, COT_PREFILL) for m in orders], max_new_tokens=cot_max_new_tokens,
                                     temperature=1.0, seed=seed)
        prefills = [f"{COT_PREFILL} {r.strip()}\n{ANSWER_PREFILL}" for r in reasoning]
    queries = [Query(m, f, list(OPTIONS)) for m, f in zip(orders, prefills)]
    if verdicts:
        counts = backend.verdicts(queries, verdicts, verdict_temperature, seed=seed)
        p_a = [vote_share(a, b) for a, b, _ in counts]
        failed = [c[2] for c in counts]
    else:
        p_a = [ab_probability(*lp) for lp in backend.continuation_logprobs(queries)]
        failed = [0] * len(queries)
    out = []
    for i in range(len(items)):
        p_ab, p_ba = p_a[2 * i], p_a[2 * i + 1]
        p = debiased_probability(p_ab, p_ba)
        if chain_of_thought:
            p = min(max(p, clamp[0]), clamp[1])
        out.append(Judgment(p_ab, p_ba, p, (reasoning[2 * i], reasoning[2 * i + 1]) if reasoning else None,
                            failed[2 * i] + failed[2 * i + 1]))
    return out


# ----------------------------------------------------------------------------------------------- the stage
class AILabelConfig(StageConfig):
    """Settings of `rlhaif feedback ai-label`."""

    input: Optional[str] = None
    """completions.jsonl (K ≥ 2 responses per prompt → every pair is judged) or a pairs file to relabel
    (pairs.jsonl, TRL or hh-rlhf format). Give this or ``db``."""
    db: Optional[str] = None
    """A feedback store (SQLite path or postgresql:// URL): judge the pairwise tasks of ``campaign`` and store
    the labels beside the human judgments (exported with them; shown to annotators only when suggestions
    are switched on)."""
    campaign: str = "default"
    """The store's pairwise campaign to label (with ``db``)."""
    output_dir: str = "ai_labels"
    """Where pairs.jsonl, the label cache (ai_label_cache.jsonl), metrics.jsonl and manifest.json go."""
    judge_model: str = "smollm2-135m-instruct"
    """Local model folder / built-in name (api 'hf'), or the model name the endpoint serves."""
    api: Literal["hf", "completions", "chat"] = "hf"
    """'hf': a local model; 'completions' or 'chat': an OpenAI-compatible endpoint at base_url."""
    base_url: Optional[str] = None
    """Endpoint root, e.g. http://127.0.0.1:8000/v1 (vLLM's server, Ollama, OpenAI)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable that holds the endpoint's API key (never put keys in config files)."""
    constitution: Optional[str] = None
    """Constitution YAML; the shipped default when unset. One principle is drawn at random per label."""
    judge_mode: Literal["auto", "logprobs", "verdicts"] = "auto"
    """'logprobs': P(A), P(B) from the options' log-probabilities; 'verdicts': sample ``verdicts`` answers per
    order and take the share naming (A) (for endpoints that return no log-probabilities); 'auto':
    log-probabilities, switching to verdicts when the endpoint returns none."""
    verdicts: int = Field(5, ge=1)
    """Answers sampled per order in verdict mode; p is a share of votes (a multiple of 1/(2·verdicts))."""
    verdict_temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the verdicts."""
    chain_of_thought: bool = False
    """Sample the judge's reasoning before reading its answer; p is then clamped to cot_clamp."""
    cot_clamp: tuple[float, float] = (0.4, 0.6)
    """Range chain-of-thought labels are clamped to (CoT probabilities are overconfident)."""
    cot_max_new_tokens: int = 128
    """Length cap of the sampled reasoning."""
    max_length: int = 384
    """Longest judge input in tokens (local model); longer conversations are cut from the left."""
    batch_size: int = 8
    """Judge questions per forward pass (local model)."""
    dtype: str = "float32"
    """float32, bfloat16 or float16 (local model)."""
    limit: Optional[int] = None
    """Judge only the first N pairs."""
    skip_invalid: bool = False
    """Drop malformed hh-rlhf records of a pairs input (a handful exist in the public data) instead of stopping."""
    seed: int = 0
    """Seeds the principle draw (and chain-of-thought sampling)."""
    timeout: float = 60.0
    """Seconds to wait for one endpoint reply before retrying."""
    max_retries: int = 5
    """Retries on HTTP 429/5xx and timeouts, with exponential backoff."""
    concurrency: int = 4
    """Requests in flight at once (endpoint)."""
    requests_per_second: Optional[float] = None
    """Cap on the request rate (endpoint); unset = no cap."""
    calibration: Optional[str] = None
    """Human-labelled pairs (pairs.jsonl, TRL or hh-rlhf format) the judge is measured on before it labels:
    agreement with the people and its bootstrap 95 % interval, first-slot share, order agreement, mean
    confidence, in the log, metrics.jsonl and the manifest (``labeler``). Unset: the labels are not measured."""
    calibration_limit: Optional[int] = 200
    """Measure on the first N calibration pairs (unset: all)."""
    chance_level: float = Field(0.5, ge=0.0, le=1.0)
    """Warn that the labels are not better than chance when the agreement interval's lower bound is at or
    below this."""
    min_agreement: Optional[float] = Field(None, ge=0.0, le=1.0)
    """Stop before labeling when the measured agreement is below this (needs ``calibration``)."""
    calibrate: bool = False
    """Rescale the labels' log-odds by the temperature fitted on the calibration set (needs ``calibration``):
    p' = σ(logit(p)/T)."""

    @model_validator(mode="after")
    def _one_source(self) -> "AILabelConfig":
        if (self.input is None) == (self.db is None):
            raise ValueError("give exactly one of 'input' (a completions or pairs file) and 'db' (a feedback store)")
        if self.judge_mode == "verdicts" and self.api == "hf":
            raise ValueError("judge_mode 'verdicts' is for endpoints (api 'chat' or 'completions'); a local model "
                             "('hf') gives log-probabilities")
        if self.judge_mode != "logprobs" and self.chain_of_thought and self.api != "hf":
            raise ValueError("chain_of_thought needs log-probabilities: set judge_mode 'logprobs' with an endpoint "
                             "that returns them")
        if self.calibration is None and (self.min_agreement is not None or self.calibrate):
            raise ValueError("'min_agreement' and 'calibrate' need 'calibration' (a human-labelled pairs file)")
        return self


def load_items(path: str, limit: int | None = None, skip_invalid: bool = False) -> tuple[str, list[dict]]:
    """('completions' | 'pairs', rows of {prompt, first, second, prior_p?}) from a completions or pairs file."""
    from rlhaif.data.formats import read_pairs
    from rlhaif.data.io import parse_record, read_jsonl
    from rlhaif.data.records import CompletionRecord

    first = next(iter(read_jsonl(path)), None)
    if first is None:
        from rlhaif.errors import DataError

        raise DataError(path, None, None, "the file holds no records")
    if "response" in first[1] and "prompt_id" in first[1]:
        groups: dict[str, list[CompletionRecord]] = {}
        for lineno, obj in read_jsonl(path):
            rec = parse_record(CompletionRecord, obj, path, lineno)
            groups.setdefault(rec.prompt_id, []).append(rec)
        rows = []
        for recs in groups.values():
            recs.sort(key=lambda r: r.index)
            for a, b in combinations(recs, 2):
                if a.response.strip() and b.response.strip() and a.response != b.response:
                    rows.append({"prompt": a.prompt, "first": a.response, "second": b.response})
        kind = "completions"
    else:
        rows = [{"prompt": p.prompt, "first": p.chosen, "second": p.rejected, "prior_p": p.p, "id": p.id}
                for p in read_pairs(path, skip_invalid)]
        kind = "pairs"
    return kind, rows[:limit] if limit else rows


def cache_key(model: str, cfg: AILabelConfig, prompt: Prompt, y1: str, y2: str, pr: Principle) -> str:
    body = [model, cfg.api, cfg.chain_of_thought, cfg.max_length, cfg.seed if cfg.chain_of_thought else 0,
            as_messages(prompt), y1, y2, pr.comparison_question]
    if cfg.judge_mode != "logprobs" and cfg.api != "hf":  # verdicts may be asked: their settings change the label
        body += [cfg.judge_mode, cfg.verdicts, cfg.verdict_temperature, cfg.seed]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class LabelCache:
    """The label cache (``ai_label_cache.jsonl``, one line per judged pair, flushed per label) and the backend,
    built only when a pair is missing from the cache."""

    def __init__(self, cfg: AILabelConfig, out: Path, backend=None):
        from rlhaif.data.io import read_jsonl_tolerant

        self.cfg, self.backend = cfg, backend
        self.path = out / "ai_label_cache.jsonl"
        self.labels = {c["key"]: c for c in read_jsonl_tolerant(self.path) if "key" in c}
        self.model_name = Path(cfg.judge_model).name if Path(cfg.judge_model).exists() else cfg.judge_model
        self.mode = "verdicts" if cfg.judge_mode == "verdicts" else "logprobs"

    def keys(self, rows: Sequence[dict], principles: Sequence[Principle]) -> list[str]:
        return [cache_key(self.model_name, self.cfg, r["prompt"], r["first"], r["second"], pr)
                for r, pr in zip(rows, principles)]

    def missing(self, keys: Sequence[str]) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self.labels]

    def judge(self, rows: Sequence[dict], principles: Sequence[Principle], keys: Sequence[str], log,
              prefix: str = "ai") -> int:
        """Judge the rows missing from the cache in chunks (one batched backend call each), logging the chunk's
        running ``<prefix>/p_chosen_mean`` (the mean p of the preferred response over the pairs judged so far,
        what the summary reports over all) and ``<prefix>/position_bias`` (the chunk's share of (A) picks).
        Returns the number judged."""
        from rlhaif.data.io import append_jsonl
        from rlhaif.feedback.ai.backends import make_backend

        cfg, todo = self.cfg, self.missing(keys)
        if todo and self.backend is None:
            self.backend = make_backend(cfg.judge_model, cfg.api, cfg.base_url, cfg.api_key_env, cfg.dtype,
                                        cfg.max_length, cfg.batch_size, cfg.timeout, cfg.max_retries, cfg.concurrency,
                                        cfg.requests_per_second)
        chunk = max(cfg.batch_size * 4, 16)
        confidence: list[float] = []  # p of the preferred response of each pair judged here
        for step, start in enumerate(range(0, len(todo), chunk)):
            idx = todo[start:start + chunk]
            items = [(rows[i]["prompt"], rows[i]["first"], rows[i]["second"], principles[i]) for i in idx]
            judged = self._judge_chunk(items, cfg.seed + start)
            for i, j in zip(idx, judged):
                self.labels[keys[i]] = {"key": keys[i], "p_ab": j.p_ab, "p_ba": j.p_ba, "p": j.p, "mode": self.mode,
                                        **({"failures": j.failures} if self.mode == "verdicts" else {}),
                                        **({"reasoning": list(j.reasoning)} if j.reasoning else {})}
                append_jsonl(self.path, self.labels[keys[i]])  # flushed per label: a crash loses nothing paid for
            confidence += [max(j.p, 1 - j.p) for j in judged]
            log.log(step, {f"{prefix}/p_chosen_mean": _mean(confidence),
                           f"{prefix}/position_bias": sum((j.p_ab > 0.5) + (j.p_ba > 0.5) for j in judged) / (2 * len(judged))},
                    advance=len(idx))
        return len(todo)

    def _judge_chunk(self, items, seed: int) -> list[Judgment]:
        """One batched call; in 'auto' mode an endpoint without log-probabilities switches the run to verdicts."""
        from rlhaif.feedback.ai.backends import NoLogprobs

        cfg = self.cfg
        try:
            return judge_pairs(self.backend, items, cfg.chain_of_thought, tuple(cfg.cot_clamp), cfg.cot_max_new_tokens,
                               seed, verdicts=cfg.verdicts if self.mode == "verdicts" else 0,
                               verdict_temperature=cfg.verdict_temperature)
        except NoLogprobs as e:
            if cfg.judge_mode != "auto" or self.mode == "verdicts":
                raise
            print(f"{e}\n-> judge_mode auto: asking for {cfg.verdicts} sampled verdicts per order instead")
            self.mode = "verdicts"
            return self._judge_chunk(items, seed)


def measure_on_calibration(cfg: AILabelConfig, cache: LabelCache, constitution: Constitution, log):
    """Judge the calibration pairs (the people's chosen response shown first; both orders are asked anyway)
    and measure the labeler against them (calibration.py)."""
    from rlhaif.feedback.ai.calibration import measure_labeler

    _, rows = load_items(cfg.calibration, cfg.calibration_limit, cfg.skip_invalid)
    rng = random.Random(cfg.seed + 1)
    principles = [constitution.sample_principle(rng) for _ in rows]
    keys = cache.keys(rows, principles)
    cache.judge(rows, principles, keys, log, prefix="calibration")
    got = [cache.labels[k] for k in keys]
    try:
        return measure_labeler([c["p_ab"] for c in got], [c["p_ba"] for c in got], [c["p"] for c in got],
                               [r["prior_p"] for r in rows], chance=cfg.chance_level, seed=cfg.seed)
    except ValueError as e:
        from rlhaif.errors import DataError

        raise DataError(cfg.calibration, None, "p", str(e)) from None


@dataclass(frozen=True)
class AILabelResult:
    """What `rlhaif feedback ai-label` made (also its manifest's ``outputs``)."""

    pairs: str
    """The pairs.jsonl written (soft labels p, source ai:<model>:<principle>)."""
    n_pairs: int
    input_kind: str
    """What the pairs were read from: 'store' (--db), 'completions' or 'pairs' (the input file's kind)."""
    cache_hits: int
    """Pairs whose labels came from the cache."""
    judged: int
    """Pairs the judge labelled in this run."""
    p_chosen_mean: float
    """Mean p of the preferred response, max(p, 1 − p) (pairs.jsonl's p), over every pair."""
    position_bias: float
    """Share of single-order judgments that prefer option (A); 0.5 = none."""
    order_consistency: float
    """Share of pairs whose two orders agree on the winner."""
    wall_time_s: float
    agreement: Optional[float] = None
    """Agreement with the input's prior labels (``prior_p``), when it has them."""
    stored_in: Optional[str] = None
    """The store and campaign the labels also went to (--db)."""
    judge_mode: str = "logprobs"
    """How the labels were read: 'logprobs', or 'verdicts' (sampled answers, for endpoints without them)."""
    verdicts_asked: Optional[int] = None
    verdicts_unparsed: Optional[int] = None
    """Verdict mode: answers asked for, and those naming no option."""
    labeler: Optional[dict] = None
    """The judge measured against the calibration set (rlhaif.feedback.ai.calibration.LabelerCheck)."""
    calibrated: Optional[bool] = None
    """Whether the labels were rescaled by the calibration set's temperature."""


def run_ai_label(cfg: AILabelConfig, backend=None) -> AILabelResult:
    """Judge every pair and write ``pairs.jsonl``. ``backend`` overrides the one built from ``cfg`` (tests).
    With ``calibration``, the judge is first measured on human-labelled pairs (and may stop there)."""
    from rlhaif.data.io import write_records
    from rlhaif.data.records import PairRecord
    from rlhaif.errors import RlhaifError
    from rlhaif.feedback.ai.calibration import apply_temperature
    from rlhaif.feedback.ai.constitution import load_constitution
    from rlhaif.manifest import write_stage_manifest
    from rlhaif.metrics import MetricsLogger

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    constitution: Constitution = load_constitution(cfg.constitution)
    store = None
    if cfg.db is not None:
        from rlhaif.feedback.human.store import Store

        store = Store(cfg.db)
        store.check_ready()
        from rlhaif.data.records import parse_prompt

        kind, rows = "store", store.pairwise_items(cfg.campaign)
        rows = rows[:cfg.limit] if cfg.limit else rows
        for r in rows:  # the store keeps a chat prompt as plain JSON: back to messages
            r["prompt"] = parse_prompt(r["prompt"], f"{cfg.db}: campaign '{cfg.campaign}', task {r['task']}")
    else:
        kind, rows = load_items(cfg.input, cfg.limit, cfg.skip_invalid)
    rng = random.Random(cfg.seed)
    principles = [constitution.sample_principle(rng) for _ in rows]  # drawn up front: a rerun draws the same
    cache = LabelCache(cfg, out, backend)
    model_name = cache.model_name
    keys = cache.keys(rows, principles)
    check = None
    if cfg.calibration is not None:
        with MetricsLogger(out, description="ai-label: measuring the judge") as log:
            check = measure_on_calibration(cfg, cache, constitution, log)
            log.log(0, {f"labeler/{k}": v for k, v in check.as_dict().items() if isinstance(v, (int, float))},
                    advance=0)
        print(check.summary())
        if cfg.min_agreement is not None and check.agreement < cfg.min_agreement:
            if store is not None:
                store.close()
            raise RlhaifError(f"the judge agrees with the people on {check.agreement:.1%} of {check.n} calibration "
                              f"pairs ({cfg.calibration}), below min_agreement {cfg.min_agreement:.1%}: no labels "
                              "written. Use a larger judge model or an endpoint serving one (docs/ai-feedback.md).")
    hits = len(rows) - len(cache.missing(keys))
    with MetricsLogger(out, total_steps=len(rows) - hits, description="ai-label") as log:
        judged_now = cache.judge(rows, principles, keys, log)

    temperature = check.temperature if (check is not None and cfg.calibrate) else 1.0
    labels = [dict(cache.labels[k], p=apply_temperature(cache.labels[k]["p"], temperature)) for k in keys]
    pairs, agree = [], []
    for r, pr, c in zip(rows, principles, labels):
        p = c["p"]
        chosen, rejected = (r["first"], r["second"]) if p >= 0.5 else (r["second"], r["first"])
        extra = {"principle": pr.name, "p_orders": [c["p_ab"], c["p_ba"]]}
        if "prior_p" in r:
            extra["prior_p"] = r["prior_p"]
            agree.append(0.5 if p == 0.5 or r["prior_p"] == 0.5 else float((p > 0.5) == (r["prior_p"] > 0.5)))
        pairs.append(PairRecord(prompt=r["prompt"], chosen=chosen, rejected=rejected, p=max(p, 1 - p),
                                source=f"ai:{model_name}:{pr.name}", id=r.get("id"), **extra))
    write_records(out / "pairs.jsonl", pairs)
    if store is not None:
        stored = store.add_ai_labels({"task": r["task"], "model": model_name, "principle": pr.name,
                                      "p": c["p"], "p_orders": [c["p_ab"], c["p_ba"]]}
                                     for r, pr, c in zip(rows, principles, labels))
        store.close()
    wall = round(time.time() - t0, 2)
    verdicts = [c for c in labels if c.get("mode") == "verdicts"]
    result = AILabelResult(
        pairs=str(out / "pairs.jsonl"), n_pairs=len(pairs), input_kind=kind, cache_hits=hits, judged=judged_now,
        p_chosen_mean=_mean([max(c["p"], 1 - c["p"]) for c in labels]),
        position_bias=_mean([(c["p_ab"] > 0.5) + (c["p_ba"] > 0.5) for c in labels]) / 2,
        order_consistency=_mean([float((c["p_ab"] > 0.5) == (c["p_ba"] < 0.5)) for c in labels]),
        wall_time_s=wall, agreement=_mean(agree) if agree else None,
        stored_in=f"{cfg.db} (campaign {cfg.campaign!r}, {stored} AI labels)" if store is not None else None,
        judge_mode=cache.mode, verdicts_asked=2 * cfg.verdicts * len(verdicts) if verdicts else None,
        verdicts_unparsed=sum(c.get("failures", 0) for c in verdicts) if verdicts else None,
        labeler=check.as_dict() if check is not None else None,
        calibrated=cfg.calibrate if check is not None else None)
    write_stage_manifest("ai_label", cfg, result, wall_time_s=wall)
    return result


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")
