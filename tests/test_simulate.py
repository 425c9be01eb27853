"""Simulated panel: 5 annotators (one adversarial) on 200 pairwise items through the real store."""

import json
import random
from itertools import combinations

from rlhaif.data.io import read_records, write_records
from rlhaif.data.records import CompletionRecord, PairRecord
from rlhaif.feedback import aggregate as agg
from rlhaif.feedback.human.store import Store
from rlhaif.feedback.simulate import AnnotatorSpec, SimulatedPanelConfig, run_simulated_panel, simulated_value


def test_adversary_answers_against_the_scorer_and_position_bias_shows():
    rng = random.Random(0)
    troll = AnnotatorSpec(name="t", noise=0.0, adversarial=True)
    assert simulated_value(troll, "pairwise", [2.0, 1.0], ["x", "y"], rng)["choice"] == "B"
    biased = AnnotatorSpec(name="b", noise=0.0, position_bias=1.0)
    assert simulated_value(biased, "pairwise", [0.5, 1.0], ["x", "y"], rng)["choice"] == "A"
    assert simulated_value(AnnotatorSpec(name="r", noise=0.0), "ranking", [0.1, 3.0, 1.0], ["a", "b", "c"], rng) == \
        {"ranks": [3, 1, 2]}


def test_panel_of_five_recovers_scorer_order_and_flags_adversary(tmp_path):
    rng = random.Random(1)
    truth, recs = {}, []
    for i in range(100):  # 100 prompts x 3 responses -> 2 pairwise tasks per prompt = 200 items
        for k in range(3):
            text = f"answer {k} to prompt {i}"
            truth[text] = rng.gauss(0.0, 1.0)
            recs.append(CompletionRecord(prompt_id=f"p{i}", prompt=f"prompt {i}", response=text, model=f"m{k}", index=k))
    write_records(tmp_path / "completions.jsonl", recs)
    scorer = lambda prompts, responses: [truth[r] for r in responses]  # noqa: E731
    cfg = SimulatedPanelConfig(output_dir=str(tmp_path / "out"), completions=str(tmp_path / "completions.jsonl"))
    res = run_simulated_panel(cfg, scorer=scorer)
    assert res.judgments == 200 * 5
    assert res.flagged == ["sim-troll"]

    store = Store(str(tmp_path / "out" / "feedback.db"))
    judgments = store.latest_judgments("simulated")
    responses = store.responses("simulated")
    bt = agg.bradley_terry(agg.comparisons_of(judgments, exclude=["sim-troll"]))
    by_prompt = {}
    for rid, r in responses.items():
        by_prompt.setdefault(r["prompt_id"], []).append(rid)
    right = total = 0
    for rids in by_prompt.values():
        for a, b in combinations(rids, 2):  # every pair of one prompt, including the never-compared 0-2
            total += 1
            right += (bt[a] > bt[b]) == (truth[responses[a]["text"]] > truth[responses[b]["text"]])
    share = right / total
    print(f"BT consensus recovers the scorer's order on {right}/{total} = {share:.1%} of pairs")
    assert total == 300 and share >= 0.75

    pairs = read_records(tmp_path / "out" / "pairs.jsonl", PairRecord)
    assert pairs and all(p.source.startswith("human:sim-") and p.source != "human:sim-troll" for p in pairs)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reliability"]["sim-troll"]["flagged"] and report["reliability"]["sim-troll"]["agreement"] < 0.5
    store.close()


def test_cli_simulate_writes_pairs_and_flags_the_troll(tmp_path, capsys):
    from rlhaif.cli import main

    # the default scorer is length: more words are better; ten more words is clear enough for the panel to agree on
    write_records(tmp_path / "c.jsonl", [CompletionRecord(prompt_id=f"p{i}", prompt=f"prompt {i}", model=f"m{k}",
                                                          index=k, response=" ".join(["word"] * (1 + 10 * k)))
                                         for i in range(10) for k in range(3)])
    try:
        main(["feedback", "simulate", "-o", str(tmp_path / "sim"), "--completions", str(tmp_path / "c.jsonl")])
    except SystemExit as e:
        assert e.code == 0
    assert "flagged: sim-troll" in capsys.readouterr().out
    pairs = read_records(tmp_path / "sim" / "pairs.jsonl", PairRecord)
    assert len(pairs) == 20 * 4  # 10 prompts x 2 pairwise items, by the four annotators who are not flagged
    assert sum(len(p.chosen) > len(p.rejected) for p in pairs) / len(pairs) > 0.8


def test_simulated_panel_is_reproducible_from_its_seed(tmp_path):
    """The store draws annotators' display orders from a secure source, but a panel in its own store labels by
    its seed alone (its position bias and noise follow the order shown): two runs write the same pairs."""
    rng = random.Random(2)
    recs = [CompletionRecord(prompt_id=f"p{i}", prompt=f"prompt {i}", response=f"answer {k} to {i}", model=f"m{k}",
                             index=k) for i in range(30) for k in range(3)]
    write_records(tmp_path / "c.jsonl", recs)
    truth = {r.response: rng.gauss(0.0, 0.3) for r in recs}  # close scores: noise and position bias decide often
    scorer = lambda prompts, responses: [truth[r] for r in responses]  # noqa: E731
    runs = []
    for run in range(2):
        cfg = SimulatedPanelConfig(output_dir=str(tmp_path / f"out{run}"), completions=str(tmp_path / "c.jsonl"))
        run_simulated_panel(cfg, scorer=scorer)
        runs.append((tmp_path / f"out{run}" / "pairs.jsonl").read_text())
    assert runs[0] and runs[0] == runs[1]


def test_an_empty_response_makes_no_pair_instead_of_stopping_the_export(tmp_path):
    """A model can answer with nothing (EOS first; a tiny model often does): its pairs are left out, and every
    other pair of the same ranking or pairwise task is still exported."""
    recs = [CompletionRecord(prompt_id=f"p{i}", prompt=f"prompt {i}", response=text, index=k)
            for i in range(3) for k, text in enumerate(["", "a short answer", "a much longer answer here"])]
    write_records(tmp_path / "completions.jsonl", recs)
    for kind in ("ranking", "pairwise"):
        out = tmp_path / kind
        res = run_simulated_panel(SimulatedPanelConfig(
            output_dir=str(out), completions=str(tmp_path / "completions.jsonl"), kind=kind, overlap=1,
            annotators=[AnnotatorSpec(name="a", noise=0.0)]))
        pairs = read_records(out / "pairs.jsonl", PairRecord)
        assert res.n_pairs == len(pairs) == 3  # per prompt: the two non-empty answers, longer preferred
        assert all(p.chosen == "a much longer answer here" and p.rejected == "a short answer" for p in pairs)
