"""`rlhaif run recipe.yaml` (or a packaged recipe by name: `rlhaif run rlhf`): run the stages of a recipe in
order, each in its own folder with a manifest.

A recipe is YAML::

    run_dir: runs/rlhf          # every stage writes under it
    policy: smollm2-135m-instruct   # the starting policy; ${policy} always names the latest one
    rounds: 2                   # iterated RLHF: the stages marked `repeat: true` run once per round
    stages:
      - {stage: sft, data: ${assets}/demos/demo_sft.jsonl, lora_r: 16}
      - {stage: generate, name: gen, repeat: true, model: ${policy}, prompts: ...}
      - {stage: ppo, repeat: true, model: ${policy}, reward_model: ${reward}, ...}
      - {stage: evaluate, models: {base: ${base}, aligned: ${policy}}, ...}

Each entry names a stage (a key of STAGES, or ``module:function`` for your own) and its settings, which are
the stage's config fields (the same keys as its command's --config YAML). ``output_dir`` defaults to
``${run_dir}/<name>`` (``${run_dir}/round<r>/<name>`` for repeated stages). Strings may refer to:

- ``${run_dir}``, ``${round}``, ``${assets}`` (the files bundled with rlhaif), ``${base}`` (the starting policy),
  ``${policy}`` (the latest policy: updated by every sft, ppo and dpo stage);
- ``${<name>}``: the output folder of the stage called <name> (its latest run); ``${<name>.<key>}``: a value
  the stage returned (also kept in its manifest.json ``outputs``), e.g. ``${ppo.model}``, ``${pairs.pairs}``;
- ``${prev.<name>}``, ``${prev.<name>.<key>}`` (in a repeated stage, of a repeated stage): the same from the
  previous round, e.g. the newest reward model before this round's is trained (``scorer: ${prev.rm}`` of the
  ``select`` stage). Round 1 has no previous round: there the reference is empty (null; a list item that is
  only such a reference is dropped) and the log says so. It must be a whole value or list item.

A stage whose manifest matches (same config, same input file hashes) is skipped on a re-run; a stage that
was interrupted runs again and resumes from its own last checkpoint. A stage whose folder holds results of
another config is redone only when this recipe wrote them (the ``recipe`` key of its manifest); another
recipe's results stop the run unless ``force`` (``--force``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
import time
import typing
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel

from rlhaif.config import StageConfig, load_yaml
from rlhaif.data.io import atomic_write
from rlhaif.errors import ConfigError, RlhaifError

ASSETS = Path(__file__).parent / "assets"

# stage kind -> (module, function). The function takes its StageConfig subclass (found from its annotation)
# and returns its result record (a frozen dataclass beside it: SFTResult, DPOResult, ...), whose fields use the
# same names for what it made (where they apply): output_dir, model (a policy or reward model folder), pairs
# (a pairs.jsonl path; its count is n_pairs), completions, report, metrics. It writes its own manifest.json
# (rlhaif.manifest.write_stage_manifest), alone or in a recipe; the manifest's `outputs` are the record's
# fields (rlhaif.manifest.stage_outputs), which ${<name>.<key>} reads.
STAGES: dict[str, tuple[str, str]] = {
    "sft": ("rlhaif.policy.sft", "run_sft"),
    "generate": ("rlhaif.generate", "run_generate"),
    "simulate": ("rlhaif.feedback.simulate", "run_simulated_panel"),
    "ai_label": ("rlhaif.feedback.ai.judge", "run_ai_label"),
    "revise": ("rlhaif.feedback.ai.critique_revise", "run_revise"),
    "pairs": ("rlhaif.feedback.mix", "run_pairs"),
    "select": ("rlhaif.feedback.select_stage", "run_select"),
    "human": ("rlhaif.feedback.human.collect", "run_human_feedback"),
    "reward": ("rlhaif.reward.train", "run_reward_train"),
    "ppo": ("rlhaif.policy.ppo", "run_ppo"),
    "dpo": ("rlhaif.policy.dpo", "run_dpo"),
    "evaluate": ("rlhaif.evaluate.run", "run_evaluate"),
}
# Stages whose result is a new policy: ${policy} follows their `model` output.
POLICY_STAGES = ("sft", "ppo", "dpo")
_REF = re.compile(r"\$\{([^}]+)\}")
PREV = "prev"  # ${prev.<name>...}: a repeated stage's outputs of the previous round (no stage takes this name)


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
    seed: Optional[int] = None
    """The seed of every stage that takes one and does not set its own (``rlhaif run/demo --seed``)."""


def packaged_recipes() -> dict[str, Path]:
    """The recipes shipped inside rlhaif (``assets/recipes/<name>.yaml``), by name."""
    return {p.stem: p for p in sorted((ASSETS / "recipes").glob("*.yaml"))}


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file, or the name of a packaged recipe (``rlhf``, ``cai``, ...) where no such file exists."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = packaged_recipes()
    if path.name == str(name_or_path) and path.stem in shipped and path.suffix in ("", ".yaml"):
        return shipped[path.stem]
    raise ConfigError(f"{name_or_path}: no such recipe file, and no packaged recipe of that name (packaged: "
                      f"{', '.join(shipped)})")


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """Parse a recipe file (or a packaged recipe named as in ``recipe_path``); top-level keys ``run_dir``,
    ``policy``, ``rounds``, ``stages``."""
    path = recipe_path(path)
    data = load_yaml(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    known = {"run_dir", "policy", "rounds", "stages", "description", "seed"}
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
        if name == PREV:
            raise ConfigError(f"{source}: stages[{i}]: '{PREV}' is not a stage name (${{{PREV}.<name>}} refers to the "
                              "previous round); give it another 'name'")
        names.add(name)
        specs.append(StageSpec(stage=kind, name=name, repeat=repeat, settings=st))
    flags = [s.repeat for s in specs]
    if True in flags:
        first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
        if not all(flags[first:last + 1]):
            raise ConfigError(f"{source}: the stages marked 'repeat: true' must be next to each other")
    _check_previous_round_refs(specs, source)
    rounds = int(data.get("rounds", 1))
    if rounds < 1:
        raise ConfigError(f"{source}: rounds must be >= 1, got {rounds}")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"{source}: seed must be an integer >= 0, got {seed!r}")
    return Recipe(run_dir=str(data["run_dir"]), policy=data.get("policy"), rounds=rounds, stages=specs,
                  source=source, seed=seed)


def _refs(value: Any, path: str = "") -> list[tuple[str, str, bool]]:
    """Every ``${...}`` in a setting: (where it sits, e.g. ``inputs[0]``; its expression; whether it is the
    whole string)."""
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _refs(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _refs(v, f"{path}[{i}]")]
    if not isinstance(value, str):
        return []
    whole = _REF.fullmatch(value.strip())
    return [(path, m.group(1).strip(), whole is not None) for m in _REF.finditer(value)]


def _is_previous_round_ref(value: Any) -> bool:
    """Whether a setting is a whole ``${prev...}`` reference."""
    refs = _refs(value) if isinstance(value, str) else []
    return len(refs) == 1 and refs[0][2] and refs[0][1].partition(".")[0] == PREV


def _check_previous_round_refs(specs: list[StageSpec], source: str) -> None:
    """``${prev.<name>...}`` only in a repeated stage, only of a repeated stage, only as a whole value: an error
    here is found by ``--check``, before anything runs."""
    repeated = {s.name: s.repeat for s in specs}
    for spec in specs:
        for _, expr, whole in _refs(spec.settings):
            head, _, rest = expr.partition(".")
            if head != PREV:
                continue
            ref, where = f"${{{expr}}}", f"{source}: stage '{spec.name}'"
            name = rest.partition(".")[0]
            if not name:
                raise ConfigError(f"{where}: {ref}: name the stage, as in ${{{PREV}.<name>}} or "
                                  f"${{{PREV}.<name>.<key>}}")
            if not spec.repeat:
                raise ConfigError(f"{where}: {ref}: only a repeated stage (repeat: true) has a previous round; "
                                  f"refer to the latest run as ${{{rest}}}")
            if name not in repeated:
                raise ConfigError(f"{where}: {ref} refers to no stage called '{name}' (the stages are "
                                  f"{', '.join(repeated)})")
            if not repeated[name]:
                raise ConfigError(f"{where}: {ref}: stage '{name}' runs once (it is not repeat: true), so it has no "
                                  f"previous round; refer to it as ${{{rest}}}")
            if not whole:
                raise ConfigError(f"{where}: {ref} must be a whole value (or list item): in round 1 it is empty")


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
        self.by_round: dict[tuple[str, int], dict[str, Any]] = {}  # (repeated stage, round) -> the same
        self.recipe = recipe_identity(recipe)
        self.force = False  # run_recipe(force=True): replace what other recipes wrote in run_dir
        self.seed = recipe.seed

    def lookup(self, expr: str, where: str) -> Any:
        expr = expr.strip()
        if expr in self.vars:
            if self.vars[expr] is None:
                raise ConfigError(f"{where}: ${{{expr}}} is not set (give the recipe a top-level 'policy')")
            return self.vars[expr]
        name, _, key = expr.partition(".")
        if name == PREV:  # recipe_from_dict checked that a repeated stage refers to a repeated one
            name, _, key = key.partition(".")
            before = self.vars["round"] - 1
            if before < 1:  # round 1: empty (run_stage logs it)
                return None
            if (name, before) not in self.by_round:
                raise ConfigError(f"{where}: ${{{expr}}}: stage '{name}' did not run in round {before}")
            return self._value(self.by_round[name, before], name, key, expr, where)
        if name not in self.outputs:
            raise ConfigError(f"{where}: ${{{expr}}} refers to stage '{name}', which has not run before this one")
        return self._value(self.outputs[name], name, key, expr, where)

    @staticmethod
    def _value(out: dict[str, Any], name: str, key: str, expr: str, where: str) -> Any:
        if not key:
            return out["dir"]
        val: Any = out
        for part in key.split("."):
            if not isinstance(val, dict) or part not in val:
                have = ", ".join(sorted(k for k in out if k != "dir"))
                raise ConfigError(f"{where}: ${{{expr}}}: stage '{name}' returned no '{key}' (it returned: {have})")
            val = val[part]
        return val

    def record(self, spec: StageSpec, round_: int, repeated: bool, out_dir: Path, outputs: dict[str, Any],
               where: str) -> None:
        """A stage's outputs, for ``${<name>...}`` (and ``${prev.<name>...}`` in the next round)."""
        self.outputs[spec.name] = {"dir": str(out_dir), **outputs}
        if repeated:
            self.by_round[spec.name, round_] = self.outputs[spec.name]
        if spec.stage in POLICY_STAGES:
            self.vars["policy"] = _policy_of(outputs, where)

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            whole = _REF.fullmatch(value.strip())
            if whole:
                return self.lookup(whole.group(1), where)
            return _REF.sub(lambda m: str(self.lookup(m.group(1), where)), value)
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):  # round 1's empty ${prev...} items are dropped
            items = [(v, self.resolve(v, f"{where}[{i}]")) for i, v in enumerate(value)]
            return [r for v, r in items if not (r is None and _is_previous_round_ref(v))]
        return value


def _policy_of(outputs: dict[str, Any], where: str) -> str:
    """The policy a sft/ppo/dpo stage produced: the `model` it returned."""
    if not isinstance(outputs.get("model"), str):
        raise RlhaifError(f"{where} returned no 'model' (it returned: {', '.join(sorted(outputs)) or 'nothing'})")
    return outputs["model"]


STARTED = ".rlhaif_started.json"  # the fingerprint of a stage that started and has not finished (dot: not hashed)


def recipe_identity(recipe: Recipe) -> str:
    """What names a recipe in the folders it writes (the ``recipe`` key of their manifest.json and of
    STARTED): its file, resolved, so the same recipe file is the same recipe from any working directory."""
    return str(Path(recipe.source).resolve()) if Path(recipe.source).exists() else recipe.source


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _started_fingerprint(out_dir: Path) -> dict[str, Any] | None:
    """The fingerprint in a stage folder's STARTED file (without the runner's ``recipe`` key), or None."""
    started = out_dir / STARTED
    if not started.exists():
        return None
    return {k: v for k, v in _read_json(started).items() if k != "recipe"}


def _prepare_dir(out_dir: Path, fp: dict[str, Any], name: str, run_dir: str, log: Callable[[str], None],
                 recipe: str = "<recipe>", force: bool = False) -> None:
    """Resume an interrupted stage only when it was started with the same fingerprint. A folder that holds
    another config's run (finished or not) is emptied first, since its checkpoints belong to other settings,
    but only when this recipe wrote it (its manifest or STARTED file names this recipe) or with ``force``:
    another recipe's results, or ones written by a stage run alone, are never cleared silently."""
    started = out_dir / STARTED
    fp_json = json.loads(json.dumps(fp, default=str))
    if _is_main_process():
        if _started_fingerprint(out_dir) == fp_json:
            log(_resume_line(out_dir, fp_json, name))
        elif (out_dir / "manifest.json").exists() or started.exists():
            inside = Path(run_dir).resolve() in out_dir.resolve().parents
            if not inside:  # never delete a folder the recipe does not own
                raise RlhaifError(f"stage '{name}': {out_dir} holds a run with another config and lies outside "
                                  f"run_dir {run_dir}; delete it or choose another output_dir")
            owner = (_read_json(out_dir / "manifest.json").get("recipe")
                     or _read_json(started).get("recipe"))
            if owner != recipe and not force:
                made_by = (f"results of the recipe {owner}" if owner else "results this recipe did not write (a "
                           "stage run alone, or a run of an rlhaif that did not record its recipe)")
                raise RlhaifError(
                    f"stage '{name}': {out_dir} holds {made_by}, with another config; refusing to clear them. "
                    f"Give this run its own folder (--run-dir), or pass --force to replace them")
            why = ("its config or inputs changed" if owner == recipe
                   else f"--force, replacing the results of {owner or 'another run'}")
            log(f"[redo] {name}: {why}; clearing {out_dir}")
            shutil.rmtree(out_dir)
        else:
            log(f"[run ] {name} -> {out_dir}")
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(started) as f:
            json.dump({**fp, "recipe": recipe}, f, default=str)
    _wait_for_file(lambda: _started_fingerprint(out_dir) == fp_json)


def _resume_line(out_dir: Path, fp: dict[str, Any], name: str) -> str:
    """What a re-run does with a stage interrupted before with the same config: resume from the checkpoint it
    saved (what a training stage does, rlhaif.training.start_run), or run again when it saved none."""
    from rlhaif.training import latest_checkpoint

    ckpt = latest_checkpoint(out_dir) if fp.get("config", {}).get("resume", True) else None
    if ckpt is not None:
        step = json.loads((ckpt / "trainer_state.json").read_text()).get("step")
        return f"[resume] {name}: interrupted before with the same config; resumes from its checkpoint at step {step}"
    return (f"[rerun] {name}: interrupted before with the same config, with no checkpoint saved; it runs again in "
            f"{out_dir}")


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
    """Resolve one stage's settings, skip it if its manifest matches, else run it. The stage writes its own
    manifest; the runner writes one only for a stage that did not (e.g. a ``module:function`` of yours)."""
    from rlhaif.manifest import manifest_matches, stage_fingerprint, stage_outputs, write_manifest

    where = f"{source}: stage '{spec.name}'"
    fn, cfg_cls = stage_function(spec.stage, source)
    settings = scope.resolve(spec.settings, where)
    if repeated and round_ == 1 and _is_main_process():  # ${prev...} resolved empty
        for path, expr, _ in _refs(spec.settings):
            if expr.partition(".")[0] == PREV:
                log(f"[prev] {spec.name} round 1: {path}: ${{{expr}}} is empty: there is no previous round")
    sub = f"round{round_}/{spec.name}" if repeated else spec.name
    if "output_dir" not in cfg_cls.model_fields:
        raise RlhaifError(f"{where}: {cfg_cls.__name__} has no 'output_dir' field; a recipe stage needs one")
    settings.setdefault("output_dir", str(Path(scope.run_dir) / sub))
    if scope.seed is not None and "seed" in cfg_cls.model_fields:
        settings.setdefault("seed", scope.seed)  # the recipe's seed, where the stage sets none of its own
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
        _prepare_dir(out_dir, fp, spec.name, scope.run_dir, log, scope.recipe, scope.force)
        t0, c0 = time.time(), time.process_time()
        outputs, wall = stage_outputs(fn(cfg)), round(time.time() - t0, 2)
        cpu = round(time.process_time() - c0, 2)  # all threads of this process: wall ≈ cpu / threads when quiet
        if _is_main_process():
            if manifest_matches(out_dir, fp):  # the stage's own: the runner adds only its wall time
                _record_runner(out_dir / "manifest.json", wall, scope.recipe)
            else:  # a stage that writes no manifest of its own (e.g. a module:function of yours)
                write_manifest(out_dir, fp, seed=config.get("seed"), wall_time_s=wall, outputs=outputs)
                _record_runner(out_dir / "manifest.json", wall, scope.recipe)
            (out_dir / STARTED).unlink(missing_ok=True)
            log(f"[done] {spec.name}{f' round {round_}' if repeated else ''}: {wall:.1f} s (cpu {cpu:.1f} s)")
        _wait_for_file(lambda: manifest_matches(out_dir, fp))  # nobody reads outputs before the manifest exists
        status = "ran"
    scope.record(spec, round_, repeated, out_dir, outputs, where)
    # wall_time_s: the stage's own run time (from its manifest when skipped: the run that made the outputs)
    return {"name": spec.name, "stage": spec.stage, "round": round_ if repeated else None, "status": status,
            "wall_time_s": wall, "cpu_time_s": cpu, "output_dir": str(out_dir), "outputs": outputs}


def _record_runner(path: Path, wall: float, recipe: str) -> None:
    """The runner's wall time of a stage in the manifest the stage wrote (a re-run that skips the stage
    reports it) and the recipe that ran it (whose later runs may redo the stage), the rest as the stage
    wrote it."""
    body = json.loads(path.read_text())
    body["wall_time_s"] = wall
    body["recipe"] = recipe
    with atomic_write(path) as f:
        json.dump(body, f, indent=2, default=str)


def run_recipe(recipe: Recipe, only: Optional[list[str]] = None, log: Callable[[str], None] = print,
               force: bool = False) -> dict:
    """Run every stage in order (the repeated block once per round). ``only``: run just these stage names;
    the stages before them must have finished (their manifests give the values later stages refer to), the
    stages after the last of them are left alone. A stage whose folder holds results of another config is
    redone when this recipe wrote them; results another recipe (or a stage run alone) wrote are an error
    unless ``force``."""
    scope = _Scope(recipe)
    scope.force = force
    done: list[dict[str, Any]] = []
    block = [i for i, s in enumerate(recipe.stages) if s.repeat]
    order: list[tuple[int, int, bool]] = []  # (stage index, round, repeated)
    for i, s in enumerate(recipe.stages):
        if block and i == block[0]:
            order += [(j, r, True) for r in range(1, recipe.rounds + 1) for j in block]
        elif not s.repeat:
            order.append((i, recipe.rounds if block and i > block[-1] else 1, False))
    if only:  # run up to the last stage asked for: what comes after it need not have run
        unknown = sorted(set(only) - {s.name for s in recipe.stages})
        if unknown:
            raise ConfigError(f"{recipe.source}: --only names no stage called {', '.join(unknown)}; the stages are "
                              f"{', '.join(s.name for s in recipe.stages)}")
        order = order[: max(k for k, (i, _, _) in enumerate(order) if recipe.stages[i].name in only) + 1]
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
            if st["stage"] == "evaluate" and Path(st["outputs"].get("report") or "").is_file():
                add_run_timings(Path(st["outputs"]["report"]).parent, timings)
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
    scope.record(spec, round_, repeated, out_dir, outputs, where)


def check_recipe(recipe: Recipe) -> list[str]:
    """Without running anything: every stage kind is known and importable, every setting is a field of its
    config (typos fail with a suggestion) and every setting without a ``${...}`` reference has a valid value
    (type and range). Returns one line per stage."""
    from rlhaif.config import check_keys

    lines = []
    for spec in recipe.stages:
        _, cfg_cls = stage_function(spec.stage, recipe.source)
        check_keys(cfg_cls, spec.settings, f"{recipe.source}: stage '{spec.name}'")
        cfg_cls.check_values(spec.settings, f"{recipe.source}: stage '{spec.name}'")
        lines.append(f"{spec.name}: {spec.stage} ({cfg_cls.__name__})" + (" [every round]" if spec.repeat else ""))
    return lines


def demo_run_dir(cai: bool = False, hh_rlhf: bool = False, human: bool = False) -> str:
    """Each demo's own default folder (runs/demo, runs/demo-cai, runs/demo-hh, ...-human): one demo never
    meets another's results in its stage folders."""
    return "runs/demo" + ("-cai" if cai else "") + ("-hh" if hh_rlhf else "") + ("-human" if human else "")


def demo_recipe(name: str = "rlhf", run_dir: Optional[str] = None, hh_rlhf: Optional[str] = None,
                human: bool = False) -> Recipe:
    """The recipe `rlhaif demo` runs: the bundled ``assets/recipes/<name>.yaml`` with ``run_dir`` set (default
    ``demo_run_dir``). With ``hh_rlhf`` (an hh-rlhf file), the rlhf demo becomes the ``rlhf-hh`` recipe (a
    harmlessness gold learned from that file beside the bundled helpful-and-harmless one, both optimised by the
    gated rule) and the cai demo's gold reward model learns from that file instead of the bundled pairs."""
    if hh_rlhf and not Path(hh_rlhf).exists():
        raise RlhaifError(f"--hh-rlhf {hh_rlhf}: file not found")
    cai = name == "cai"
    if hh_rlhf and name == "rlhf":
        if human:
            raise RlhaifError("--human with --hh-rlhf: the hh-rlhf demo has two simulated panels (harmlessness and "
                              "helpfulness); label one yourself with `rlhaif run rlhf-hh --show`, edited")
        name = "rlhf-hh"
    path = packaged_recipes()[name]
    data = load_yaml(path)
    data["run_dir"] = run_dir or demo_run_dir(cai=cai, hh_rlhf=bool(hh_rlhf), human=human)
    hh_stage = "hh_pairs" if name == "rlhf-hh" else "gold_pairs"
    for st in data["stages"]:
        if hh_rlhf and st.get("name") == hh_stage:
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
