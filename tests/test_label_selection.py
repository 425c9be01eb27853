"""Choosing what people label: the selection order on a hand-made pool (smallest margins first, an ensemble's
spread, reproducible ties), labels hidden until bought, the budgeted import from the CLI, and bad input."""

import json
import math
import sqlite3

import pytest
from rlhaif.cli import main
from rlhaif.data.records import CompletionRecord, PairRecord
from rlhaif.errors import RlhaifError
from rlhaif.feedback.select import LabeledPool, candidate_pairs, rule_scores, select

# A reward "model" with known scores: the text's value.
VALUE = {"a": 0.0, "b": 0.1, "c": 1.0, "d": 0.5, "e": 0.55, "f": 3.0, "g": 1.0, "h": 1.0}


def known(prompts, texts):
    return [VALUE[t] for t in texts]


def shifted(prompts, texts):  # a second ensemble member: agrees on most texts, not on 'c' and 'f'
    return [VALUE[t] + {"c": 1.0, "f": -2.0}.get(t, 0.0) for t in texts]


def pool_records():
    rows = {"p1": "abc", "p2": "def", "p3": "gh"}
    return [CompletionRecord(prompt_id=pid, prompt=f"question {pid}", index=i, response=t)
            for pid, texts in rows.items() for i, t in enumerate(texts)]


def test_candidates_are_every_pair_of_distinct_responses():
    cands = candidate_pairs(pool_records())
    assert [(c.prompt_id, c.first_text, c.second_text) for c in cands] == [
        ("p1", "a", "b"), ("p1", "a", "c"), ("p1", "b", "c"), ("p2", "d", "e"), ("p2", "d", "f"),
        ("p2", "e", "f"), ("p3", "g", "h")]
    assert len(candidate_pairs(pool_records(), exclude={("p1", "b", "a")})) == 6  # asked in either order


def test_uncertainty_takes_the_smallest_margins_first():
    # |margins|: ab 0.1, ac 1.0, bc 0.9, de 0.05, df 2.5, ef 2.45, gh 0.0
    got = select("uncertainty", candidate_pairs(pool_records()), 4, {"rm": known})
    assert [(s.candidate.first_text + s.candidate.second_text, round(s.score, 6), s.rank) for s in got] == [
        ("gh", 0.0, 1), ("de", 0.05, 2), ("ab", 0.1, 3), ("bc", 0.9, 4)]
    assert got[1].record() == {"rule": "uncertainty", "score": 0.05, "rank": 2}


def test_disagreement_takes_the_largest_spread_of_the_ensemble_first():
    # margins of (known, shifted): ac (−1, −2) → std 0.5; bc (−0.9, −1.9) 0.5; df (−2.5, −0.5) 1.0;
    # ef (−2.45, −0.45) 1.0; others 0
    scores = rule_scores("disagreement", [[-1.0, -2.0], [-2.5, -0.5], [0.3, 0.3]])
    assert scores == pytest.approx([0.5, 1.0, 0.0])
    got = select("disagreement", candidate_pairs(pool_records()), 4, {"m1": known, "m2": shifted}, seed=3)
    assert sorted(s.candidate.first_text + s.candidate.second_text for s in got[:2]) == ["df", "ef"]
    assert sorted(s.candidate.first_text + s.candidate.second_text for s in got[2:]) == ["ac", "bc"]
    assert [round(s.score, 6) for s in got] == [1.0, 1.0, 0.5, 0.5]


def test_ties_are_broken_by_the_seed_reproducibly():
    cands = candidate_pairs(pool_records())
    def order(seed, rule="random", scorers=None):
        return [(s.candidate.prompt_id, s.candidate.first, s.candidate.second)
                for s in select(rule, cands, 7, scorers, seed=seed)]
    assert order(0) == order(0) and order(1) == order(1)
    assert len({tuple(order(s)) for s in range(6)}) > 1  # different seeds, different shuffles
    flat = {"rm": lambda p, t: [1.0] * len(t)}  # every margin 0: the order is the seed's
    assert order(0, "uncertainty", flat) == order(0, "uncertainty", flat) == order(0)


def test_a_labelled_pool_hides_labels_until_bought():
    pairs = [PairRecord(prompt=f"q{i}", chosen=f"good {i}", rejected=f"bad {i}", p=1.0) for i in range(200)]
    pool = LabeledPool(pairs, seed=0)
    firsts = sum(c.first_text.startswith("good") for c in pool.candidates)
    assert 70 < firsts < 130  # the order says nothing about which one people chose
    seen = []

    def spy(prompts, texts):
        seen.extend(texts)
        return [0.0] * len(texts)

    chosen = select("uncertainty", pool.unasked(), 10, {"spy": spy})
    assert pool.bought == [] and set(seen) == {t for c in pool.candidates for t in (c.first_text, c.second_text)}
    bought = pool.buy(chosen)
    assert len(pool.bought) == 10 and all(p.chosen.startswith("good") and p.p == 1.0 for p in bought)
    assert len(pool.unasked()) == 190
    with pytest.raises(RlhaifError, match="bought already"):
        pool.buy(chosen[:1])


def test_bad_selections_are_one_clear_message():
    cands = candidate_pairs(pool_records())
    with pytest.raises(RlhaifError, match="larger than the pool: 7"):
        select("random", cands, 8)
    with pytest.raises(RlhaifError, match="needs --scorer"):
        select("uncertainty", cands, 2)
    with pytest.raises(RlhaifError, match="needs an ensemble"):
        select("disagreement", cands, 2, {"rm": known})
    with pytest.raises(RlhaifError, match="unknown selection rule 'smart'"):
        select("smart", cands, 2)

    def broken(prompts, texts):
        raise KeyError("oops")
    with pytest.raises(RlhaifError, match="scorer 'broken' failed on the pairs of prompt 'p1'"):
        select("uncertainty", cands, 2, {"broken": broken})
    with pytest.raises(RlhaifError, match="non-finite score on prompt 'p1'"):
        select("uncertainty", cands, 2, {"nan": lambda p, t: [math.nan] * len(t)})


# ----------------------------------------------------------------------------------------------- the CLI
@pytest.fixture
def files(tmp_path):
    comp = tmp_path / "completions.jsonl"
    comp.write_text("".join(r.model_dump_json() + "\n" for r in pool_records()))
    scorer = tmp_path / "scorer.py"
    scorer.write_text("V = " + json.dumps(VALUE) + "\n"
                      "def score(prompts, texts):\n    return [V[t] for t in texts]\n"
                      "def broken(prompts, texts):\n    raise ValueError('no model here')\n")
    return tmp_path, comp, scorer


class Ran:
    def __init__(self, exit_code, output):
        self.exit_code, self.output = exit_code, output


@pytest.fixture
def cli(capsys):
    """Run `rlhaif ARGS` in this process: its exit code and everything it printed."""
    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return Ran(code, out.out + out.err)
    return run


def test_cli_budgeted_import_in_rounds_records_why(files, cli):
    tmp, comp, scorer = files
    db = tmp / "fb.db"
    assert cli("feedback", "init", "--db", db).exit_code == 0
    args = ("feedback", "import", comp, "--db", db, "--campaign", "r1", "--select", "uncertainty", "--budget", 3,
            "--scorer", f"python:{scorer}:score")
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "selected 3 of 7 comparisons not yet asked" in r.output and "3 new pairwise tasks" in r.output
    con = sqlite3.connect(db)
    rows = con.execute("select response_ids, selection from tasks order by id").fetchall()
    texts = dict(con.execute("select id, text from responses").fetchall())
    assert [(texts[json.loads(ids)[0]] + texts[json.loads(ids)[1]], json.loads(sel)["rank"]) for ids, sel in rows] == [
        ("gh", 1), ("de", 2), ("ab", 3)]
    r = cli(*args)  # round 2: only comparisons not yet asked
    assert r.exit_code == 0 and "selected 3 of 4 comparisons not yet asked" in r.output
    texts = dict(con.execute("select id, text from responses").fetchall())
    asked = [texts[json.loads(ids)[0]] + texts[json.loads(ids)[1]]
             for ids, in con.execute("select response_ids from tasks order by id")]
    assert asked == ["gh", "de", "ab", "bc", "ac", "ef"]  # round 2 continues by margin: 0.9, 1.0, 2.45


def test_cli_bad_selection_leaves_no_campaign(files, cli):
    tmp, comp, scorer = files
    db = tmp / "fb.db"
    cli("feedback", "init", "--db", db)
    cases = [(("--select", "uncertainty", "--budget", 99, "--scorer", f"python:{scorer}:score"),
              "budget 99 is larger than the pool"),
             (("--select", "uncertainty", "--budget", 2), "needs --scorer"),
             (("--select", "uncertainty", "--budget", 2, "--scorer", f"python:{scorer}:broken"),
              "failed on the pairs of prompt 'p1'"),
             (("--select", "random"), "needs --budget"),
             (("--select", "random", "--budget", 2, "--kind", "ranking"), "use it with --kind pairwise")]
    for extra, message in cases:
        r = cli("feedback", "import", comp, "--db", db, "--campaign", "r1", *extra)
        assert r.exit_code != 0 and message in r.output, (extra, r.output)
        assert sqlite3.connect(db).execute("select count(*) from campaigns").fetchone()[0] == 0
