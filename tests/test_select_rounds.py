"""Active labelling in a recipe's rounds (the `select` stage and `${prev.<name>}`): round 1 buys at random
(seeded) for want of a reward model, round r's batch is chosen by round r-1's reward model, bought labels
accumulate, no label is seen before it is bought, a run is reproducible from its seed; bad input stops with
one message each."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from rlhaif.data.io import read_jsonl, read_records
from rlhaif.data.records import CompletionRecord, PairRecord
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.feedback.select import LabeledPool, committee, select
from rlhaif.pipeline import check_recipe, recipe_from_dict, run_recipe

WORDS = "cat dog sun moon water fire tree book river stone cloud bird".split()
SCORER = '''
def length(prompts, responses):
    return [float(len(r.split())) for r in responses]
'''


@pytest.fixture(scope="module")
def w(tmp_path_factory, torch_one_thread):
    """A tiny reward backbone and a hand-made pool of 24 labelled pairs (20 to buy from, 4 held out)."""
    from rlhaif.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("select_rounds")
    save_tiny(d / "rm", "llama", seed=0, reward=True)
    pairs = [PairRecord(prompt=f"tell me about the {WORDS[i % 12]}", id=f"q{i}",
                        chosen=f"the {WORDS[i % 12]} is {'very ' * (i % 3)}kind and good",
                        rejected=f"no {WORDS[(i + 5) % 12]}" + " bad" * (i % 2)) for i in range(24)]
    (d / "pool.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in pairs))
    (d / "scorer.py").write_text(SCORER)
    return d


def rows(path) -> list[dict]:
    return [row for _, row in read_jsonl(path)]


def active_recipe(w: Path, run: Path, rounds: int = 2, **select_settings) -> dict:
    return {"run_dir": str(run), "rounds": rounds, "stages": [
        {"stage": "select", "repeat": True, "pool": str(w / "pool.jsonl"), "pool_lines": "1-20",
         "rule": "uncertainty", "budget": 4, "scorer": "${prev.rm}", "previous": "${prev.select}",
         **select_settings},
        {"stage": "reward", "name": "rm", "repeat": True, "data": "${select.pairs}", "eval_data": str(w / "pool.jsonl"),
         "eval_lines": "21-24", "backbone": str(w / "rm"), "max_length": 32, "batch_size": 4, "epochs": 1}]}


@pytest.fixture(scope="module")
def ran(w, tmp_path_factory):
    run = tmp_path_factory.mktemp("active") / "run"
    logs: list[str] = []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_recipe(recipe_from_dict(active_recipe(w, run), "active.yaml"), log=logs.append)
    return run, summary, logs + printed.getvalue().splitlines()


def test_round_one_buys_at_random_and_says_so(w, ran):
    run, summary, logs = ran
    assert [(s["name"], s["round"]) for s in summary["stages"]] == [("select", 1), ("rm", 1), ("select", 2), ("rm", 2)]
    assert "[prev] select round 1: scorer: ${prev.rm} is empty: there is no previous round" in logs
    assert "[prev] select round 1: previous: ${prev.select} is empty: there is no previous round" in logs
    assert ("select: no scorer yet (scorer is empty, as ${prev...} is in round 1): 4 of 20 comparisons chosen at "
            "random (seed 0), not by uncertainty") in logs
    assert f"select: batch 2: 4 comparisons by uncertainty of {run / 'round1' / 'rm'}; 12 left in the pool" in logs
    first = json.loads((run / "round1" / "select" / "manifest.json").read_text())
    assert first["config"]["scorer"] is None and first["config"]["previous"] is None
    assert first["outputs"]["rule"] == "random" and first["outputs"]["scorer"] == [] and first["outputs"]["batch"] == 1
    pool = LabeledPool(read_records(w / "pool.jsonl", PairRecord)[:20], seed=0)
    expected = [s.candidate.prompt_id for s in select("random", pool.unasked(), 4, seed=0)]
    assert [r["id"] for r in rows(run / "round1" / "select" / "selection.jsonl")] == expected
    assert all(r["rule"] == "random" and r["score"] is None for r in rows(run / "round1" / "select" / "selection.jsonl"))


def test_round_two_is_chosen_by_round_one_reward_model(w, ran):
    from rlhaif.scorers import load_scorer

    run, _, _ = ran
    rm1 = str(run / "round1" / "rm")
    second = json.loads((run / "round2" / "select" / "manifest.json").read_text())
    assert second["config"]["scorer"] == rm1 and second["config"]["previous"] == str(run / "round1" / "select")
    assert len(second["inputs"]["scorer"]) == 64  # round 1's reward model is an input: a change redoes round 2
    assert second["outputs"]["rule"] == "uncertainty" and second["outputs"]["scorer"] == [rm1]
    batch2 = [r for r in rows(run / "round2" / "select" / "selection.jsonl") if r["batch"] == 2]
    # the same order as select() with that reward model, on what round 1 left in the pool
    pool = LabeledPool(read_records(w / "pool.jsonl", PairRecord)[:20], seed=0)
    pool.restore([r["id"] for r in rows(run / "round1" / "select" / "selection.jsonl")])
    expected = select("uncertainty", pool.unasked(), 4, {rm1: load_scorer(rm1)}, seed=0)
    assert [(r["id"], r["rank"]) for r in batch2] == [(s.candidate.prompt_id, s.rank) for s in expected]
    assert [r["score"] for r in batch2] == pytest.approx([s.score for s in expected], abs=1e-6)
    assert [r["score"] for r in batch2] == sorted(r["score"] for r in batch2)  # smallest margin first


def test_labels_accumulate_and_nothing_unbought_is_seen(w, ran):
    run, summary, _ = ran
    truth = {f"{i}:{p.id}": p for i, p in enumerate(read_records(w / "pool.jsonl", PairRecord)[:20])}
    bought1 = rows(run / "round1" / "select" / "pairs.jsonl")
    bought2 = rows(run / "round2" / "select" / "pairs.jsonl")
    assert len(bought1) == 4 and len(bought2) == 8 and bought2[:4] == bought1  # round 2 keeps round 1's labels
    sel2 = rows(run / "round2" / "select" / "selection.jsonl")
    assert [r["batch"] for r in sel2] == [1] * 4 + [2] * 4 and len({r["id"] for r in sel2}) == 8
    assert [p["pool_id"] for p in bought2] == [r["id"] for r in sel2]  # exactly what was bought, nothing else
    for p in bought2:  # the revealed label is the pool's
        assert (p["chosen"], p["rejected"]) == (truth[p["pool_id"]].chosen, truth[p["pool_id"]].rejected)
        assert set(p["selection"]) == {"rule", "score", "rank", "batch"}
    # the selector saw no label: each candidate's two responses come in a seeded order, not chosen first
    firsts = [r["first_text"] == truth[r["id"]].chosen for r in sel2]
    assert 0 < sum(firsts) < len(firsts)
    rm = {s["round"]: s["outputs"] for s in summary["stages"] if s["name"] == "rm"}
    assert (rm[1]["train_pairs"], rm[2]["train_pairs"]) == (4, 8) and rm[2]["eval_pairs"] == 4
    assert 0.0 <= rm[2]["eval"]["accuracy"] <= 1.0  # the held-out accuracy of each round


def test_a_rerun_skips_and_the_same_seed_selects_the_same(w, ran, tmp_path):
    run, _, _ = ran
    again = run_recipe(recipe_from_dict(active_recipe(w, run), "active.yaml"), log=lambda m: None)
    assert [s["status"] for s in again["stages"]] == ["skipped"] * 4
    only = run_recipe(recipe_from_dict(active_recipe(w, run), "active.yaml"), only=["select"], log=lambda m: None)
    assert [(s["name"], s["round"], s["status"]) for s in only["stages"]] == [("select", 1, "skipped"),
                                                                            ("select", 2, "skipped")]
    other = tmp_path / "other"
    run_recipe(recipe_from_dict(active_recipe(w, other), "active.yaml"), log=lambda m: None)
    for r in (1, 2):
        mine, theirs = (rows(d / f"round{r}" / "select" / "selection.jsonl") for d in (run, other))
        assert [(x["id"], x["rank"]) for x in mine] == [(x["id"], x["rank"]) for x in theirs]
        assert [x["score"] for x in mine] == pytest.approx([x["score"] for x in theirs], abs=1e-6)


def test_a_completions_pool_feeds_a_labelling_stage_and_accumulates_through_pairs(w, tmp_path):
    """Responses without labels: each round's comparisons go to the simulated panel; a pairs stage keeps every
    round's labels (`${prev.labels.pairs}` is dropped from the list in round 1)."""
    comp = tmp_path / "completions.jsonl"
    comp.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": f"about the {WORDS[i]}", "index": k,
                                        "response": " ".join([WORDS[i]] * (k + 1))}) + "\n"
                            for i in range(4) for k in range(3)))  # 4 prompts x 3 responses: 12 comparisons
    run = tmp_path / "run"
    summary = run_recipe(recipe_from_dict({"run_dir": str(run), "rounds": 2, "stages": [
        {"stage": "select", "repeat": True, "completions": str(comp), "rule": "uncertainty", "budget": 5,
         "scorer": f"python:{w / 'scorer.py'}:length", "previous": "${prev.select}"},
        {"stage": "simulate", "repeat": True, "completions": "${select.completions}", "overlap": 1,
         "annotators": [{"name": "a", "noise": 0.0}]},
        {"stage": "pairs", "name": "labels", "repeat": True, "inputs": ["${prev.labels.pairs}", "${simulate.pairs}"]},
    ]}, "c.yaml"), log=lambda m: None)
    labels = {s["round"]: s for s in summary["stages"] if s["name"] == "labels"}
    assert len(labels[1]["outputs"]["per_input"]) == 1 and labels[1]["outputs"]["n_pairs"] == 5
    assert len(labels[2]["outputs"]["per_input"]) == 2 and labels[2]["outputs"]["n_pairs"] == 10
    sel = rows(run / "round2" / "select" / "selection.jsonl")
    asked = {(r["id"], r["first"], r["second"]) for r in sel}
    assert len(asked) == 10 and [r["batch"] for r in sel] == [1] * 5 + [2] * 5  # nothing asked twice
    # length margins: 1 word apart before 2 words apart
    assert [r["score"] for r in sel[:5]] == [1.0] * 5 and sel[5]["score"] == 1.0
    to_label = read_records(run / "round2" / "select" / "completions.jsonl", CompletionRecord)
    assert len(to_label) == 10 and len({c.prompt_id for c in to_label}) == 5
    assert all(c.selection["batch"] == 2 for c in to_label)


def test_bad_input_is_one_clear_message_each(w, tmp_path):
    def recipe(rounds=1, **select_settings):
        base = {"stage": "select", "repeat": True, "pool": str(w / "pool.jsonl"), "pool_lines": "1-20",
                "rule": "random", "budget": 8, "previous": "${prev.select}"}
        return recipe_from_dict({"run_dir": str(tmp_path / f"r{len(list(tmp_path.iterdir()))}"), "rounds": rounds,
                                 "stages": [{**base, **select_settings}]}, "bad.yaml")

    quiet = {"log": lambda m: None}
    with pytest.raises(RlhaifError, match=r"budget 8 is larger than what is left of the pool: 4 comparisons not "
                                          r"chosen yet \(16 chosen in earlier rounds\)"):
        run_recipe(recipe(rounds=3), **quiet)
    with pytest.raises(ConfigError, match=r"bad.yaml: stage 'select': rule 'uncertainty' needs a scorer: 'scorer: "
                                          r"\$\{prev.<reward stage>\}'"):
        run_recipe(recipe(rule="uncertainty"), **quiet)
    with pytest.raises(RlhaifError, match="rule 'disagreement' needs an ensemble"):
        run_recipe(recipe(rule="disagreement", scorer=f"python:{w / 'scorer.py'}:length"), **quiet)
    with pytest.raises(ConfigError, match="give exactly one of 'pool'"):
        run_recipe(recipe(completions=str(w / "pool.jsonl")), **quiet)
    with pytest.raises(ConfigError, match="key 'budget': must be >= 1"):
        check_recipe(recipe(budget=0))
    with pytest.raises(ConfigError, match="previous: .* holds no selection.jsonl"):
        run_recipe(recipe(previous=str(w)), **quiet)

    stages = [{"stage": "pairs", "name": "pool", "inputs": [str(w / "pool.jsonl")]},
              {"stage": "select", "repeat": True, "pool": "${pool.pairs}", "rule": "random", "budget": 2}]

    def with_ref(where, ref):
        st = [dict(s) for s in stages]
        st[where]["source" if where == 0 else "scorer"] = ref
        return {"run_dir": "r", "rounds": 2, "stages": st}

    for where, ref, message in [
            (0, "${prev.select}", r"stage 'pool': \$\{prev.select\}: only a repeated stage \(repeat: true\) has a "
                                  r"previous round; refer to the latest run as \$\{select\}"),
            (1, "${prev.pool.pairs}", r"\$\{prev.pool.pairs\}: stage 'pool' runs once \(it is not repeat: true\), so "
                                      r"it has no previous round; refer to it as \$\{pool.pairs\}"),
            (1, "${prev.rm}", r"\$\{prev.rm\} refers to no stage called 'rm'"),
            (1, "reward_model:${prev.select}", r"must be a whole value \(or list item\): in round 1 it is empty"),
            (1, "${prev}", r"name the stage, as in \$\{prev.<name>\}")]:
        with pytest.raises(ConfigError, match=message):
            recipe_from_dict(with_ref(where, ref), "bad.yaml")
    with pytest.raises(ConfigError, match="'prev' is not a stage name"):
        recipe_from_dict({"run_dir": "r", "stages": [{"stage": "pairs", "name": "prev", "inputs": ["x"]}]})


def test_an_ensemble_folder_is_a_committee_for_disagreement_only(tmp_path):
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"]}))
    ens = str(tmp_path / "ens")
    assert committee("disagreement", [ens]) == [f"{ens}/member-0", f"{ens}/member-1"]
    assert committee("uncertainty", [ens]) == [ens] and committee("disagreement", ["length", "length"]) == [
        "length", "length"]


def test_the_packaged_recipe_runs_with_a_tiny_reward_model(w, tmp_path):
    """active-labels as shipped (its wiring, pool and held-out lines), the reward backbone swapped for a tiny
    one and two rounds."""
    import yaml

    from rlhaif.pipeline import packaged_recipes

    data = yaml.safe_load(packaged_recipes()["active-labels"].read_text())
    data.update(run_dir=str(tmp_path / "run"), rounds=2)
    for st in data["stages"]:
        if st["stage"] == "reward":
            st.update(backbone=str(w / "rm"), max_length=32, epochs=1)
    summary = run_recipe(recipe_from_dict(data, "active-labels.yaml"), log=lambda m: None)
    rm = [s["outputs"] for s in summary["stages"] if s["name"] == "rm"]
    budget = next(st["budget"] for st in data["stages"] if st["stage"] == "select")
    assert [o["train_pairs"] for o in rm] == [budget, 2 * budget] and {o["eval_pairs"] for o in rm} == {20}
    chosen = [s["outputs"] for s in summary["stages"] if s["name"] == "select"]
    assert [(o["rule"], o["remaining"]) for o in chosen] == [("random", 62 - budget), ("uncertainty", 62 - 2 * budget)]
