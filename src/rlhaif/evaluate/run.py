"""`rlhaif evaluate`: every model answers the same held-out prompts; score, KL, win rate, diversity, refusals.

For each model (name -> path) the stage samples responses with the same seed, then measures
- the proxy score (the reward model used in training) and, when given, a gold score from a separate scorer —
  a proxy that rises while the gold score falls is reward hacking (Gao et al. 2022);
- KL to the reference: Σ_t log π(a_t) − log π_ref(a_t) over the sampled response tokens, both at the sampling
  temperature (the quantity PPO penalises);
- win rate against the baseline by an AI judge, judged in both orders;
- response length in tokens, distinct-1/2, refusal rate.
Writes ``samples/<model>.jsonl``, ``report.json`` and ``report.html`` (see ``rlhaif.evaluate.report``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import torch

from rlhaif.config import StageConfig
from rlhaif.data.io import atomic_write
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.scorers import load_scorer
from rlhaif.manifest import write_stage_manifest

Scorer = Callable[[Sequence[Any], Sequence[str]], list[float]]


class EvaluateConfig(StageConfig):
    """Settings of `rlhaif evaluate`."""

    models: dict[str, str]
    """Models to compare, name -> model folder, LoRA adapter folder, .gguf or built-in name, in report order."""
    prompts: Optional[str] = None
    """Held-out prompts (.jsonl with 'prompt', or .txt one per line); or give `prompt_groups`."""
    prompt_groups: dict[str, str] = {}
    """Instead of `prompts`: several prompt files, group name -> file (e.g. everyday: a.jsonl, red-team:
    b.jsonl); each file's prompts form one group of the evaluation by objective."""
    group_field: Optional[str] = None
    """A field of the prompt file that groups the prompts (e.g. kind: everyday / red-team): the evaluation by
    objective reports every gold scorer's paired gain per group. Every prompt must have it."""
    output_dir: str = "eval"
    """Where report.json, report.html and the sampled responses go."""
    baseline: Optional[str] = None
    """Name (a key of `models`) the win rate and score deltas are measured against; default the first model."""
    reference: Optional[str] = None
    """Model the KL is measured to (name in `models` or a path); default the baseline. When it names one of
    `models` (the SFT model in the recipes), the report leads with every model's paired gain over it."""
    proxy_scorer: Optional[str] = None
    """The training reward model: a scorer spec (rlhaif.scorers): a reward-model folder, 'reward_model:PATH',
    'classifier:PATH:LABEL', or a Python scorer 'module:function' / 'file.py:function'."""
    gold_scorer: Optional[str] = None
    """A separate scorer with the same interface, the held-out judge of quality."""
    gold_scorers: dict[str, str] = {}
    """More held-out judges, one per objective, name -> scorer spec (e.g. helpful: ..., harmless: ...): each is
    scored like `gold_scorer` and reported in the evaluation by objective (with `gold_scorer`, named 'gold')."""
    judge: Optional[str] = None
    """AI judge model for win rates against the baseline (both orders); none = no win rate."""
    ai_labeler: Optional[str] = None
    """The ai_label stage whose labels the reward model learned from: its folder or its manifest.json (in a
    recipe, ``${ai_label}``). Its measured agreement with people (the manifest's ``labeler``, from the stage's
    ``calibration``) leads report.json and report.html: agreement with its 95 % interval on N pairs,
    first-slot share, and that the labels are not better than chance when they are not; a stage run without
    a calibration set is reported as not measured."""
    constitution: Optional[str] = None
    """Constitution YAML for the judge's principles (default: the project's own)."""
    training_metrics: dict[str, str] = {}
    """PPO/DPO metrics.jsonl files to plot, label -> path (score and KL over steps)."""
    max_prompts: Optional[int] = None
    """Use only the first N prompts."""
    k: int = 1
    """Responses per prompt and model (samples per prompt: the paired gains average them per prompt)."""
    max_new_tokens: int = 64
    """Response length cap, in tokens."""
    temperature: float = 0.7
    """Sampling temperature (the KL is measured at this temperature too)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    batch_size: int = 8
    """Sequences generated or scored together."""
    seed: int = 0
    """Every model samples with this seed."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Sampler precision, as `rlhaif generate`'s: 'auto' samples from a bf16 copy of each model where the CPU does
    bf16 natively and measured faster; scores and KL are computed in fp32 either way."""
    samples_in_report: int = 6
    """Prompts shown side by side in report.html."""
    bootstrap_rounds: int = 100
    """Bootstrap resamples for the Bradley-Terry leaderboard's confidence intervals."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Sampler of the responses, as in `rlhaif generate`: 'auto' = vLLM where it is installed and a GPU is
    present, else Hugging Face generate; 'hf' or 'vllm' forces one. One engine serves every model of the same
    architecture (weights reloaded between models). KL, scores and the judge run on HF either way."""


# ----------------------------------------------------------------------------------------------- scorers


def run_scorer(scorer: Scorer, prompts: Sequence[Any], responses: Sequence[str], name: str) -> list[float]:
    scores = [float(s) for s in scorer(list(prompts), list(responses))]
    if len(scores) != len(responses):
        raise RlhaifError(f"{name} scorer returned {len(scores)} scores for {len(responses)} responses")
    return scores


# ----------------------------------------------------------------------------------------------- sampling + KL


@torch.no_grad()
def response_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                      temperature: float, batch_size: int, precision=None) -> list[torch.Tensor]:
    """Per-token log-probabilities of each response (1-D tensors) under ``model`` at ``temperature``: the PPO
    rollout's pass (``rlhaif.policy.rollout.response_logprobs``, only the response positions through the
    LM head; its products under ``rlhaif.precision.autocast(precision)``, the log-softmax in fp32), prompts
    left-padded and responses right-padded as in a rollout."""
    from rlhaif.policy.rollout import response_logprobs as rollout_logprobs, rollout_from_ids

    out: list[torch.Tensor] = []
    model.eval()
    device = next(model.parameters()).device
    for s in range(0, len(prompt_ids), batch_size):
        resp = response_ids[s:s + batch_size]
        lp = rollout_logprobs(model, rollout_from_ids(prompt_ids[s:s + batch_size], resp, pad_id, device=device),
                              temperature, precision)
        out += [lp[i, :len(r)].float().cpu() for i, r in enumerate(resp)]
    return out


def _same_tokenizer(a, b) -> bool:
    probe = "Hello there, how are you today? 123"
    return len(a) == len(b) and a(probe)["input_ids"] == b(probe)["input_ids"]


def _resolve_ref(cfg: EvaluateConfig, baseline: str) -> str:
    ref = cfg.reference or baseline
    return cfg.models.get(ref, ref)


# ----------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class EvaluateResult:
    """What `rlhaif evaluate` made (also its manifest's ``outputs``)."""

    report: str
    """report.html (report.json beside it)."""
    models: dict[str, dict[str, Any]]
    """Per model: ``path``, ``length``, ``distinct_1``, ``distinct_2``, ``refusal_rate``, ``finished_share`` and,
    where measured, ``proxy`` / ``gold`` / ``kl`` (each ``mean_and_ci``) and ``win_rate``."""
    leaderboard: Any
    """report.json's leaderboard."""
    precision: dict[str, Any]
    wall_time_s: float
    objectives: Any = None
    """report.json's table of paired gains per (gold objective × prompt group)."""
    labeler: Optional[dict[str, Any]] = None
    """The AI labeler's measured agreement with people, when ``ai_labeler`` names an ai_label stage."""


def run_evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Sample, score and measure every model; write samples, report.json and report.html."""
    from rlhaif.data.io import write_jsonl
    from rlhaif.evaluate import metrics as M
    from rlhaif.evaluate.report import write_report
    from rlhaif.generate import SamplingConfig, engine_for, sample, use_vllm
    from rlhaif.metrics import MetricsLogger
    from rlhaif.models.loading import load_causal_lm
    from rlhaif.policy.kl import sequence_kl
    from rlhaif.policy.rollout import row_seed
    from rlhaif.tokens import encode_prompts

    if not cfg.models:
        raise ConfigError("evaluate: 'models' is empty; give at least one name: path")
    taken = [n for n in cfg.gold_scorers if n in ("proxy", "gold", "kl", "length")]
    if taken:
        raise ConfigError(f"evaluate: gold_scorers may not be named '{taken[0]}' (a column of the report already)")
    baseline = cfg.baseline or next(iter(cfg.models))
    if baseline not in cfg.models:
        raise ConfigError(f"evaluate: baseline '{baseline}' is not one of the models ({', '.join(cfg.models)})")
    t0 = time.time()
    out = Path(cfg.output_dir)
    labeler = labeler_block(cfg.ai_labeler) if cfg.ai_labeler else None  # a wrong path stops before sampling
    recs, groups = read_prompt_groups(cfg)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    prompts = [r.prompt for r in recs for _ in range(cfg.k)]
    prompt_ids_of = [r.id for r in recs for _ in range(cfg.k)]
    sample_groups = [g for g in groups for _ in range(cfg.k)] if groups is not None else None
    scorers = {kind: load_scorer(spec, dtype=cfg.dtype) for kind, spec in
               (("proxy", cfg.proxy_scorer), ("gold", cfg.gold_scorer), *cfg.gold_scorers.items()) if spec}
    notes: list[str] = []
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)

    from rlhaif.precision import choose_precision

    prec = choose_precision(cfg.precision)
    ref_path = _resolve_ref(cfg, baseline)
    ref_model, ref_tok = load_causal_lm(ref_path, dtype=cfg.dtype, merge_adapter=True)
    results: dict[str, dict[str, Any]] = {}
    responses: dict[str, list[str]] = {}
    lengths_of: dict[str, list[int]] = {}
    engine, vllm = None, use_vllm(cfg.backend, "evaluate")
    with MetricsLogger(out, total_steps=len(cfg.models), description="evaluate") as log:
        for step, (name, path) in enumerate(cfg.models.items(), start=1):
            if path == ref_path:
                model, tok = ref_model, ref_tok
            else:
                model, tok = load_causal_lm(path, dtype=cfg.dtype, merge_adapter=True)
            p_ids = encode_prompts(tok, prompts)
            if vllm:
                engine = engine_for(model, tok, max(map(len, p_ids)) + cfg.max_new_tokens, cfg.seed, cfg.dtype, engine)
            torch.manual_seed(cfg.seed)  # every model draws with the same streams, row by row (paired samples)
            sampled = sample(model, tok, p_ids, sampling, cfg.batch_size, precision=prec, engine=engine,
                             seed=cfg.seed, row_seeds=[row_seed(cfg.seed, i // cfg.k, i % cfg.k)
                                                       for i in range(len(p_ids))], logprobs=True)
            r_ids = [ids for ids, _, _ in sampled]
            texts = [tok.decode(ids, skip_special_tokens=True).strip() for ids in r_ids]
            lengths = [len(ids) - int(fin) for ids, fin, _ in sampled]
            row: dict[str, Any] = {"path": path, "length": M.mean_length(lengths),
                                   "distinct_1": M.distinct_n(texts, 1), "distinct_2": M.distinct_n(texts, 2),
                                   "refusal_rate": M.refusal_rate(texts),
                                   "finished_share": sum(f for _, f, _ in sampled) / len(sampled)}
            per_sample: dict[str, list[float]] = {}
            for kind, scorer in scorers.items():
                per_sample[kind] = run_scorer(scorer, prompts, texts, kind)
                row[kind] = M.mean_and_ci(per_sample[kind])
            if model is ref_model:
                kls = [0.0] * len(texts)
            elif _same_tokenizer(tok, ref_tok):
                # the sampler's own log-probs: the distribution that drew the tokens, no second pass over them
                # (that pass was half of a model's evaluation time); vLLM or HF generate: the model's pass
                lp = ([torch.tensor(s[2]) for s in sampled] if all(s[2] is not None for s in sampled) else
                      response_logprobs(model, p_ids, r_ids, tok.pad_token_id, cfg.temperature, cfg.batch_size,
                                        prec))
                # a compute-bound pass: bf16 products where the precision is bf16 (as updates and scoring)
                ref_lp = response_logprobs(ref_model, p_ids, r_ids, tok.pad_token_id, cfg.temperature,
                                           cfg.batch_size, prec)
                kls = [float(sequence_kl(a, b, torch.ones_like(a))) for a, b in zip(lp, ref_lp)]
            else:
                kls = None
                notes.append(f"{name}: no KL, its tokenizer differs from the reference's")
            if kls is not None:
                per_sample["kl"] = kls
                row["kl"] = M.mean_and_ci(kls)
            results[name], responses[name], lengths_of[name] = row, texts, lengths
            write_jsonl(out / "samples" / f"{name}.jsonl",
                        [{"prompt_id": pid, "prompt": _plain(p), "response": t, "model": name, "tokens": n,
                          **{k: v[i] for k, v in per_sample.items()}}
                         for i, (pid, p, t, n) in enumerate(zip(prompt_ids_of, prompts, texts, lengths))])
            results[name]["_per_sample"], results[name]["_lengths"] = per_sample, lengths
            log.log(step, {"eval/proxy_score": row.get("proxy", {}).get("mean"),
                           "eval/gold_score": row.get("gold", {}).get("mean"),
                           "eval/kl": row.get("kl", {}).get("mean"), "eval/length": row["length"],
                           "eval/distinct_2": row["distinct_2"], "eval/refusal_rate": row["refusal_rate"],
                           "model": name})
            if model is not ref_model:
                del model
    if engine is not None:
        engine.close()

    if cfg.judge:
        _judge_win_rates(cfg, baseline, prompts, responses, results, notes)
    else:
        notes.append("no AI judge given: no win rates")
    all_lengths = [n for name in results for n in lengths_of[name]]
    length_corr = {kind: M.pearson([s for name in results for s in results[name]["_per_sample"][kind]], all_lengths)
                   for kind in scorers}
    for kind, r in length_corr.items():
        if r is not None:
            notes.append(f"{kind} score vs response length (tokens), all models' responses: Pearson r = {r:.2f}"
                         + (" - this scorer mostly measures length; longer answers raise it" if abs(r) >= 0.5 else ""))
    report = write_report(out, cfg, baseline, prompts, prompt_ids_of, responses, results, notes, sample_groups,
                          extra={"score_length_correlation": length_corr, "precision": prec.as_manifest()},
                          labeler=labeler)
    relative_paths_in_report(out / "report.json")
    summaries = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in results.items()}
    result = EvaluateResult(report=str(out / "report.html"), models=summaries,
                            leaderboard=report.get("leaderboard"), precision=prec.as_manifest(),
                            wall_time_s=round(time.time() - t0, 1), objectives=report.get("objectives"),
                            labeler=report["labeler"] if labeler else None)
    write_stage_manifest("evaluate", cfg, result, wall_time_s=result.wall_time_s)
    return result


def labeler_block(path: str) -> dict[str, Any]:
    """The AI labeler's measured agreement with people, for the report: from an ai_label stage's manifest.json
    (``path`` is it or its folder), the ``labeler`` block its calibration wrote (agreement, low, high, n,
    first_slot_share, order_agreement, at_chance, ...) with the judge, the calibration set and the manifest's
    path; ``measured`` is False when the stage had no calibration set."""
    man = Path(path) / "manifest.json" if Path(path).is_dir() else Path(path)
    if not man.is_file():
        raise ConfigError(f"evaluate: ai_labeler {path}: no manifest.json there (give an ai_label stage's folder "
                          "after it has finished, or its manifest.json)")
    body = json.loads(man.read_text())
    if body.get("stage") != "ai_label":
        raise ConfigError(f"evaluate: ai_labeler {man} is the manifest of a '{body.get('stage')}' stage, not of "
                          "an ai_label stage")
    config, outputs = body.get("config") or {}, body.get("outputs") or {}
    check = outputs.get("labeler")
    judge = config.get("judge_model")
    judge = Path(judge).name if judge and Path(judge).exists() else judge  # a folder: its name, as in labels
    return {"judge": judge, "api": config.get("api"), "calibration": config.get("calibration"),
            "manifest": str(man), "measured": check is not None, **(check or {}),
            **({"calibrated": bool(outputs.get("calibrated"))} if check else {})}


def read_prompt_groups(cfg: EvaluateConfig) -> tuple[list, list[str] | None]:
    """(prompt records, each prompt's group or None): `prompts` (grouped by `group_field` when set) or
    `prompt_groups` (each file a group); `max_prompts` keeps the first N of each file."""
    from rlhaif.generate import read_prompts
    from rlhaif.objectives import prompt_field_values

    if bool(cfg.prompts) == bool(cfg.prompt_groups):
        raise ConfigError("evaluate: give either prompts (one file) or prompt_groups (group name -> file)")
    if cfg.prompt_groups:
        if cfg.group_field:
            raise ConfigError("evaluate: group_field groups the prompts of `prompts`; prompt_groups are groups "
                              "already: give one of them")
        recs, groups = [], []
        for group, path in cfg.prompt_groups.items():
            mine = read_prompts(path)[: cfg.max_prompts]
            recs += mine
            groups += [group] * len(mine)
        return recs, groups
    recs = read_prompts(cfg.prompts)
    groups = prompt_field_values(cfg.prompts, cfg.group_field)[: cfg.max_prompts] if cfg.group_field else None
    return recs[: cfg.max_prompts], groups


def relative_paths_in_report(path: Path) -> None:
    """Rewrite the paths of report.json's ``config`` and ``training``, and the labeler's manifest and
    calibration set, that lie inside the run folder (the folder above the report's own) relative to it, as
    ``paths_relative_to`` (".." from report.json) says, so the report reads the same on another machine. Other
    paths stay as they are; the path in a ``kind:path`` or ``file.py:function`` value is rewritten too."""
    import os

    root = path.parent.resolve().parent

    def rel(v: str) -> str:
        tries = [("", v, "")]
        if ":" in v:
            a, b = v.split(":", 1)
            tries += [(f"{a}:", b, ""), ("", a, f":{b}")]
        for pre, part, post in tries:
            if part and len(part) < 4096 and Path(part).exists():
                p = Path(part).resolve()
                return f"{pre}{os.path.relpath(p, root)}{post}" if p == root or root in p.parents else v
        return v

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return rel(x)
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    report = json.loads(path.read_text())
    for key in ("config", "training"):
        if key in report:
            report[key] = walk(report[key])
    for key in ("manifest", "calibration"):  # the labeler's paths (not its sentences)
        if isinstance((report.get("labeler") or {}).get(key), str):
            report["labeler"][key] = walk(report["labeler"][key])
    for row in (report.get("models") or {}).values():  # each model's path, as in config.models
        if isinstance(row, dict) and isinstance(row.get("path"), str):
            row["path"] = walk(row["path"])
    report["paths_relative_to"] = ".."
    with atomic_write(path) as f:
        json.dump(report, f, indent=2, default=str)


def _plain(p) -> Any:
    return p if isinstance(p, str) else [m.model_dump() for m in p]


def _judge_win_rates(cfg: EvaluateConfig, baseline: str, prompts, responses, results, notes) -> None:
    """Win rate of every model against the baseline by the AI judge (rlhaif.feedback.ai.judge), each pair
    judged in both orders, one constitution principle drawn at random per pair (seeded)."""
    import random

    try:
        from rlhaif.feedback.ai.backends import make_backend
        from rlhaif.feedback.ai.constitution import load_constitution
        from rlhaif.feedback.ai.judge import judge_pairs
    except ImportError:
        notes.append("AI judge requested but rlhaif.feedback.ai.judge is not available: no win rates")
        return
    from rlhaif.evaluate.metrics import win_rate

    backend = make_backend(cfg.judge, dtype=cfg.dtype, batch_size=cfg.batch_size)
    constitution = load_constitution(cfg.constitution)
    for name, texts in responses.items():
        if name == baseline:
            continue
        rng = random.Random(cfg.seed)
        items = [(p, cand, base, constitution.sample_principle(rng))
                 for p, cand, base in zip(prompts, texts, responses[baseline])]
        judged = judge_pairs(backend, items, seed=cfg.seed)
        # p_ab: P(candidate better) shown as (A); p_ba: P(A) with the candidate shown as (B), i.e. P(baseline).
        results[name]["win_rate"] = win_rate([j.p_ab for j in judged], [1.0 - j.p_ba for j in judged])
