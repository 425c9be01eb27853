"""Constitutional AI, supervised stage: answer → (critique → revision) × n, one principle drawn per round.

For each red-team prompt (Bai et al. 2022, §3): the model answers; then n times (default 4) a principle is
drawn at random *with replacement*, the model critiques its last answer under the principle's critique
request, and rewrites it under the revision request. A few-shot prefix of worked examples (ours, in
data/fewshot.yaml) comes first so a small model keeps critique and revision apart. Each round sees the
few-shot turns, the prompt, the answer being critiqued and, for the revision, its own critique (earlier
rounds are not repeated, which keeps the context short).

Outputs in ``output_dir``:
- ``revisions.jsonl``: one row per round {prompt_id, prompt, original, response, principle, critique,
  revision, round}; appended and flushed per prompt, so a rerun skips prompts already complete.
- ``sft.jsonl``: DemoRecord {prompt, response = final revision}.
- ``pairs.jsonl``: PairRecord {chosen = final revision, rejected = original answer, source "cai-revision"}.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rlhaif.config import StageConfig
from rlhaif.data.records import Message, Prompt, PromptRecord


class ReviseConfig(StageConfig):
    """Settings of `rlhaif cai revise`."""

    model: str = "smollm2-135m-instruct"
    """The model that answers, critiques and revises (folder, .gguf or built-in name)."""
    prompts: str
    """Red-team prompts: JSONL with 'prompt', .txt one per line, or an hh-rlhf file (the human's first turn)."""
    output_dir: str = "cai"
    """Where revisions.jsonl, sft.jsonl, pairs.jsonl, metrics.jsonl and manifest.json go."""
    constitution: Optional[str] = None
    """Constitution YAML; the shipped default when unset."""
    fewshot: Optional[str] = None
    """Few-shot examples YAML; the shipped examples when unset. Set to 'none' for no few-shot prefix."""
    n_rounds: int = 4
    """Critique → revision rounds per prompt, a principle drawn at random (with replacement) each round."""
    limit: Optional[int] = None
    """Use only the first N prompts."""
    max_new_tokens: int = 128
    """Length cap of each answer, critique and revision."""
    temperature: float = 0.7
    """Sampling temperature (the CAI paper samples at 1.0; a 135M model reads better a little lower)."""
    top_p: float = 0.95
    """Nucleus sampling threshold."""
    max_prompt_length: int = 1536
    """Longest model input in tokens; longer contexts are cut from the left (few-shot turns go first)."""
    batch_size: int = 8
    """Prompts processed together."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    seed: int = 0
    """Seeds the principle draws (random.Random(seed), in prompt order) and sampling."""


def read_red_team_prompts(path: str) -> list[PromptRecord]:
    """Prompts from a prompts file, or the human's first turn of each hh-rlhf transcript."""
    from rlhaif.data.formats import pairs_format, parse_hh_transcript
    from rlhaif.data.io import read_jsonl
    from rlhaif.errors import DataError
    from rlhaif.generate import read_prompts

    if not str(path).endswith(".txt"):
        first = next(iter(read_jsonl(path)), None)
        if first is not None and pairs_format(first[1]) == "hh":
            out = []
            for lineno, obj in read_jsonl(path):
                turns = parse_hh_transcript(obj.get("chosen", "") or "")
                human = next((t["content"] for t in turns if t["role"] == "user" and t["content"].strip()), None)
                if human is None:
                    raise DataError(path, lineno, "chosen", "no human turn found in the transcript")
                out.append(PromptRecord(id=str(lineno - 1), prompt=human.strip()))
            return out
    return read_prompts(path)


def fewshot_turns(examples) -> list[Message]:
    turns = []
    for ex in examples:
        for role, content in (("user", ex.prompt), ("assistant", ex.response), ("user", ex.critique_request),
                              ("assistant", ex.critique), ("user", ex.revision_request), ("assistant", ex.revision)):
            turns.append(Message(role=role, content=content.strip()))
    return turns


def as_turns(prompt: Prompt) -> list[Message]:
    return [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)


@dataclass(frozen=True)
class ReviseResult:
    """What `rlhaif cai revise` made (also its manifest's ``outputs``)."""

    output_dir: str
    revisions: str
    """revisions.jsonl: every critique and revision round."""
    demos: str
    """sft.jsonl: each prompt's last revision as a demonstration."""
    pairs: str
    """pairs.jsonl: last revision ≻ original answer."""
    prompts: int
    generated: int
    """Prompts answered, critiqued and revised in this run."""
    resumed: int
    """Prompts whose rounds an earlier run had written."""
    rounds: int
    """Rows of revisions.jsonl."""
    n_demos: int
    n_pairs: int
    empty_generations: int
    wall_time_s: float


def run_revise(cfg: ReviseConfig, model=None, tokenizer=None) -> ReviseResult:
    """Run critique → revision for every prompt not yet done; write revisions, SFT data and pairs."""
    import torch

    from rlhaif.data.io import append_jsonl, read_jsonl_tolerant, write_jsonl, write_records
    from rlhaif.data.records import DemoRecord, PairRecord
    from rlhaif.feedback.ai.constitution import load_constitution, load_fewshot
    from rlhaif.generate import SamplingConfig, sample
    from rlhaif.manifest import write_stage_manifest
    from rlhaif.metrics import MetricsLogger
    from rlhaif.tokens import encode_prompts

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    constitution = load_constitution(cfg.constitution)
    shots = [] if (cfg.fewshot or "").lower() == "none" else fewshot_turns(load_fewshot(cfg.fewshot))
    prompts = read_red_team_prompts(cfg.prompts)[:cfg.limit]
    for i, p in enumerate(prompts):
        p.id = p.id or str(i)
    # Every draw is made up front in prompt order, so a resumed run draws exactly what a fresh run would.
    rng = random.Random(cfg.seed)
    draws = [[constitution.sample_principle(rng) for _ in range(cfg.n_rounds)] for _ in prompts]

    # Resume: keep prompts whose every round is on disk; drop a prompt torn mid-write, then append the rest.
    path = out / "revisions.jsonl"
    rows = read_jsonl_tolerant(path)
    done_ids = {pid for pid in {r["prompt_id"] for r in rows}
                if sum(r["prompt_id"] == pid for r in rows) == cfg.n_rounds}
    kept = [r for r in rows if r["prompt_id"] in done_ids]
    if path.exists():  # rewritten atomically: also drops a torn last line before we append after it
        write_jsonl(path, kept)
    todo = [i for i, p in enumerate(prompts) if p.id not in done_ids]

    if todo and model is None:
        from rlhaif.models.loading import load_causal_lm

        model, tokenizer = load_causal_lm(cfg.model, dtype=cfg.dtype)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    empty = 0

    def generate(contexts: list[list[Message]]) -> list[str]:
        nonlocal empty
        ids = encode_prompts(tokenizer, contexts, cfg.max_prompt_length, truncate=True)
        texts = [tokenizer.decode(r, skip_special_tokens=True).strip()
                 for r, _ in sample(model, tokenizer, ids, sampling, cfg.batch_size)]
        empty += sum(not t for t in texts)
        log.advance(len(contexts))
        return texts

    # The bar counts generations (each prompt's answer, then a critique and a revision per round) and moves
    # after each batch of them: a batch of prompts takes 1 + 2 n_rounds generations (minutes on a CPU).
    passes = 1 + 2 * cfg.n_rounds
    with MetricsLogger(out, total_steps=len(todo) * passes, description="cai revise") as log:
        for step, start in enumerate(range(0, len(todo), cfg.batch_size)):
            idx = todo[start:start + cfg.batch_size]
            torch.manual_seed(cfg.seed * 100003 + idx[0])  # depends on the prompts, not on where a run resumed
            asks = [as_turns(prompts[i].prompt) for i in idx]
            originals = generate(asks)
            last = list(originals)
            rounds: list[list[dict]] = [[] for _ in idx]
            for r in range(cfg.n_rounds):
                prs = [draws[i][r] for i in idx]
                base = [shots + ask + [Message(role="assistant", content=ans or "(no answer)")]
                        for ask, ans in zip(asks, last)]
                crit_ctx = [b + [Message(role="user", content=pr.critique_request.strip())] for b, pr in zip(base, prs)]
                critiques = generate(crit_ctx)
                rev_ctx = [c + [Message(role="assistant", content=cr or "(no critique)"),
                                Message(role="user", content=pr.revision_request.strip())]
                           for c, cr, pr in zip(crit_ctx, critiques, prs)]
                revisions = generate(rev_ctx)
                for k, i in enumerate(idx):
                    rounds[k].append({"prompt_id": prompts[i].id, "prompt": prompts[i].model_dump()["prompt"],
                                      "original": originals[k], "response": last[k], "principle": prs[k].name,
                                      "critique": critiques[k], "revision": revisions[k], "round": r + 1})
                    last[k] = revisions[k] or last[k]  # an empty revision keeps the previous answer
            for k in range(len(idx)):
                for row in rounds[k]:
                    append_jsonl(path, row)
            log.log(step, {"cai/prompts_done": len(done_ids) + start + len(idx),
                           "cai/empty_share": empty / max(1, (start + len(idx)) * passes)},
                    advance=0)

    rows = read_jsonl_tolerant(path)
    final: dict[str, dict] = {}
    for r in rows:
        if r["prompt_id"] not in final or r["round"] >= final[r["prompt_id"]]["round"]:
            final[r["prompt_id"]] = r
    sft, pairs = [], []
    for p in prompts:
        r = final.get(p.id)
        if r is None:
            continue
        revision = r["revision"] or r["response"]
        if revision.strip():
            sft.append(DemoRecord(prompt=p.prompt, response=revision, prompt_id=p.id))
        if revision.strip() and r["original"].strip() and revision.strip() != r["original"].strip():
            pairs.append(PairRecord(prompt=p.prompt, chosen=revision, rejected=r["original"], p=1.0,
                                    source="cai-revision", id=p.id))
    write_records(out / "sft.jsonl", sft)
    write_records(out / "pairs.jsonl", pairs)
    result = ReviseResult(output_dir=str(out), revisions=str(out / "revisions.jsonl"), demos=str(out / "sft.jsonl"),
                          pairs=str(out / "pairs.jsonl"), prompts=len(prompts), generated=len(todo),
                          resumed=len(done_ids), rounds=len(rows), n_demos=len(sft), n_pairs=len(pairs),
                          empty_generations=empty, wall_time_s=round(time.time() - t0, 2))
    write_stage_manifest("revise", cfg, result, wall_time_s=result.wall_time_s)
    return result
