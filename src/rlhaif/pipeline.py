"""`rlhaif run recipe.yaml`: run the stages of a recipe in order, each in its own folder with a manifest.

A recipe is YAML::

    run_dir: runs/rlhf          # every stage writes under it
    policy: smollm2-135m-instruct   # the starting policy; ${policy} always names the latest one
    rounds: 2                   # iterated RLHF: the stages marked `repeat: true` run once per round
    stages:
      - {stage: sft, data: ${assets}/demos.jsonl, lora: true}
      - {stage: generate, name: gen, repeat: true, model: ${policy}, prompts: ...}
      - {stage: ppo, repeat: true, model: ${policy}, reward_model: ${reward}, ...}
      - {stage: evaluate, models: {base: ${base}, aligned: ${policy}}, ...}

Each entry names a stage (a key of STAGES, or ``module:function`` for your own) and its settings, which are
the stage's config fields (the same keys as its command's --config YAML). ``output_dir`` defaults to
``${run_dir}/<name>`` (``${run_dir}/round<r>/<name>`` for repeated stages). Strings may refer to:

- ``${run_dir}``, ``${round}``, ``${assets}`` (the files bundled with rlhaif), ``${base}`` (the starting policy),
  ``${policy}`` (the latest policy: updated by every sft, ppo and dpo stage);
- ``${<name>}``: the output folder of the stage called <name> (its latest run); ``${<name>.<key>}``: a value
  the stage returned (also kept in its manifest.json ``outputs``), e.g. ``${reward.model}``.

A stage whose manifest matches (same config, same input file hashes) is skipped on a re-run; a stage that
was interrupted runs again and resumes from its own last checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel

from rlhaif.config import StageConfig, load_yaml
from rlhaif.data.io import atomic_write
from rlhaif.errors import ConfigError, RlhaifError

ASSETS = Path(__file__).parent / "assets"

# stage kind -> (module, function). The function takes its StageConfig subclass (found from its annotation).
STAGES: dict[str, tuple[str, str]] = {
    "sft": ("rlhaif.policy.sft", "run_sft"),
    "generate": ("rlhaif.pipeline", "run_generate"),
    "simulate": ("rlhaif.feedback.simulate", "run_simulated_panel"),
    "ai_label": ("rlhaif.feedback.ai.judge", "run_ai_label"),
    "revise": ("rlhaif.feedback.ai.critique_revise", "run_revise"),
    "pairs": ("rlhaif.pipeline", "run_pairs"),
    "human": ("rlhaif.pipeline", "run_human_feedback"),
    "reward": ("rlhaif.reward.train", "run_reward_train"),
    "ppo": ("rlhaif.policy.ppo", "run_ppo"),
    "dpo": ("rlhaif.policy.dpo", "run_dpo"),
    "evaluate": ("rlhaif.evaluate.run", "run_evaluate"),
}
# Stages whose result is a new policy: ${policy} follows them.
POLICY_STAGES = ("sft", "ppo", "dpo")
_REF = re.compile(r"\$\{([^}]+)\}")


# ----------------------------------------------------------------------------------------- small built-in stages


class GenerateStageConfig(StageConfig):
    """The generate stage: K sampled responses per prompt -> <output_dir>/completions.jsonl."""

    model: str
    """Model folder, LoRA adapter folder, .gguf or built-in name."""
    prompts: str
    """Prompts (.jsonl with 'prompt', or .txt one per line)."""
    output_dir: str
    """Folder for completions.jsonl and generate_stats.json."""
    k: int = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 64
    """Response length cap, in tokens."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    batch_size: int = 16
    """Sequences generated together."""
    max_prompts: Optional[int] = None
    """Use only the first N prompts."""
    seed: int = 0
    """Random seed."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Sampler: 'auto' = vLLM where it is installed (pip install 'rlhaif[vllm]') and a GPU is present, else
    Hugging Face generate; 'hf' or 'vllm' forces one. Both write the same completions.jsonl."""


def run_generate(cfg: GenerateStageConfig) -> dict[str, Any]:
    from rlhaif.data.io import write_records
    from rlhaif.generate import SamplingConfig, generate_completions, read_prompts
    from rlhaif.models.loading import load_causal_lm

    recs = read_prompts(cfg.prompts)[: cfg.max_prompts]
    model, tok = load_causal_lm(cfg.model, dtype=cfg.dtype, merge_adapter=True)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    out = Path(cfg.output_dir)
    if _use_vllm(cfg.backend):
        completions, stats = vllm_completions(model, tok, recs, cfg, sampling, out / "model_for_vllm")
    else:
        completions, stats = generate_completions(model, tok, recs, cfg.k, sampling, cfg.batch_size, cfg.seed,
                                                  model_name=cfg.model)
    write_records(out / "completions.jsonl", completions)
    (out / "generate_stats.json").write_text(json.dumps(stats, indent=2))
    return {"completions": str(out / "completions.jsonl"), **stats}


def _use_vllm(backend: str) -> bool:
    if backend == "hf":
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        if backend == "vllm":
            raise RlhaifError("generate: backend 'vllm' needs vLLM: pip install 'rlhaif[vllm]' (on a GPU machine)")
        return False
    import torch

    return backend == "vllm" or torch.cuda.is_available()


def vllm_completions(model, tok, recs: list, cfg: GenerateStageConfig, sampling, folder: Path):
    """K responses per prompt sampled by vLLM, as the same CompletionRecords HF generate gives. vLLM loads
    a plain model folder, so the (adapter-merged) model is saved to ``folder`` first; prompts go in as the
    chat-templated token ids HF generate would see."""
    from vllm import LLM, SamplingParams

    from rlhaif.data.records import CompletionRecord
    from rlhaif.generate import encode_prompts

    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    enc = encode_prompts(tok, [r.prompt for r in recs])
    llm = LLM(model=str(folder), dtype=cfg.dtype, seed=cfg.seed)
    params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                            seed=cfg.seed)
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": ids} for ids in enc], params)
    elapsed = time.perf_counter() - t0
    settings = {**sampling.__dict__, "seed": cfg.seed, "k": cfg.k, "backend": "vllm"}
    records = [CompletionRecord(prompt_id=r.id or str(i), prompt=r.prompt, response=o.text.strip(), model=cfg.model,
                                index=j, finished=o.finish_reason == "stop", sampling=settings)
               for i, (r, out) in enumerate(zip(recs, outs)) for j, o in enumerate(out.outputs)]
    n_tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    stats = {"new_tokens": n_tokens, "seconds": round(elapsed, 3),
             "tokens_per_second": round(n_tokens / elapsed, 2) if elapsed > 0 else None, "responses": len(records),
             "finished_share": round(sum(c.finished for c in records) / max(1, len(records)), 3), "backend": "vllm"}
    return records, stats


class PairsStageConfig(StageConfig):
    """The pairs stage: read preference files of any supported format (pairs.jsonl, TRL, hh-rlhf), take up to
    `limit` from each, and write one pairs.jsonl (how the CAI recipe mixes AI and human labels)."""

    inputs: list[str]
    """Preference files, read with rlhaif.data.formats.read_pairs (format auto-detected)."""
    output_dir: str
    """Folder for pairs.jsonl."""
    limit: Optional[int] = None
    """Take at most this many pairs from each input (in file order)."""
    source: Optional[str] = None
    """Set the 'source' field of pairs that have none."""
    skip_invalid: bool = False
    """Drop hh-rlhf records whose last replies are empty (a handful exist in the public data)."""


def run_pairs(cfg: PairsStageConfig) -> dict[str, Any]:
    from rlhaif.data.formats import read_hh_rlhf, read_pairs
    from rlhaif.data.io import read_jsonl, write_records

    pairs, counts = [], {}
    for path in cfg.inputs:
        first = next(read_jsonl(path), (0, {}))[1]
        hh = "prompt" not in first and isinstance(first.get("chosen"), str)
        got = (read_hh_rlhf(path, cfg.limit, cfg.skip_invalid) if hh else read_pairs(path))[: cfg.limit]
        counts[path] = len(got)
        for p in got:
            if cfg.source and not p.source:
                p.source = cfg.source
        pairs += got
    out = Path(cfg.output_dir) / "pairs.jsonl"
    write_records(out, pairs)
    return {"pairs": str(out), "n_pairs": len(pairs), "per_input": counts}


class HumanFeedbackConfig(StageConfig):
    """The human stage: load completions into the annotation app, serve it until every task is labelled (or
    Ctrl-C), then export the labels as pairs.jsonl. What `rlhaif demo --human` uses in place of the panel."""

    completions: str
    """completions.jsonl (K responses per prompt) to label."""
    output_dir: str
    """Folder for feedback.db (unless `db` is set), annotator_token.txt and pairs.jsonl."""
    db: Optional[str] = None
    """Feedback store: SQLite path or database URL; default <output_dir>/feedback.db."""
    campaign: str = "rlhf"
    """Campaign name in the store."""
    kind: Literal["pairwise", "ranking"] = "ranking"
    """Task kind: rank the K responses of a prompt (InstructGPT), or compare consecutive pairs."""
    annotator: str = "me"
    """Annotator created for you; the sign-in token is printed and kept in annotator_token.txt."""
    guidelines: str = ("Rank the responses from best to worst: helpful, honest and harmless first. "
                       "Mark nonsense with F.")
    """Guidelines shown with every task."""
    host: str = "127.0.0.1"
    """Address the app listens on."""
    port: int = 8765
    """Port the app listens on."""


def run_human_feedback(cfg: HumanFeedbackConfig) -> dict[str, Any]:
    import threading

    from rlhaif.data.io import read_records
    from rlhaif.data.records import CompletionRecord
    from rlhaif.feedback.human.report import export_pairs
    from rlhaif.feedback.human.store import Store

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = cfg.db or str(out / "feedback.db")
    store = Store(db)
    store.migrate()
    store.create_campaign(cfg.campaign, cfg.kind, guidelines=cfg.guidelines)
    store.import_completions(cfg.campaign, read_records(cfg.completions, CompletionRecord), cfg.completions)
    token_file = out / "annotator_token.txt"
    if token_file.exists():  # resumed: the annotator and their labels are already in the store
        token = token_file.read_text().strip()
    else:
        token = store.add_annotator(cfg.annotator)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    me = store.annotator_by_token(token)
    if me is None:
        raise RlhaifError(f"{token_file}: this token is not in {db}; delete the file to create a new annotator")

    def finished() -> bool:
        done, total = store.progress_of(me.id)
        return total > 0 and done >= total

    if not finished():
        import uvicorn

        from rlhaif.feedback.human.app import Settings, create_app

        server = uvicorn.Server(uvicorn.Config(create_app(Settings(db=db)), host=cfg.host, port=cfg.port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        print(f"annotate at http://{cfg.host}:{cfg.port}/login with the token {token}\n"
              f"(the run continues when every task is labelled; Ctrl-C stops early and uses the labels so far)",
              flush=True)
        try:
            while not finished() and thread.is_alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopped: exporting the labels given so far", flush=True)
        server.should_exit = True
        thread.join(timeout=10)
    done, total = store.progress_of(me.id)
    counts = export_pairs(store, out / "pairs.jsonl", cfg.campaign)
    # the same keys as the simulated panel's result, so a recipe can swap one stage for the other
    return {"pairs_path": str(out / "pairs.jsonl"), "pairs": counts.get("pairs"), "labelled": done, "tasks": total}


# ----------------------------------------------------------------------------------------- the runner


class StageSpec(BaseModel):
    stage: str
    name: str
    repeat: bool = False
    settings: dict[str, Any]


class Recipe(BaseModel):
    run_dir: str
    policy: Optional[str] = None
    rounds: int = 1
    stages: list[StageSpec]
    source: str = "<recipe>"


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """Parse a recipe file; top-level keys ``run_dir``, ``policy``, ``rounds``, ``stages``."""
    data = load_yaml(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    known = {"run_dir", "policy", "rounds", "stages", "description"}
    for k in data:
        if k not in known:
            raise ConfigError(f"{source}: unknown top-level key '{k}'; known keys: {', '.join(sorted(known))}")
    if "run_dir" not in data or not data.get("stages"):
        raise ConfigError(f"{source}: a recipe needs 'run_dir' and a non-empty 'stages' list")
    specs, names = [], set()
    for i, st in enumerate(data["stages"]):
        if not isinstance(st, dict) or "stage" not in st:
            raise ConfigError(f"{source}: stages[{i}] needs a 'stage' key (one of {', '.join(STAGES)})")
        st = dict(st)
        kind = st.pop("stage")
        name = st.pop("name", kind if ":" not in kind else kind.rsplit(":", 1)[1])
        repeat = bool(st.pop("repeat", False))
        if name in names:
            raise ConfigError(f"{source}: two stages are called '{name}'; give one a different 'name'")
        names.add(name)
        specs.append(StageSpec(stage=kind, name=name, repeat=repeat, settings=st))
    flags = [s.repeat for s in specs]
    if True in flags:
        first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
        if not all(flags[first:last + 1]):
            raise ConfigError(f"{source}: the stages marked 'repeat: true' must be next to each other")
    rounds = int(data.get("rounds", 1))
    if rounds < 1:
        raise ConfigError(f"{source}: rounds must be >= 1, got {rounds}")
    return Recipe(run_dir=str(data["run_dir"]), policy=data.get("policy"), rounds=rounds, stages=specs,
                  source=source)


def stage_function(kind: str, source: str = "<recipe>") -> tuple[Callable, type[StageConfig]]:
    """The run function of a stage kind and its config class (from the function's annotation)."""
    if kind in STAGES:
        mod_name, fn_name = STAGES[kind]
    elif ":" in kind:
        mod_name, fn_name = kind.rsplit(":", 1)
    else:
        raise ConfigError(f"{source}: unknown stage '{kind}'; use one of {', '.join(STAGES)} or module:function")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise RlhaifError(f"{source}: stage '{kind}' needs {mod_name}.{fn_name}, which is not available in this "
                          f"install ({e})") from None
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise RlhaifError(f"{source}: stage '{kind}': {mod_name} has no function {fn_name}")
    hints = typing.get_type_hints(fn)
    params = [h for k, h in hints.items() if k != "return"]
    if not params or not (isinstance(params[0], type) and issubclass(params[0], StageConfig)):
        raise RlhaifError(f"{source}: stage '{kind}': {mod_name}.{fn_name} does not take a StageConfig")
    return fn, params[0]


class _Scope:
    """Values ``${...}`` can refer to, updated as stages finish."""

    def __init__(self, recipe: Recipe):
        self.run_dir = str(Path(recipe.run_dir))
        self.vars: dict[str, Any] = {"run_dir": self.run_dir, "assets": str(ASSETS), "round": 1,
                                     "base": recipe.policy, "policy": recipe.policy}
        self.outputs: dict[str, dict[str, Any]] = {}  # stage name -> {"dir": ..., **returned}

    def lookup(self, expr: str, where: str) -> Any:
        expr = expr.strip()
        if expr in self.vars:
            if self.vars[expr] is None:
                raise ConfigError(f"{where}: ${{{expr}}} is not set (give the recipe a top-level 'policy')")
            return self.vars[expr]
        name, _, key = expr.partition(".")
        if name not in self.outputs:
            raise ConfigError(f"{where}: ${{{expr}}} refers to stage '{name}', which has not run before this one")
        out = self.outputs[name]
        if not key:
            return out["dir"]
        val: Any = out
        for part in key.split("."):
            if not isinstance(val, dict) or part not in val:
                have = ", ".join(sorted(k for k in out if k != "dir"))
                raise ConfigError(f"{where}: ${{{expr}}}: stage '{name}' returned no '{key}' (it returned: {have})")
            val = val[part]
        return val

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            whole = _REF.fullmatch(value.strip())
            if whole:
                return self.lookup(whole.group(1), where)
            return _REF.sub(lambda m: str(self.lookup(m.group(1), where)), value)
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value


def _policy_of(outputs: dict[str, Any], out_dir: Path) -> str:
    """The policy a sft/ppo/dpo stage produced: the model folder it returned, else its output folder."""
    for key in ("model", "model_dir", "policy"):
        if isinstance(outputs.get(key), str):
            return outputs[key]
    return str(out_dir)


STARTED = ".rlhaif_started.json"  # the fingerprint of a stage that started and has not finished (dot: not hashed)


def _prepare_dir(out_dir: Path, fp: dict[str, Any], name: str, run_dir: str, log: Callable[[str], None]) -> None:
    """Resume an interrupted stage only when it was started with the same fingerprint. A folder this runner
    made for another config (finished or not) is emptied first: its checkpoints belong to other settings."""
    started = out_dir / STARTED
    if _is_main_process():
        same = started.exists() and json.loads(started.read_text() or "{}") == json.loads(json.dumps(fp, default=str))
        if same:
            log(f"[resume] {name}: interrupted before with the same config; the stage resumes from its checkpoint")
        elif (out_dir / "manifest.json").exists() or started.exists():
            inside = Path(run_dir).resolve() in out_dir.resolve().parents
            if not inside:  # never delete a folder the recipe does not own
                raise RlhaifError(f"stage '{name}': {out_dir} holds a run with another config and lies outside "
                                  f"run_dir {run_dir}; delete it or choose another output_dir")
            log(f"[redo] {name}: its config or inputs changed; clearing {out_dir}")
            shutil.rmtree(out_dir)
        else:
            log(f"[run ] {name} -> {out_dir}")
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(started) as f:
            json.dump(fp, f, default=str)
    fp_json = json.loads(json.dumps(fp, default=str))
    _wait_for_file(lambda: started.exists() and json.loads(started.read_text() or "{}") == fp_json)


def _wait_for_file(check: Callable[[], bool]) -> None:
    """Other processes of a multi-process launch wait for the main one by polling a file. (A torch barrier
    here would set up Accelerate's process state before the stage does, and with the wrong settings.)"""
    if not _is_main_process():
        while not check():
            time.sleep(0.2)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_stage(spec: StageSpec, scope: _Scope, round_: int, repeated: bool, source: str,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Resolve one stage's settings, skip it if its manifest matches, else run it and write its manifest."""
    from rlhaif.manifest import manifest_matches, stage_fingerprint, write_manifest

    where = f"{source}: stage '{spec.name}'"
    fn, cfg_cls = stage_function(spec.stage, source)
    settings = scope.resolve(spec.settings, where)
    sub = f"round{round_}/{spec.name}" if repeated else spec.name
    if "output_dir" not in cfg_cls.model_fields:
        raise RlhaifError(f"{where}: {cfg_cls.__name__} has no 'output_dir' field; a recipe stage needs one")
    settings.setdefault("output_dir", str(Path(scope.run_dir) / sub))
    cfg = cfg_cls.validate_dict(settings, where)
    out_dir = Path(cfg.output_dir)
    config = cfg.model_dump(mode="json")
    fp = stage_fingerprint(spec.stage, cfg)
    if manifest_matches(out_dir, fp):
        manifest = json.loads((out_dir / "manifest.json").read_text())
        outputs, wall, cpu = manifest.get("outputs") or {}, manifest.get("wall_time_s"), None
        if _is_main_process():
            log(f"[skip] {spec.name}: finished before with the same config and inputs ({out_dir})")
        status = "skipped"
    else:
        _prepare_dir(out_dir, fp, spec.name, scope.run_dir, log)
        t0, c0 = time.time(), time.process_time()
        result = fn(cfg) or {}
        outputs, wall = json.loads(json.dumps(result, default=str)), round(time.time() - t0, 2)
        cpu = round(time.process_time() - c0, 2)  # all threads of this process: wall ≈ cpu / threads when quiet
        if _is_main_process():
            write_manifest(out_dir, fp, seed=config.get("seed"), wall_time_s=wall, outputs=outputs)
            (out_dir / STARTED).unlink(missing_ok=True)
            log(f"[done] {spec.name}{f' round {round_}' if repeated else ''}: {wall:.1f} s (cpu {cpu:.1f} s)")
        _wait_for_file(lambda: manifest_matches(out_dir, fp))  # nobody reads outputs before the manifest exists
        status = "ran"
    scope.outputs[spec.name] = {"dir": str(out_dir), **outputs}
    if spec.stage in POLICY_STAGES:
        scope.vars["policy"] = _policy_of(outputs, out_dir)
    # wall_time_s: the stage's own run time (from its manifest when skipped: the run that made the outputs)
    return {"name": spec.name, "stage": spec.stage, "round": round_ if repeated else None, "status": status,
            "wall_time_s": wall, "cpu_time_s": cpu, "output_dir": str(out_dir), "outputs": outputs}


def run_recipe(recipe: Recipe, only: Optional[list[str]] = None, log: Callable[[str], None] = print) -> dict:
    """Run every stage in order (the repeated block once per round). ``only``: run just these stage names;
    the others must have finished before (their manifests give the values later stages refer to)."""
    scope = _Scope(recipe)
    done: list[dict[str, Any]] = []
    block = [i for i, s in enumerate(recipe.stages) if s.repeat]
    order: list[tuple[int, int, bool]] = []  # (stage index, round, repeated)
    for i, s in enumerate(recipe.stages):
        if block and i == block[0]:
            order += [(j, r, True) for r in range(1, recipe.rounds + 1) for j in block]
        elif not s.repeat:
            order.append((i, recipe.rounds if block and i > block[-1] else 1, False))
    t0 = time.time()
    for i, round_, repeated in order:
        spec = recipe.stages[i]
        scope.vars["round"] = round_
        if only and spec.name not in only:
            _restore(spec, scope, round_, repeated, recipe.source)
            continue
        done.append(run_stage(spec, scope, round_, repeated, recipe.source, log))
    timings = stage_timings(done, round(time.time() - t0, 2))
    summary = {"run_dir": scope.run_dir, "stages": done, "policy": scope.vars["policy"], "timings": timings}
    if _is_main_process():
        Path(scope.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(scope.run_dir) / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        for line in format_timings(timings):
            log(line)
        from rlhaif.evaluate.report import add_run_timings

        for st in done:  # the evaluation reports show how long the whole run took, stage by stage
            if st["stage"] == "evaluate" and Path(st["outputs"].get("report_json") or "").is_file():
                add_run_timings(Path(st["outputs"]["report_json"]).parent, timings)
    return summary


def stage_timings(done: list[dict[str, Any]], invocation_s: float) -> dict[str, Any]:
    """Per-stage wall times; ``stages_total_s`` sums them (the time a run from scratch takes, less start-up),
    ``this_invocation_s`` is what this call took (small when stages were skipped)."""
    rows = [{"stage": s["name"] + (f" (round {s['round']})" if s["round"] else ""), "kind": s["stage"],
             "wall_time_s": s["wall_time_s"], "cpu_time_s": s.get("cpu_time_s"), "status": s["status"]}
            for s in done]
    total = round(sum(r["wall_time_s"] or 0.0 for r in rows), 2)
    return {"stages": rows, "stages_total_s": total, "this_invocation_s": invocation_s,
            "threads": _torch_threads()}


def _torch_threads() -> int | None:
    import sys

    return sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None


def format_timings(timings: dict[str, Any]) -> list[str]:
    lines = ["[time] stage wall times (s):"]
    for r in timings["stages"]:
        t = r["wall_time_s"]
        c = r.get("cpu_time_s")
        lines.append(f"[time]   {r['stage']:<24} {'?' if t is None else f'{t:8.1f}'}"
                     + ("" if c is None else f"   cpu {c:8.1f}")
                     + ("  (skipped now; time of the run that made it)" if r["status"] == "skipped" else ""))
    lines.append(f"[time]   {'all stages':<24} {timings['stages_total_s']:8.1f}   "
                 f"(this invocation: {timings['this_invocation_s']:.1f})")
    return lines


def _restore(spec: StageSpec, scope: _Scope, round_: int, repeated: bool, source: str) -> None:
    """Take a finished stage's outputs from its manifest without running it (for ``only``)."""
    where = f"{source}: stage '{spec.name}'"
    settings = scope.resolve(spec.settings, where)
    sub = f"round{round_}/{spec.name}" if repeated else spec.name
    out_dir = Path(settings.get("output_dir") or Path(scope.run_dir) / sub)
    man = out_dir / "manifest.json"
    if not man.exists():
        raise RlhaifError(f"{where} has not finished ({man} missing); run it first, or drop --only")
    outputs = json.loads(man.read_text()).get("outputs") or {}
    scope.outputs[spec.name] = {"dir": str(out_dir), **outputs}
    if spec.stage in POLICY_STAGES:
        scope.vars["policy"] = _policy_of(outputs, out_dir)


def check_recipe(recipe: Recipe) -> list[str]:
    """Without running anything: every stage kind is known and importable, and every setting is a field of
    its config (typos fail with a suggestion). Returns one line per stage."""
    from rlhaif.config import check_keys

    lines = []
    for spec in recipe.stages:
        _, cfg_cls = stage_function(spec.stage, recipe.source)
        check_keys(cfg_cls, spec.settings, f"{recipe.source}: stage '{spec.name}'")
        lines.append(f"{spec.name}: {spec.stage} ({cfg_cls.__name__})" + (" [every round]" if spec.repeat else ""))
    return lines


def demo_recipe(name: str = "rlhf", run_dir: str = "runs/demo", hh_rlhf: Optional[str] = None,
                human: bool = False) -> Recipe:
    """The recipe `rlhaif demo` runs: the bundled ``assets/recipes/<name>.yaml`` with ``run_dir`` set;
    ``hh_rlhf`` trains the gold reward model on that hh-rlhf file instead of the bundled pairs."""
    path = ASSETS / "recipes" / f"{name}.yaml"
    data = load_yaml(path)
    data["run_dir"] = run_dir
    for st in data["stages"]:
        if hh_rlhf and st.get("name") == "gold_pairs":
            if not Path(hh_rlhf).exists():
                raise RlhaifError(f"--hh-rlhf {hh_rlhf}: file not found")
            st.update(inputs=[str(hh_rlhf)], limit=800, skip_invalid=True)
    if human:
        if not any(st.get("stage") == "simulate" for st in data["stages"]):
            raise RlhaifError(f"--human replaces the simulated panel, and the '{name}' demo has none (its "
                              "feedback comes from the AI judge)")
        data["stages"] = [_human_stage(st) if st.get("stage") == "simulate" else st for st in data["stages"]]
    return recipe_from_dict(data, str(path))


def _human_stage(st: dict[str, Any]) -> dict[str, Any]:
    """`rlhaif demo --human`: the annotation app collects the labels in place of the simulated panel."""
    return {"stage": "human", "name": st.get("name", "simulate"), "repeat": st.get("repeat", False),
            "completions": st["completions"]}
