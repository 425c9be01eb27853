"""Evaluation by objective: every gold scorer's paired gain per prompt group (a prompt field or several
prompt files), with length and refusal rate per group; pinned by hand and end to end on tiny models."""

import json

import pytest
from test_evaluate import tiny_setup  # noqa: F401  (a fixture)

from rlhaif.errors import DataError
from rlhaif.evaluate import metrics as M


def test_objective_table_by_hand():
    # 4 prompts × 1 sample: groups a, a, b, b
    per_model = {"sft": {"help": [1.0, 2.0, 0.0, 0.0], "length": [10.0, 10.0, 4.0, 4.0]},
                 "rl": {"help": [2.0, 4.0, -1.0, 0.0], "length": [12.0, 14.0, 4.0, 2.0]}}
    texts = {"sft": ["ok", "ok", "I cannot help with that.", "ok"], "rl": ["ok", "ok", "ok", "ok"]}
    rows = M.objective_table(per_model, texts, ["a", "a", "b", "b"], ["help"], "sft", 1, rounds=50)
    got = {r["group"]: r for r in rows}
    assert list(got) == ["a", "b", "all"] and all(r["model"] == "rl" and r["objective"] == "help" for r in rows)
    assert got["a"]["mean"] == pytest.approx(1.5)       # (1 + 2) / 2
    assert got["b"]["mean"] == pytest.approx(-0.5)      # (−1 + 0) / 2
    assert got["all"]["mean"] == pytest.approx(0.5)     # (1 + 2 − 1 + 0) / 4
    assert got["a"]["length_gain"] == pytest.approx(3.0) and got["b"]["length_gain"] == pytest.approx(-1.0)
    assert got["b"]["refusal_rate_against"] == 0.5 and got["b"]["refusal_rate"] == 0.0
    assert got["a"]["refusal_rate_against"] == 0.0 and got["all"]["refusal_rate_against"] == 0.25
    assert got["a"]["prompts"] == 2 and got["all"]["prompts"] == 4
    plain = M.objective_table(per_model, texts, None, ["help"], "sft", 1, rounds=50)
    assert [r["group"] for r in plain] == ["all"] and plain[0]["mean"] == pytest.approx(0.5)


def write_kinds(d, name, kinds):
    path = d / name
    path.write_text("".join(json.dumps({"id": f"{name}{i}", "prompt": f"tell me about the cat {i}", "kind": k}) + "\n"
                            for i, k in enumerate(kinds)))
    return str(path)


def test_evaluate_by_objective_and_prompt_field(tiny_setup):  # noqa: F811
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    d = tiny_setup
    prompts = write_kinds(d, "kinds.jsonl", ["everyday", "red-team", "everyday", "red-team", "everyday"])
    cfg = EvaluateConfig(models={"base": str(d / "base"), "tuned": str(d / "tuned")}, prompts=prompts,
                         output_dir=str(d / "by_kind"), group_field="kind", k=2,
                         gold_scorers={"helpful": f"{d / 'scorers.py'}:length",
                                       "good": f"{d / 'scorers.py'}:good_words"},
                         max_new_tokens=8, batch_size=4, bootstrap_rounds=10,
                         training_metrics={"ppo": str(d / "ppo" / "metrics.jsonl")})
    res = run_evaluate(cfg)
    rep = json.loads((d / "by_kind" / "report.json").read_text())
    assert list(rep)[0] == "objectives" and res.objectives == rep["objectives"]
    keys = [(r["model"], r["objective"], r["group"]) for r in rep["objectives"]]
    assert keys == [("tuned", o, g) for o in ("helpful", "good") for g in ("everyday", "red-team", "all")]
    # recompute the helpful gain on the red-team prompts from the written samples (per-prompt means of 2)
    s = {n: [json.loads(l) for l in (d / "by_kind" / "samples" / f"{n}.jsonl").read_text().splitlines()]
         for n in ("base", "tuned")}
    red = [i for i, r in enumerate(s["base"]) if r["prompt_id"] in ("kinds.jsonl1", "kinds.jsonl3")]
    pick = lambda n, key: M.per_prompt_means([s[n][i][key] for i in red], 2)  # noqa: E731
    want = sum(a - b for a, b in zip(pick("tuned", "helpful"), pick("base", "helpful"))) / 2
    row = rep["objectives"][1]
    assert row["group"] == "red-team" and row["mean"] == pytest.approx(want) and row["prompts"] == 2
    assert row["length_gain"] == pytest.approx(sum(s["tuned"][i]["tokens"] - s["base"][i]["tokens"] for i in red) / 4)
    html = (d / "by_kind" / "report.html").read_text()
    assert html.index("Gains by objective and prompt group") < html.index("Paired gains") < html.index("<h2>Models</h2>")
    # with gold_scorers and no gold_scorer: every objective in the paired gains, the headline and the leaderboard
    assert {(p["model"], p["kind"]) for p in rep["paired"]} == {("tuned", k) for k in ("helpful", "good", "length")}
    assert rep["headline"][0].startswith("tuned over base: ") and " helpful" in rep["headline"][0] \
        and " good" in rep["headline"][0]
    assert rep["leaderboard_scorer"] == "helpful"


def test_evaluate_by_several_prompt_files(tiny_setup):  # noqa: F811
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    d = tiny_setup
    cfg = EvaluateConfig(models={"base": str(d / "base"), "tuned": str(d / "tuned")},
                         prompt_groups={"everyday": write_kinds(d, "a.jsonl", ["x", "x"]),
                                        "red-team": write_kinds(d, "b.jsonl", ["y"])},
                         output_dir=str(d / "by_file"), gold_scorer=f"{d / 'scorers.py'}:length",
                         max_new_tokens=8, batch_size=4, bootstrap_rounds=10)
    rep = json.loads((d / "by_file" / "report.json").read_text()) if run_evaluate(cfg) else None
    assert [(r["objective"], r["group"], r["prompts"]) for r in rep["objectives"]] == [
        ("gold", "everyday", 2), ("gold", "red-team", 1), ("gold", "all", 3)]


def test_a_prompt_without_the_group_field_names_file_and_line(tiny_setup, tmp_path):  # noqa: F811
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    d = tiny_setup
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "kind": "everyday"}\n{"prompt": "b"}\n')
    cfg = EvaluateConfig(models={"base": str(d / "base")}, prompts=str(path), group_field="kind",
                         output_dir=str(tmp_path / "o"))
    with pytest.raises(DataError, match=r"p.jsonl:2: field 'kind'"):
        run_evaluate(cfg)


def test_training_curves_draw_each_objective_against_kl(tmp_path):
    from rlhaif.evaluate.report import objective_keys, training_curves

    rows = [{"step": i, "objective/score": 0.1 * i, "objective/kl": 0.5 * i, "objective/beta": 0.05,
             "objective/helpful": 0.2 * i, "objective/harmless": -0.1 * i, "objective/lambda": 1.0}
            for i in range(1, 5)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert objective_keys(rows) == ["objective/helpful", "objective/harmless"]
    png, summary = training_curves({"rl": str(tmp_path / "m.jsonl")})
    assert png[:4] == b"\x89PNG"
    assert summary["rl"]["objective/helpful_last"] == pytest.approx(0.8)
    assert summary["rl"]["objective/harmless_first"] == pytest.approx(-0.1)
