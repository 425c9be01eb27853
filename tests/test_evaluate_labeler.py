"""The evaluation report leads with the AI labeler's measured agreement with people (an ai_label stage's
manifest, as the CAI recipe gives it): at chance it says so in plain words, above chance it says that, unmeasured
it says that nothing shows the labels agree with people. A gain is claimed only where its gold interval says so;
the reference's gain is shown over the baseline, not the baseline's loss against the reference."""

import json

import pytest
from test_ai_calibration import CoinJudge, CopyingJudge, stage_config
from test_evaluate import tiny_setup  # noqa: F401  (a fixture)

from rlhaif.errors import ConfigError
from rlhaif.evaluate import metrics as M
from rlhaif.evaluate.report import AT_CHANCE, headline_lines, labeler_lines
from rlhaif.evaluate.run import labeler_block
from rlhaif.feedback.ai.judge import run_ai_label


def test_comparisons_show_the_reference_over_the_baseline():
    assert M.comparisons(["base", "sft", "rl"], ["sft", "base"]) == [("rl", "sft"), ("sft", "base"), ("rl", "base")]
    assert M.comparisons(["base", "rl"], ["base", "base"]) == [("rl", "base")]
    per_model = {"base": {"g": [0.0, 0.0]}, "sft": {"g": [1.0, 1.0]}, "rl": {"g": [3.0, 1.0]}}
    texts = {n: ["ok", "ok"] for n in per_model}
    rows = M.objective_table(per_model, texts, ["a", "b"], ["g"], ["sft", "base"], 1, rounds=20)
    got = {(r["model"], r["against"], r["group"]): r["mean"] for r in rows}
    assert list(got) == [(m, a, g) for m, a in (("rl", "sft"), ("sft", "base"), ("rl", "base"))
                         for g in ("a", "b", "all")]
    assert got[("rl", "sft", "a")] == 2.0 and got[("rl", "sft", "b")] == 0.0 and got[("rl", "base", "all")] == 2.0


def test_the_headline_claims_a_gain_only_when_the_gold_interval_is_above_zero():
    def row(model, kind, low, high):
        return {"model": model, "against": "sl-cai", "kind": kind, "mean": (low + high) / 2, "low": low,
                "high": high, "se": 0.1, "mde": 0.28, "prompts": 120, "samples_per_prompt": 2}

    results = {"sl-cai": {"kl": {"mean": 0.0}}, "rl-cai": {"kl": {"mean": 1.5}}}
    crossing = headline_lines([row("rl-cai", "gold", -0.1, 0.3), row("rl-cai", "proxy", 0.2, 0.6)], results,
                              ["sl-cai"], ["sl-cai", "rl-cai"])
    assert crossing[0].startswith("rl-cai over sl-cai: ")
    assert crossing[0].endswith("by the gold scorer: no difference shown: the 95 % interval includes 0")
    assert "a gain" not in crossing[0]  # a proxy interval above 0 is not a claim
    above = headline_lines([row("rl-cai", "gold", 0.05, 0.3)], results, ["sl-cai"], ["sl-cai", "rl-cai"])
    assert above[0].endswith("by the gold scorer: a gain: the 95 % interval lies above 0")
    below = headline_lines([row("rl-cai", "gold", -0.4, -0.01)], results, ["sl-cai"], ["sl-cai", "rl-cai"])
    assert below[0].endswith("by the gold scorer: a loss: the 95 % interval lies below 0")


def test_labeler_block_from_an_ai_label_manifest(tmp_path):
    run_ai_label(stage_config(tmp_path), backend=CoinJudge())
    block = labeler_block(str(tmp_path / "out"))
    assert block["measured"] and block["at_chance"] and block["n"] == 120
    assert block["calibration"] == str(tmp_path / "calib.jsonl") and block["judge"] == "smollm2-135m-instruct"
    assert labeler_block(str(tmp_path / "out" / "manifest.json")) == block
    lines = labeler_lines(block)
    assert lines[0].startswith(f"AI labeler (smollm2-135m-instruct): agrees with people on {block['agreement']:.1%} "
                               f"[{block['low']:.1%}, {block['high']:.1%}] of 120 human-labelled pairs (calib.jsonl)")
    assert f"shown first in {block['first_slot_share']:.1%}" in lines[0]
    assert lines[1].startswith(AT_CHANCE)
    with pytest.raises(ConfigError, match="no manifest.json"):
        labeler_block(str(tmp_path / "nowhere"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"stage": "reward", "outputs": {}}))
    with pytest.raises(ConfigError, match="'reward' stage, not of an ai_label stage"):
        labeler_block(str(tmp_path / "other"))


def test_labeler_lines_above_chance_and_unmeasured(tmp_path):
    run_ai_label(stage_config(tmp_path), backend=CopyingJudge())
    good = labeler_lines(labeler_block(str(tmp_path / "out")))
    assert "100.0% [100.0%, 100.0%]" in good[0] and not any(t.startswith(AT_CHANCE) for t in good)
    assert good[1].startswith("The AI labels are better than chance")
    none = labeler_lines({"judge": "j", "measured": False})
    assert none == ["The AI labeler (j) was not measured against people (its ai_label stage had no calibration "
                    "set): nothing here shows that its labels agree with people."]


def test_report_leads_with_the_labeler_at_chance(tiny_setup, tmp_path):  # noqa: F811
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate
    from rlhaif.models.tiny import save_tiny

    run_ai_label(stage_config(tmp_path), backend=CoinJudge())  # a real ai_label manifest, a judge at chance
    d = tiny_setup
    save_tiny(d / "sl", "llama", seed=2)
    kinds = ["everyday", "red-team", "everyday", "red-team", "everyday"]
    prompts = tmp_path / "kinds.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"k{i}", "prompt": f"tell me about the cat {i}", "kind": k}) + "\n"
                               for i, k in enumerate(kinds)))
    cfg = EvaluateConfig(models={"base": str(d / "base"), "sl-cai": str(d / "sl"), "rl-cai": str(d / "tuned")},
                         prompts=str(prompts), group_field="kind", reference="sl-cai", k=2,
                         output_dir=str(tmp_path / "run" / "evaluate"), gold_scorer=f"{d / 'scorers.py'}:length",
                         proxy_scorer=f"{d / 'scorers.py'}:good_words", ai_labeler=str(tmp_path / "out"),
                         max_new_tokens=8, batch_size=4, bootstrap_rounds=10)
    res = run_evaluate(cfg)
    rep = json.loads((tmp_path / "run" / "evaluate" / "report.json").read_text())
    assert list(rep)[:2] == ["labeler", "objectives"] and rep["labeler"]["at_chance"] is True
    assert res.labeler["agreement"] == rep["labeler"]["agreement"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {k: rep["labeler"][k] for k in manifest["outputs"]["labeler"]} == manifest["outputs"]["labeler"]
    at_chance = rep["labeler"]["lines"][1]
    assert at_chance.startswith(AT_CHANCE)
    html = (tmp_path / "run" / "evaluate" / "report.html").read_text()
    assert AT_CHANCE in html
    assert html.index("The AI labeler, measured against people") < html.index(AT_CHANCE) \
        < html.index("Gains by objective and prompt group") < html.index("Paired gains") < html.index("<h2>Models</h2>")
    # RL-CAI against SL-CAI first, then each over base, per kind; every row says what its interval shows
    pairs = list(dict.fromkeys((r["model"], r["against"]) for r in rep["objectives"]))
    assert pairs == [("rl-cai", "sl-cai"), ("sl-cai", "base"), ("rl-cai", "base")]
    assert {r["group"] for r in rep["objectives"]} == {"everyday", "red-team", "all"}
    assert rep["headline"][0].startswith("rl-cai over sl-cai: ") and "by the gold scorer: " in rep["headline"][0]
    assert html.count("the 95 % interval") >= len(rep["objectives"])
    # without a calibration set the report says the labeler was not measured
    unmeasured = tmp_path / "unmeasured"
    unmeasured.mkdir()
    man = dict(manifest, outputs={k: v for k, v in manifest["outputs"].items() if k != "labeler"})
    (unmeasured / "manifest.json").write_text(json.dumps(man))
    cfg2 = cfg.model_copy(update={"ai_labeler": str(unmeasured), "output_dir": str(tmp_path / "run" / "ev2"),
                                  "models": {"base": str(d / "base"), "rl-cai": str(d / "tuned")},
                                  "reference": None})
    run_evaluate(cfg2)
    html = (tmp_path / "run" / "ev2" / "report.html").read_text()
    assert "was not measured against people" in html and AT_CHANCE not in html
