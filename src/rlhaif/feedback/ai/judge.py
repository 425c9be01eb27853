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

from pydantic import model_validator

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


def judge_pairs(backend, items: Sequence[tuple[Prompt, str, str, Principle]], chain_of_thought: bool = False,
                clamp: tuple[float, float] = (0.4, 0.6), cot_max_new_tokens: int = 128,
                seed: int = 0) -> list[Judgment]:
    """Judge (prompt, first, second, principle) items in both orders with one batched backend call."""
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
    lps = backend.continuation_logprobs([Query(m, f, list(OPTIONS)) for m, f in zip(orders, prefills)])
    out = []
    for i in range(len(items)):
        p_ab, p_ba = ab_probability(*lps[2 * i]), ab_probability(*lps[2 * i + 1])
        p = debiased_probability(p_ab, p_ba)
        if chain_of_thought:
            p = min(max(p, clamp[0]), clamp[1])
        out.append(Judgment(p_ab, p_ba, p, (reasoning[2 * i], reasoning[2 * i + 1]) if reasoning else None))
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

    @model_validator(mode="after")
    def _one_source(self) -> "AILabelConfig":
        if (self.input is None) == (self.db is None):
            raise ValueError("give exactly one of 'input' (a completions or pairs file) and 'db' (a feedback store)")
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
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def run_ai_label(cfg: AILabelConfig, backend=None) -> dict:
    """Judge every pair and write ``pairs.jsonl``. ``backend`` overrides the one built from ``cfg`` (tests)."""
    from rlhaif.data.io import append_jsonl, read_jsonl_tolerant, write_records
    from rlhaif.data.records import PairRecord
    from rlhaif.feedback.ai.backends import make_backend
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
    model_name = Path(cfg.judge_model).name if Path(cfg.judge_model).exists() else cfg.judge_model
    keys = [cache_key(model_name, cfg, r["prompt"], r["first"], r["second"], pr) for r, pr in zip(rows, principles)]
    cache_path = out / "ai_label_cache.jsonl"
    cache = {c["key"]: c for c in read_jsonl_tolerant(cache_path) if "key" in c}
    todo = [i for i, k in enumerate(keys) if k not in cache]
    hits = len(rows) - len(todo)
    if todo and backend is None:
        backend = make_backend(cfg.judge_model, cfg.api, cfg.base_url, cfg.api_key_env, cfg.dtype, cfg.max_length,
                               cfg.batch_size, cfg.timeout, cfg.max_retries, cfg.concurrency, cfg.requests_per_second)
    chunk = max(cfg.batch_size * 4, 16)
    confidence: list[float] = []  # p of the preferred response of each pair judged here: the bar's running mean
    with MetricsLogger(out, total_steps=len(todo), description="ai-label") as log:
        for step, start in enumerate(range(0, len(todo), chunk)):
            idx = todo[start:start + chunk]
            items = [(rows[i]["prompt"], rows[i]["first"], rows[i]["second"], principles[i]) for i in idx]
            judged = judge_pairs(backend, items, cfg.chain_of_thought, tuple(cfg.cot_clamp), cfg.cot_max_new_tokens,
                                 cfg.seed + start)
            for i, j in zip(idx, judged):
                cache[keys[i]] = {"key": keys[i], "p_ab": j.p_ab, "p_ba": j.p_ba, "p": j.p,
                                  **({"reasoning": list(j.reasoning)} if j.reasoning else {})}
                append_jsonl(cache_path, cache[keys[i]])  # flushed per label: a crash loses nothing paid for
            confidence += [max(j.p, 1 - j.p) for j in judged]
            log.log(step, {"ai/p_chosen_mean": _mean(confidence),
                           "ai/position_bias": sum((j.p_ab > 0.5) + (j.p_ba > 0.5) for j in judged) / (2 * len(judged))},
                    advance=len(idx))

    pairs, agree = [], []
    for r, pr, k in zip(rows, principles, keys):
        c = cache[k]
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
                                      "p": cache[k]["p"], "p_orders": [cache[k]["p_ab"], cache[k]["p_ba"]]}
                                     for r, pr, k in zip(rows, principles, keys))
        store.close()
    judged_all = [cache[k] for k in keys]
    stats = {"n_pairs": len(pairs), "input_kind": kind, "cache_hits": hits, "judged": len(todo),
             "p_chosen_mean": _mean([max(c["p"], 1 - c["p"]) for c in judged_all]),
             "position_bias": _mean([(c["p_ab"] > 0.5) + (c["p_ba"] > 0.5) for c in judged_all]) / 2,
             "order_consistency": _mean([float((c["p_ab"] > 0.5) == (c["p_ba"] < 0.5)) for c in judged_all])}
    if agree:
        stats["agreement"] = _mean(agree)
    if store is not None:
        stats["stored_in"] = f"{cfg.db} (campaign {cfg.campaign!r}, {stored} AI labels)"
    wall = round(time.time() - t0, 2)
    result = {"pairs": str(out / "pairs.jsonl"), **stats, "wall_time_s": wall}
    write_stage_manifest("ai_label", cfg, result, wall_time_s=wall)
    return result


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")
