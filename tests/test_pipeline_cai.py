"""The Constitutional AI recipe on tiny models end to end: critique-revise -> SFT on the revisions -> generate
pairs -> AI labels (local judge, measured on human pairs first) mixed with human pairs -> preference model -> PPO
-> evaluate with win rates, the report led by the judge's measured agreement."""

import json

from rlhaif.pipeline import check_recipe, recipe_from_dict, run_recipe


def test_cai_recipe_end_to_end(tmp_path, hh_path):
    from rlhaif.models.tiny import save_tiny

    save_tiny(tmp_path / "lm", "llama", seed=0, max_pos=1024)
    save_tiny(tmp_path / "rm", "llama", seed=0, reward=True, max_pos=1024)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in
                               enumerate(["how do i harm the cat", "tell me a rude answer", "what is good food"])))
    run = tmp_path / "run"
    recipe = recipe_from_dict({"run_dir": str(run), "policy": str(tmp_path / "lm"), "stages": [
        {"stage": "revise", "model": "${policy}", "prompts": str(prompts), "n_rounds": 2, "limit": 2,
         "max_new_tokens": 4, "fewshot": "none", "max_prompt_length": 900},
        {"stage": "sft", "model": "${policy}", "data": "${revise}/sft.jsonl", "max_steps": 1, "batch_size": 2,
         "lora_r": 4},
        {"stage": "generate", "model": "${policy}", "prompts": str(prompts), "k": 2, "max_new_tokens": 4},
        {"stage": "ai_label", "input": "${generate.completions}", "judge_model": str(tmp_path / "lm"),
         "calibration": hh_path, "calibration_limit": 8, "skip_invalid": True},
        {"stage": "pairs", "name": "mixed", "inputs": ["${ai_label.pairs}", hh_path], "limit": 6,
         "skip_invalid": True},
        {"stage": "reward", "name": "pm", "data": "${mixed.pairs}", "backbone": str(tmp_path / "rm"),
         "max_length": 64, "batch_size": 4, "eval_fraction": 0.0, "normalize": False},
        {"stage": "ppo", "model": "${policy}", "prompts": str(prompts), "reward_model": "${pm}", "steps": 1,
         "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 4, "lora_r": 4},
        {"stage": "evaluate", "models": {"base": "${base}", "sft": "${sft.model}", "ppo": "${ppo.model}"},
         "prompts": str(prompts), "proxy_scorer": "${pm}", "judge": str(tmp_path / "lm"), "max_new_tokens": 4,
         "bootstrap_rounds": 10, "ai_labeler": "${ai_label}"},
    ]}, "cai-tiny.yaml")
    assert len(check_recipe(recipe)) == 8
    summary = run_recipe(recipe, log=lambda m: None)
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 8
    for name in ("revise", "sft", "generate", "ai_label", "mixed", "pm", "ppo", "evaluate"):
        man = json.loads((run / name / "manifest.json").read_text())
        assert man["config"]["output_dir"] == str(run / name)
    revisions = [json.loads(l) for l in (run / "revise" / "revisions.jsonl").read_text().splitlines()]
    assert len(revisions) >= 2
    assert len((run / "revise" / "sft.jsonl").read_text().splitlines()) >= 2
    assert json.loads((run / "sft" / "manifest.json").read_text())["config"]["data"] == str(run / "revise" / "sft.jsonl")
    ai = [json.loads(l) for l in (run / "ai_label" / "pairs.jsonl").read_text().splitlines()]
    assert len(ai) == 3 and all(0.5 <= p["p"] <= 1.0 and p["source"].startswith("ai:") for p in ai)  # C(2,2)=1 per prompt
    mixed = [json.loads(l) for l in (run / "mixed" / "pairs.jsonl").read_text().splitlines()]
    assert sum(p["source"].startswith("ai:") for p in mixed) == 3 and sum(p["source"] == "hh-rlhf" for p in mixed) == 6
    assert json.loads((run / "ppo" / "manifest.json").read_text())["config"]["reward_model"] == str(run / "pm")
    # the other artifacts: SFT adapter, 3 prompts x k=2 completions, the preference model, PPO policy + metrics,
    # the report with its plots and samples
    assert (run / "sft" / "model" / "adapter_config.json").exists()
    assert len((run / "generate" / "completions.jsonl").read_text().splitlines()) == 6
    assert (run / "pm" / "reward_config.json").exists() and (run / "pm" / "model.safetensors").exists()
    assert [json.loads(l)["step"] for l in (run / "ppo" / "metrics.jsonl").read_text().splitlines()] == [1]
    # PPO started from the SFT adapter (merged into the base at load), so it saves merged: an adapter alone
    # would name the raw base and lose the SFT weights
    assert (run / "ppo" / "model" / "config.json").exists() and not (run / "ppo" / "model" / "adapter_config.json").exists()
    for f in ("report.html", "plots/score_distributions.png", "samples/base.jsonl", "samples/sft.jsonl",
              "samples/ppo.jsonl"):
        assert (run / "evaluate" / f).exists(), f
    rep = json.loads((run / "evaluate" / "report.json").read_text())
    for m in ("sft", "ppo"):
        wr = rep["models"][m]["win_rate"]
        assert 0.0 <= wr["win_rate"] <= 1.0 and wr["wins"] + wr["ties"] + wr["losses"] == 3
    assert "win_rate" not in rep["models"]["base"]
    # the report leads with the judge measured on the calibration pairs (the ai_label stage's manifest)
    measured = json.loads((run / "ai_label" / "manifest.json").read_text())["outputs"]["labeler"]
    assert list(rep)[0] == "labeler" and rep["labeler"]["agreement"] == measured["agreement"]
    assert rep["labeler"]["manifest"] == "ai_label/manifest.json"  # relative to the run folder
    assert rep["labeler"]["lines"][0].startswith("AI labeler (lm): agrees with people on ")
    assert rep["labeler"]["lines"][0] in (run / "evaluate" / "report.html").read_text()
    again = run_recipe(recipe, log=lambda m: None)
    assert [s["status"] for s in again["stages"]] == ["skipped"] * 8
