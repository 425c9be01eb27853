"""The recipe runner on tiny models: every artifact and manifest, ${...} resolution, iterated rounds,
skip on re-run, re-run after a change, resume after a crash mid-PPO, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.pipeline import check_recipe, load_recipe, recipe_from_dict, run_recipe

SCORERS = '''
import os

calls = 0

def length(prompts, responses):
    return [float(len(r.split())) for r in responses]

def length_noting_rank(prompts, responses):
    """Length reward that records which process (RANK) called it."""
    with open(os.environ["RLHAIF_TEST_RANKS"], "a") as f:
        f.write(os.environ.get("RANK", "none") + "\\n")
    return [float(len(r.split())) for r in responses]

def crash_on_third_call(prompts, responses):
    """A PPO reward that kills its own process at the third scoring (step 3) when asked: a hard crash."""
    global calls
    calls += 1
    if os.environ.get("RLHAIF_TEST_CRASH") and calls == 3:
        os.kill(os.getpid(), 9)
    return [float(r.split().count("good")) for r in responses]
'''

PROMPTS = ["tell me about the cat", "what is good food", "how do you help me", "why is the sun big",
           "can you tell me a book", "where is the dog", "what is music", "how are you"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlhaif.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("pipe")
    save_tiny(d / "lm", "llama", seed=0)
    save_tiny(d / "rm", "llama", seed=0, reward=True)
    (d / "scorers.py").write_text(SCORERS)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                                             for i, p in enumerate(PROMPTS)))
    return d


def rlhf_recipe(d: Path, hh: str, run_dir: Path, rounds: int = 2) -> dict:
    prompts = str(d / "prompts.jsonl")
    return {"run_dir": str(run_dir), "policy": str(d / "lm"), "rounds": rounds, "stages": [
        {"stage": "pairs", "inputs": [hh], "limit": 24, "skip_invalid": True},
        {"stage": "reward", "data": "${pairs.pairs}", "backbone": str(d / "rm"), "max_length": 48,
         "batch_size": 8, "eval_fraction": 0.25},
        {"stage": "generate", "name": "gen", "repeat": True, "model": "${policy}", "prompts": prompts, "k": 2,
         "max_new_tokens": 6, "max_prompts": 4},
        {"stage": "simulate", "repeat": True, "completions": "${gen.completions}", "scorer": "reward_model:${reward}",
         "kind": "ranking", "overlap": 2},
        {"stage": "reward", "name": "proxy_rm", "repeat": True, "data": "${simulate.pairs}",
         "backbone": str(d / "rm"), "max_length": 48, "batch_size": 8, "eval_fraction": 0.0, "normalize": False},
        {"stage": "ppo", "repeat": True, "model": "${policy}", "prompts": prompts, "reward_model": "${proxy_rm}",
         "steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6,
         "save_every": 1, "lora_r": 4, "learning_rate": 1e-3},
        {"stage": "dpo", "model": "${base}", "pairs": "${pairs.pairs}", "max_steps": 1, "batch_size": 4,
         "max_length": 48},
        {"stage": "evaluate", "models": {"base": "${base}", "ppo": "${ppo.model}", "dpo": "${dpo.model}"},
         "prompts": prompts, "max_prompts": 4, "proxy_scorer": "${reward}",
         "gold_scorer": f"{d / 'scorers.py'}:length", "max_new_tokens": 6, "bootstrap_rounds": 10,
         "training_metrics": {"ppo round 1": "${run_dir}/round1/ppo/metrics.jsonl",
                              "ppo round 2": "${run_dir}/round2/ppo/metrics.jsonl"}},
    ]}


def test_recipe_end_to_end_rounds_and_skip(tiny, hh_path, tmp_path):
    run = tmp_path / "run"
    recipe = recipe_from_dict(rlhf_recipe(tiny, hh_path, run), "tiny.yaml")
    assert len(check_recipe(recipe)) == 8
    logs: list[str] = []
    summary = run_recipe(recipe, log=logs.append)
    order = [(s["name"], s["round"]) for s in summary["stages"]]
    assert order == [("pairs", None), ("reward", None), ("gen", 1), ("simulate", 1), ("proxy_rm", 1), ("ppo", 1),
                     ("gen", 2), ("simulate", 2), ("proxy_rm", 2), ("ppo", 2), ("dpo", None), ("evaluate", None)]
    assert all(s["status"] == "ran" for s in summary["stages"])
    dirs = {"pairs": run / "pairs", "reward": run / "reward", "gen1": run / "round1" / "gen",
            "ppo1": run / "round1" / "ppo", "gen2": run / "round2" / "gen", "ppo2": run / "round2" / "ppo",
            "dpo": run / "dpo", "evaluate": run / "evaluate", "simulate1": run / "round1" / "simulate",
            "simulate2": run / "round2" / "simulate", "proxy_rm1": run / "round1" / "proxy_rm",
            "proxy_rm2": run / "round2" / "proxy_rm"}  # all 12 stage runs
    for key, d in dirs.items():
        man = json.loads((d / "manifest.json").read_text())
        assert key.startswith(man["stage"]) or (man["stage"], key) in {("generate", "gen1"), ("generate", "gen2"),
                                                                        ("reward", "proxy_rm1"), ("reward", "proxy_rm2")}
        assert man["config"]["output_dir"] == str(d) and man["versions"]["torch"] and man["wall_time_s"] >= 0
    # artifacts of each stage
    assert len((dirs["pairs"] / "pairs.jsonl").read_text().splitlines()) == 24
    assert (dirs["reward"] / "reward_config.json").exists() and (dirs["reward"] / "eval.json").exists()
    # the simulated panel ranked each prompt's 2 responses with 2 annotators: up to 2 pairs per prompt
    sim = json.loads((dirs["simulate1"] / "manifest.json").read_text())
    assert sim["config"]["scorer"] == f"reward_model:{dirs['reward']}" and "scorer" in sim["inputs"]
    assert 0 < len((dirs["simulate1"] / "pairs.jsonl").read_text().splitlines()) <= 8
    assert (dirs["proxy_rm2"] / "reward_config.json").exists() and (dirs["proxy_rm1"] / "reward_config.json").exists()
    assert 0 < len((dirs["simulate2"] / "pairs.jsonl").read_text().splitlines()) <= 8
    for g in ("gen1", "gen2"):
        assert len((dirs[g] / "completions.jsonl").read_text().splitlines()) == 8  # 4 prompts x k=2
    for p in ("ppo1", "ppo2"):
        assert [json.loads(l)["step"] for l in (dirs[p] / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert (dirs[p] / "model" / "adapter_config.json").exists() or (dirs[p] / "model" / "config.json").exists()
    assert (dirs["dpo"] / "model").is_dir()
    for f in ("report.html", "report.json", "plots/training_curves.png", "samples/ppo.jsonl"):
        assert (dirs["evaluate"] / f).exists(), f
    # ${...} resolution: round 2 starts from round 1's PPO policy; PPO scores with the trained reward model
    ppo1 = json.loads((dirs["ppo1"] / "manifest.json").read_text())
    gen2 = json.loads((dirs["gen2"] / "manifest.json").read_text())
    ppo2 = json.loads((dirs["ppo2"] / "manifest.json").read_text())
    assert gen2["config"]["model"] == ppo1["outputs"]["model"] == ppo2["config"]["model"]
    assert ppo1["config"]["reward_model"] == str(run / "round1" / "proxy_rm")
    assert "reward_model" in ppo1["inputs"] and len(ppo1["inputs"]["reward_model"]) == 64  # a sha256
    rep = json.loads((dirs["evaluate"] / "report.json").read_text())
    # paths inside the run folder are relative to it
    assert rep["config"]["models"]["ppo"] == "round2/ppo/model" and rep["paths_relative_to"] == ".."
    assert rep["training"]["ppo round 2"]["steps"] == 2
    # every stage's wall time, in the run log, the summary and the report (the demo's 20-minute budget)
    times = rep["run_timings"]
    assert [r["stage"] for r in times["stages"]][:3] == ["pairs", "reward", "gen (round 1)"]
    assert all(r["wall_time_s"] >= 0 for r in times["stages"]) and len(times["stages"]) == 12
    assert times["stages_total_s"] == pytest.approx(sum(r["wall_time_s"] for r in times["stages"]), abs=0.05)
    assert "Run time" in (dirs["evaluate"] / "report.html").read_text()
    assert sum(l.startswith("[done] ") for l in logs) == 12 and any("all stages" in l for l in logs)

    # a re-run skips every stage
    again = run_recipe(recipe, log=logs.append)
    assert [s["status"] for s in again["stages"]] == ["skipped"] * 12
    assert again["timings"]["stages_total_s"] == times["stages_total_s"]  # skipped: the times of the first run
    assert (dirs["evaluate"] / "report.html").read_text().count("Run time") == 1  # replaced, not added twice
    # a changed setting re-runs that stage and the ones whose inputs changed, not the others
    changed = rlhf_recipe(tiny, hh_path, run)
    changed["stages"][6]["learning_rate"] = 1e-4
    third = run_recipe(recipe_from_dict(changed, "tiny.yaml"), log=logs.append)
    status = {(s["name"], s["round"]): s["status"] for s in third["stages"]}
    assert status[("dpo", None)] == "ran" and status[("evaluate", None)] == "ran"
    assert any(l.startswith("[redo] dpo") for l in logs)  # stale checkpoints of the old config cleared
    assert status[("pairs", None)] == status[("reward", None)] == status[("ppo", 2)] == "skipped"


def test_crash_mid_ppo_then_rerun_resumes(tiny, tmp_path):
    run = tmp_path / "run"
    recipe = {"run_dir": str(run), "policy": str(tiny / "lm"), "stages": [
        {"stage": "generate", "model": "${policy}", "prompts": str(tiny / "prompts.jsonl"), "k": 1,
         "max_new_tokens": 4, "max_prompts": 2},
        {"stage": "ppo", "model": "${policy}", "prompts": str(tiny / "prompts.jsonl"),
         "reward_fn": f"{tiny / 'scorers.py'}:crash_on_third_call", "steps": 5, "batch_size": 2,
         "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 4, "save_every": 1, "lora_r": 4}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "rlhaif.cli", "run", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RLHAIF_TEST_CRASH": "1"})
    assert r.returncode == -9, r.stderr[-2000:]  # killed while scoring step 3
    ppo = run / "ppo"
    assert not (ppo / "manifest.json").exists()  # not finished: no manifest
    assert sorted(p.name for p in (ppo / "checkpoints").glob("step-*")) == ["step-000001", "step-000002"]
    logs: list[str] = []  # the re-run, in this process (the scorer module is loaded afresh: no crash now)
    summary = run_recipe(load_recipe(path), log=logs.append)
    assert [s["status"] for s in summary["stages"]] == ["skipped", "ran"]
    assert any(l.startswith("[resume] ppo") for l in logs)
    man = json.loads((ppo / "manifest.json").read_text())
    assert man["outputs"]["resumed_from"] == 2 and man["outputs"]["steps"] == 5
    steps = [json.loads(l)["step"] for l in (ppo / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # continued, not restarted, no duplicated rows


def test_recipe_errors(tiny, tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'pp0'"):
        check_recipe(recipe_from_dict({"run_dir": "r", "stages": [{"stage": "pp0"}]}, "x.yaml"))
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        check_recipe(recipe_from_dict({"run_dir": "r", "stages": [{"stage": "ppo", "lerning_rate": 1}]}, "x.yaml"))
    with pytest.raises(ConfigError, match="unknown top-level key 'stage'"):
        recipe_from_dict({"run_dir": "r", "stage": []}, "x.yaml")
    with pytest.raises(ConfigError, match="two stages are called 'gen'"):
        recipe_from_dict({"run_dir": "r", "stages": [{"stage": "generate", "name": "gen"},
                                                      {"stage": "generate", "name": "gen"}]}, "x.yaml")
    with pytest.raises(ConfigError, match="must be next to each other"):
        recipe_from_dict({"run_dir": "r", "stages": [{"stage": "generate", "name": "a", "repeat": True},
                                                      {"stage": "pairs"},
                                                      {"stage": "generate", "name": "b", "repeat": True}]})
    bad_ref = recipe_from_dict({"run_dir": str(tmp_path), "stages": [
        {"stage": "pairs", "inputs": ["${reward.pairs}"]}]}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: stage 'pairs'.*\$\{reward.pairs\} refers to stage 'reward'"):
        run_recipe(bad_ref, log=lambda m: None)
    missing = recipe_from_dict({"run_dir": "r", "stages": [{"stage": "nosuchmodule_xyz:run"}]}, "x.yaml")
    with pytest.raises(RlhaifError, match="not available"):
        check_recipe(missing)


def test_shipped_recipes_check_and_load_by_name(tmp_path, monkeypatch):
    from rlhaif.pipeline import ASSETS, packaged_recipes

    root = Path(__file__).parent.parent
    shipped = packaged_recipes()
    assert set(shipped) == {"rlhf", "rlhf-hh", "cai", "dpo", "online_dpo", "rejection_sampling", "study-knobs",
                            "study-overoptimization", "active-labels"}
    assert not list((root / "recipes").glob("*.yaml")), "recipes/ holds a second copy of a packaged recipe"
    for name, path in shipped.items():
        assert path.parent == ASSETS / "recipes"
        assert len(check_recipe(load_recipe(name))) >= 3  # every stage importable, every key a config field
    assert len(check_recipe(load_recipe("study-overoptimization"))) == 12  # + proxy_ensemble, rloo_ensemble
    monkeypatch.chdir(tmp_path)  # a file of that name wins over the packaged recipe
    (tmp_path / "rlhf").write_text(yaml.safe_dump({"run_dir": "mine", "stages": [{"stage": "sft", "data": "d"}]}))
    assert load_recipe("rlhf").run_dir == "mine" and load_recipe("dpo").source == str(shipped["dpo"])
    with pytest.raises(ConfigError, match=r"nope: no such recipe file.*packaged: active-labels, cai, dpo"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe("sub/rlhf")  # a path is a path


def test_cai_recipe_evaluates_by_a_gold_scorer_per_prompt_group_led_by_the_labeler():
    """The CAI recipe (as `rlhaif demo --cai` runs it) evaluates base vs SL-CAI vs RL-CAI on the held-out prompts
    by a gold reward model learned from human preferences (as the rlhf demo's), per prompt kind, RL-CAI against
    SL-CAI, with the AI labeler's calibration leading the report and no win rate by the at-chance judge."""
    from rlhaif.pipeline import ASSETS, demo_recipe

    r = demo_recipe("cai")
    stages = {s.name: s for s in r.stages}
    rlhf = {s.name: s for s in demo_recipe("rlhf").stages}
    for name in ("gold_pairs", "gold_rm"):  # the same people as the rlhf demo's, before any training
        assert stages[name].settings == rlhf[name].settings and not stages[name].repeat
    assert stages["ai_label"].settings["calibration"] == "${assets}/preferences/demo_pairs.jsonl"
    ev = stages["evaluate"].settings
    assert ev["gold_scorer"] == "${gold_rm}" and ev["proxy_scorer"] == "${pm}"
    assert ev["models"] == {"base": "${base}", "sl-cai": "${sft.model}", "rl-cai": "${ppo.model}"}
    assert ev["reference"] == "sl-cai" and ev["ai_labeler"] == "${ai_label}" and "judge" not in ev
    assert ev["prompts"] == "${assets}/prompts/heldout_eval_prompts.jsonl" and ev["group_field"] == "kind"
    kinds = {json.loads(line)["kind"] for line in (ASSETS / "prompts" / "heldout_eval_prompts.jsonl").open()}
    assert kinds == {"everyday", "red-team"}
    r = demo_recipe("cai", hh_rlhf=str(ASSETS / "preferences" / "demo_pairs.jsonl"))  # --hh-rlhf: the gold's people
    assert next(s for s in r.stages if s.name == "gold_pairs").settings["limit"] == 800


def test_ppo_stage_in_two_processes(tiny, tmp_path):
    run = tmp_path / "run"
    recipe = {"run_dir": str(run), "policy": str(tiny / "lm"), "stages": [
        {"stage": "ppo", "model": "${policy}", "prompts": str(tiny / "prompts.jsonl"),
         "reward_fn": f"{tiny / 'scorers.py'}:length_noting_rank", "steps": 2, "batch_size": 2,
         "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 4, "save_every": 1, "lora_r": 4}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ranks = tmp_path / "ranks.txt"
    # `accelerate launch --multi_gpu` starts the processes through torchrun; with no GPU, make_accelerator puts
    # them in one gloo group (MULTI_CPU). (`--cpu --num_processes 2` starts ONE process unless MPI is set up.)
    env = {**os.environ, "RLHAIF_TEST_RANKS": str(ranks), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", "29517", "-m", "rlhaif.cli", "run", str(path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(ranks.read_text().split()) == ["0", "0", "1", "1"]  # both processes scored both steps
    man = json.loads((run / "ppo" / "manifest.json").read_text())  # written once, by the main process
    assert man["outputs"]["rank"] == 0 and man["outputs"]["steps"] == 2
    assert man["outputs"]["resumed_from"] == 0  # one process group: neither resumed from the other's checkpoint
    assert [json.loads(l)["step"] for l in (run / "ppo" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig

    root = Path(__file__).parent.parent / "recipes" / "accelerate"
    kinds = {f.stem: ClusterConfig.from_yaml_file(str(f)).distributed_type.value for f in root.glob("*.yaml")}
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero3": "DEEPSPEED", "multi-cpu": "MULTI_CPU"}


def test_demo_recipe_and_bundled_assets(hh_path, tmp_path):
    from rlhaif.data.formats import read_pairs
    from rlhaif.data.io import read_records
    from rlhaif.data.records import DemoRecord
    from rlhaif.generate import read_prompts
    from rlhaif.pipeline import ASSETS, demo_recipe

    r = demo_recipe("rlhf", run_dir=str(tmp_path / "demo"))
    assert r.run_dir == str(tmp_path / "demo") and r.policy == "smollm2-135m-instruct"
    gold = next(s for s in r.stages if s.name == "gold_pairs")
    assert gold.settings["inputs"] == ["${assets}/preferences/demo_pairs.jsonl"]
    # --hh-rlhf: the rlhf-hh recipe, a harmlessness gold from the file beside the bundled gold, both optimised
    r = demo_recipe("rlhf", run_dir=str(tmp_path / "demo"), hh_rlhf=hh_path)
    stages = {s.name: s for s in r.stages}
    assert stages["hh_pairs"].settings["inputs"] == [hh_path] and stages["hh_pairs"].settings["skip_invalid"]
    assert stages["gold_pairs"].settings["inputs"] == ["${assets}/preferences/demo_pairs.jsonl"]
    assert stages["panel_harmless"].settings["scorer"] == "reward_model:${hh_gold}"
    assert stages["panel_helpful"].settings["scorer"] == "reward_model:${gold_rm}"
    rl = stages["rl"].settings
    assert rl["combine"] == "gated" and rl["objectives"] == {"helpful": "${proxy_helpful}",
                                                             "harmless": "${proxy_harmless}"}
    assert stages["evaluate"].settings["gold_scorers"] == {"harmless": "${hh_gold}", "helpful_harmless": "${gold_rm}"}
    with pytest.raises(RlhaifError, match="file not found"):
        demo_recipe("rlhf", hh_rlhf=str(tmp_path / "missing.jsonl"))
    with pytest.raises(RlhaifError, match="--human with --hh-rlhf"):
        demo_recipe("rlhf", hh_rlhf=hh_path, human=True)
    # --human: the annotation app takes the simulated panel's place (same name, so later stages still resolve)
    r = demo_recipe("rlhf", run_dir=str(tmp_path / "demo"), human=True)
    human = next(s for s in r.stages if s.name == "simulate")
    assert human.stage == "human" and human.settings["completions"] == "${generate.completions}"
    assert len(check_recipe(r)) == 8 and len(check_recipe(demo_recipe("cai"))) == 10
    assert demo_recipe("rlhf").run_dir == "runs/demo" and demo_recipe("cai").run_dir == "runs/demo-cai"
    # the bundled data parse, and held-out prompts are not training prompts
    pairs = read_pairs(ASSETS / "preferences" / "demo_pairs.jsonl")
    demos = read_records(ASSETS / "demos" / "demo_sft.jsonl", DemoRecord)
    train = {p.prompt for p in read_prompts(ASSETS / "prompts" / "demo_prompts.jsonl")}
    held = {p.prompt for p in read_prompts(ASSETS / "prompts" / "heldout_prompts.jsonl")}
    assert len(pairs) >= 50 and len(demos) == len(pairs) and len(held) >= 16
    assert not held & train and not held & {p.prompt for p in pairs}


def test_demo_check_from_the_command_line(tmp_path, capsys):
    from rlhaif.cli import main

    main(["demo", "--check", "--human", "--run-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "simulate: human (HumanFeedbackConfig) [every round]" in out and "demo (rlhf, human feedback): ok" in out
    main(["demo", "--check", "--cai"])
    out = capsys.readouterr().out
    assert "revise: revise" in out and "ai_label: ai_label" in out
    assert "demo (cai): ok, 10 stages into runs/demo-cai" in out  # its own folder, not the rlhf demo's
    with pytest.raises(SystemExit) as e:  # --human has no panel to replace in the cai demo: one clear error
        main(["demo", "--check", "--cai", "--human"])
    assert e.value.code == 2 and "replaces the simulated panel" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # --check runs nothing


def test_human_stage_serves_app_and_exports_labels(tmp_path):
    import socket
    import threading
    import time
    import urllib.request

    from rlhaif.feedback.human.schemas import JudgmentIn
    from rlhaif.feedback.human.store import Store
    from rlhaif.feedback.human.collect import HumanFeedbackConfig, run_human_feedback

    rows = [{"prompt_id": f"p{i}", "prompt": f"question {i}", "response": f"answer {i} {j}", "model": "m", "index": j}
            for i in range(2) for j in range(2)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = HumanFeedbackConfig(completions=str(tmp_path / "c.jsonl"), output_dir=str(tmp_path / "h"), port=port,
                              cost_per_hour=60.0)
    result = {}
    t = threading.Thread(target=lambda: result.update(done=run_human_feedback(cfg)), daemon=True)
    t.start()
    token_file = tmp_path / "h" / "annotator_token.txt"
    for _ in range(300):
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).read().decode()
            break
        except OSError:
            time.sleep(0.1)
    assert "token" in page.lower() and token_file.exists()
    store = Store(str(tmp_path / "h" / "feedback.db"))
    me = store.annotator_by_token(token_file.read_text().strip())
    for n in range(2):  # rank the two responses of each prompt, as the web form would
        a = store.next_assignment(me.id)
        store.submit(me.id, JudgmentIn(client_id=f"client-{n:04d}", assignment_id=a, value={"ranks": [1, 2]}))
    t.join(timeout=30)
    assert not t.is_alive() and result["done"].labelled == result["done"].tasks == 2
    pairs = [json.loads(l) for l in (tmp_path / "h" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 2 and all(p["chosen"] != p["rejected"] for p in pairs)
    costs = json.loads((tmp_path / "h" / "manifest.json").read_text())["outputs"]["costs"]["all"]
    assert costs["judgments"] == 2 and costs["usable"] == 2 and costs["median_seconds"] is None  # no durations
    assert "cost" not in costs  # a rate per hour needs durations to price


TOY = '''
from pathlib import Path
from rlhaif.config import StageConfig

class ToyConfig(StageConfig):
    output_dir: str
    value: int = 0

def run_toy(cfg: ToyConfig) -> dict:
    Path(cfg.output_dir, "out.txt").write_text(str(cfg.value))
    return {"value": cfg.value, "nested": {"double": 2 * cfg.value}}
'''


def test_custom_stage_references_and_foreign_folder_kept(tmp_path, monkeypatch):
    (tmp_path / "toystage.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    outside = tmp_path / "elsewhere"

    def recipe(v):
        return recipe_from_dict({"run_dir": str(tmp_path / "run"), "rounds": 2, "stages": [
            {"stage": "toystage:run_toy", "name": "a", "value": v, "output_dir": str(outside)},
            {"stage": "toystage:run_toy", "name": "b", "repeat": True, "value": "${a.nested.double}"},
            {"stage": "toystage:run_toy", "name": "c", "value": "${round}"}]}, "toy.yaml")

    summary = run_recipe(recipe(3), log=lambda m: None)
    assert [(s["name"], s["round"], s["outputs"]["value"]) for s in summary["stages"]] == \
        [("a", None, 3), ("b", 1, 6), ("b", 2, 6), ("c", None, 2)]  # whole-string references keep their type
    assert (tmp_path / "run" / "round2" / "b" / "out.txt").read_text() == "6"
    # a changed config whose folder lies outside run_dir is an error, and that folder is left as it was
    with pytest.raises(RlhaifError, match="outside run_dir"):
        run_recipe(recipe(4), log=lambda m: None)
    assert (outside / "out.txt").read_text() == "3" and (outside / "manifest.json").exists()


class FakeEngine:
    """Stands in for rlhaif.engines.vllm_engine.VLLMEngine where vLLM is absent (the real engine's run of
    this stage is tests/test_vllm_wiring.py, in the vLLM venv): records what the stage hands the engine."""

    calls: dict = {}

    @classmethod
    def from_model(cls, model, tokenizer, folder=None, **kw):
        cls.calls.update(kw=kw, closed=False)
        return cls()

    def sample(self, prompt_ids, k, sampling, eos, seed=0):
        from rlhaif.engines.vllm_engine import EngineSample

        self.calls.update(prompts=[list(p) for p in prompt_ids], k=k, sampling=sampling, seed=seed)
        return [[EngineSample([5] * (i % 2 + 1) + ([eos[0]] if i % 2 == 0 else []), [-1.0] * 3, i % 2 == 0)]
                for i in range(len(prompt_ids))]

    def close(self):
        self.calls["closed"] = True


def test_generate_stage_vllm_and_hf_write_the_same_format(tiny, tmp_path, monkeypatch):
    """Without vLLM, backend 'vllm' is an error saying how to get it and 'auto' is HF; with an engine (a
    stand-in here) the stage hands it the chat-templated prompt ids, K times each, with the sampling settings
    and the seed, and writes HF's record format from its samples."""
    from rlhaif.engines import vllm_engine
    from rlhaif.generate import read_prompts
    from rlhaif.tokens import encode_prompts
    from rlhaif.models.loading import load_tokenizer
    from rlhaif.generate import GenerateConfig, run_generate

    if vllm_engine.vllm_available():
        pytest.skip("vLLM is installed here: tests/test_vllm_wiring.py runs the real engine")
    base = dict(model=str(tiny / "lm"), prompts=str(tiny / "prompts.jsonl"), k=2, max_new_tokens=4, max_prompts=3,
                temperature=0.8)
    hf = run_generate(GenerateConfig(output_dir=str(tmp_path / "hf"), **base))  # auto, vLLM absent: HF
    assert hf.backend is None
    with pytest.raises(RlhaifError, match=r"setup_vllm_venv.sh"):
        run_generate(GenerateConfig(output_dir=str(tmp_path / "x"), backend="vllm", **base))
    monkeypatch.setattr(vllm_engine, "vllm_available", lambda: True)
    monkeypatch.setattr(vllm_engine, "VLLMEngine", FakeEngine)
    if not torch.cuda.is_available():  # 'auto' on a CPU machine stays HF even where vLLM is installed
        assert run_generate(GenerateConfig(output_dir=str(tmp_path / "auto"), **base)).backend is None

    res = run_generate(GenerateConfig(output_dir=str(tmp_path / "v"), backend="vllm", seed=3, **base))
    calls = FakeEngine.calls
    assert res.backend == "vllm" and res.responses == 6 and calls["closed"] and calls["seed"] == 3
    assert calls["k"] == 1 and calls["sampling"].temperature == 0.8 and calls["sampling"].max_new_tokens == 4
    tok = load_tokenizer(str(tiny / "lm"))
    want = encode_prompts(tok, [r.prompt for r in read_prompts(tiny / "prompts.jsonl")[:3]])
    assert calls["prompts"] == [p for p in want for _ in range(2)]  # K copies of each prompt, next to each other
    assert calls["kw"]["max_model_len"] == max(map(len, want)) + 4
    rows = {name: [json.loads(l) for l in (tmp_path / name / "completions.jsonl").read_text().splitlines()]
            for name in ("hf", "v")}
    assert [set(r) for r in rows["v"]] == [set(r) for r in rows["hf"]]  # the same fields ...
    key = [(r["prompt_id"], r["prompt"], r["index"], r["model"]) for r in rows["hf"]]
    assert [(r["prompt_id"], r["prompt"], r["index"], r["model"]) for r in rows["v"]] == key  # ... in the same order
    assert [r["finished"] for r in rows["v"][:2]] == [True, False]
    assert rows["v"][0]["response"] == tok.decode([5], skip_special_tokens=True).strip()


TOY_OWN_MANIFEST = '''
from pathlib import Path
from rlhaif.config import StageConfig
from rlhaif.manifest import write_stage_manifest

class OwnConfig(StageConfig):
    output_dir: str
    value: int = 0

def run_own(cfg: OwnConfig) -> dict:
    Path(cfg.output_dir, "out.txt").write_text(str(cfg.value))
    write_stage_manifest("toyown:run_own", cfg, {"value": cfg.value, "written_by": "the stage"})
    return {"value": cfg.value}
'''


def test_only_needs_the_stages_before_it_and_the_stage_manifest_is_kept(tmp_path, monkeypatch):
    """`--only b` on a run whose later stage c never ran: b runs, c is not asked for (it used to stop with
    "stage 'c' has not finished"). A stage's own manifest is not overwritten by the runner."""
    (tmp_path / "toystage.py").write_text(TOY)
    (tmp_path / "toyown.py").write_text(TOY_OWN_MANIFEST)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = recipe_from_dict({"run_dir": str(tmp_path / "run"), "stages": [
        {"stage": "toystage:run_toy", "name": "a", "value": 2},
        {"stage": "toyown:run_own", "name": "b", "value": "${a.nested.double}"},
        {"stage": "toystage:run_toy", "name": "c", "value": "${b.value}"}]}, "toy.yaml")
    with pytest.raises(RlhaifError, match="stage 'a' has not finished"):  # what b needs must have run
        run_recipe(recipe, only=["b"], log=lambda m: None)
    run_recipe(recipe, only=["a"], log=lambda m: None)
    summary = run_recipe(recipe, only=["b"], log=lambda m: None)
    assert [(s["name"], s["status"], s["outputs"]["value"]) for s in summary["stages"]] == [("b", "ran", 4)]
    assert not (tmp_path / "run" / "c").exists()
    man = json.loads((tmp_path / "run" / "b" / "manifest.json").read_text())
    assert man["outputs"] == {"value": 4, "written_by": "the stage"} and man["wall_time_s"] >= 0
    with pytest.raises(ConfigError, match="--only names no stage called x"):
        run_recipe(recipe, only=["x"], log=lambda m: None)


def test_report_paths_inside_the_run_are_relative(tmp_path):
    from rlhaif.evaluate.run import relative_paths_in_report

    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    for d in (run / "sft" / "model", run / "evaluate", outside):
        d.mkdir(parents=True)
    (run / "ppo.jsonl").write_text("")
    (outside / "scorers.py").write_text("")
    report = {"config": {"models": {"base": "smollm2-135m-instruct", "sft": str(run / "sft" / "model")},
                         "gold_scorer": f"{outside / 'scorers.py'}:length",
                         "proxy_scorer": f"reward_model:{run / 'sft'}",
                         "training_metrics": {"ppo": str(run / "ppo.jsonl")}, "output_dir": str(run / "evaluate")},
              "training": {"ppo": {"path": str(run / "ppo.jsonl"), "steps": 2}},
              "models": {"sft": {"path": str(run / "sft" / "model"), "length": 3.0}},
              "samples": [{"response": str(run / "sft")}]}  # free text is left alone
    path = run / "evaluate" / "report.json"
    path.write_text(json.dumps(report))
    relative_paths_in_report(path)
    got = json.loads(path.read_text())
    assert got["paths_relative_to"] == ".."
    assert got["config"] == {"models": {"base": "smollm2-135m-instruct", "sft": "sft/model"},
                             "gold_scorer": f"{outside / 'scorers.py'}:length", "proxy_scorer": "reward_model:sft",
                             "training_metrics": {"ppo": "ppo.jsonl"}, "output_dir": "evaluate"}
    assert got["training"]["ppo"] == {"path": "ppo.jsonl", "steps": 2} and got["samples"] == report["samples"]
    assert got["models"]["sft"] == {"path": "sft/model", "length": 3.0}


def test_a_typed_stage_result_becomes_the_outputs_a_recipe_reads():
    from rlhaif.manifest import stage_outputs
    from rlhaif.policy.ppo import PPOResult

    res = PPOResult(output_dir="runs/ppo", model="runs/ppo/model", metrics={"objective/score": 0.5}, steps=3,
                    resumed_from=0, precision={"dtype": "float32"}, rank=0, param_checksum=1.25)
    out = stage_outputs(res)
    assert out == {"output_dir": "runs/ppo", "model": "runs/ppo/model", "metrics": {"objective/score": 0.5},
                   "steps": 3, "resumed_from": 0, "precision": {"dtype": "float32"}, "rank": 0, "param_checksum": 1.25}
    assert stage_outputs({"pairs": "p.jsonl"}) == {"pairs": "p.jsonl"} and stage_outputs(None) == {}


@pytest.mark.parametrize("stage", ["sft", "generate", "simulate", "ai_label", "revise", "pairs", "select", "human",
                                   "reward", "dpo", "evaluate", "ppo", "rlhaif.best_of_n:run_best_of_n",
                                   "rlhaif.best_of_n:run_scored_pairs", "rlhaif.reward.evaluate:run_reward_eval",
                                   "rlhaif.reward.evaluate:run_reward_score"])
def test_every_stage_returns_a_frozen_result_record(stage):
    """Results are typed records, not dicts read by key far away (the `rlhaif sft` final_loss crash);
    the manifest keeps their fields."""
    import dataclasses
    import typing

    from rlhaif.manifest import stage_outputs
    from rlhaif.pipeline import stage_function

    record = typing.get_type_hints(stage_function(stage)[0])["return"]
    assert dataclasses.is_dataclass(record) and record.__dataclass_params__.frozen
    fields = [f.name for f in dataclasses.fields(record)]
    example = record(**{name: f"{name}-value" for name in fields})
    assert stage_outputs(example) == {name: f"{name}-value" for name in fields}


SEEDED = '''
from pathlib import Path
from rlhaif.config import StageConfig

class SeededConfig(StageConfig):
    output_dir: str
    seed: int = 0

def run_seeded(cfg: SeededConfig) -> dict:
    return {"seed": cfg.seed}
'''


def test_a_recipe_seed_reaches_every_stage_that_sets_none(tmp_path, monkeypatch):
    """`rlhaif run/demo --seed N`: the recipe's seed is every stage's seed unless the stage sets its own."""
    (tmp_path / "seeded.py").write_text(SEEDED)
    monkeypatch.syspath_prepend(str(tmp_path))

    def run(**top):
        r = recipe_from_dict({"run_dir": str(tmp_path / f"run{top.get('seed')}"), **top, "stages": [
            {"stage": "seeded:run_seeded", "name": "a"}, {"stage": "seeded:run_seeded", "name": "b", "seed": 7}]})
        return [s["outputs"]["seed"] for s in run_recipe(r, log=lambda m: None)["stages"]]

    assert run() == [0, 7]
    assert run(seed=3) == [3, 7]
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        recipe_from_dict({"run_dir": "x", "seed": -1, "stages": [{"stage": "seeded:run_seeded"}]})


def test_demo_seed_runs_into_its_own_folder(capsys):
    from rlhaif.cli import main

    main(["demo", "--seed", "2", "--check"])
    assert "stages into runs/demo-seed2" in capsys.readouterr().out
    main(["demo", "--check"])
    assert "stages into runs/demo\n" in capsys.readouterr().out
