"""What labels cost (rlhaif.feedback.costs) by hand-computed values, and `rlhaif feedback report` printing them."""

import json

import pytest

from rlhaif.cli import main
from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.costs import cost_row, is_usable, label_costs
from rlhaif.feedback.human.schemas import JudgmentIn
from rlhaif.feedback.human.store import Store


def pw(ann, task, winner, choice="win", ms=None):
    return {"annotator": ann, "task": task, "kind": "pairwise", "responses": [1, 2], "duration_ms": ms,
            "value": {"choice": choice, "winner": winner}}


def test_usable_judgments_by_hand():
    gold = {(7, 1, 2): 1.0}  # task 7 is a gold item: response 1 is better
    assert is_usable(pw("a", 1, 1), [], {})
    assert not is_usable(pw("a", 1, None, "tie"), [], {})  # a tie states no preference
    assert not is_usable(pw("a", 1, None, "both_bad"), [], {})
    assert not is_usable(pw("a", 1, 1), ["a"], {})  # flagged annotator
    assert not is_usable(pw("a", 7, 2), [], gold)  # failed gold check
    assert is_usable(pw("a", 7, 1), [], gold)
    thumbs = {"annotator": "a", "task": 3, "kind": "thumbs", "responses": [4], "value": {"up": True}}
    assert is_usable(thumbs, [], {})


def test_costs_by_hand():
    js = [pw("a", 1, 1, ms=10_000), pw("a", 2, None, "tie", ms=20_000), pw("b", 1, 2, ms=30_000),
          pw("b", 2, 1, ms=None)]
    costs = label_costs(js, [], {}, cost_per_hour=36.0)
    # all: 4 judgments, median of 10/20/30 s = 20 s; the one without a duration counts 20 s → 80 s at 36/h = 0.8
    assert costs["all"] == {"judgments": 4, "median_seconds": 20.0, "usable": 3, "usable_share": 0.75,
                            "cost": 0.8, "cost_per_usable_pair": pytest.approx(0.8 / 3, abs=1e-4)}
    assert costs["annotators"]["a"]["usable"] == 1 and costs["annotators"]["a"]["cost"] == pytest.approx(0.3)
    assert costs["annotators"]["b"]["median_seconds"] == 30.0
    assert cost_row(js, 3, cost_per_judgment=0.1)["cost_per_usable_pair"] == pytest.approx(0.4 / 3, abs=1e-4)
    assert "cost" not in cost_row(js, 3)  # no rate given: no cost
    assert cost_row(js[:1], 0, cost_per_judgment=0.1)["cost_per_usable_pair"] is None


def test_feedback_report_prints_costs(tmp_path, capsys):
    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    store.add_annotator("alice")
    store.create_campaign("c", "pairwise")
    store.import_completions("c", [CompletionRecord(prompt_id=k, prompt=f"q {k}", response=r, index=i)
                                   for k in ("p0", "p1") for i, r in enumerate(["one", "two"])])
    first, second = store.pending(1)
    store.submit(1, JudgmentIn(client_id="alice-0001", assignment_id=first, value={"choice": "A"}, duration_ms=6000))
    store.submit(1, JudgmentIn(client_id="alice-0002", assignment_id=second, value={"choice": "tie"},
                               duration_ms=12000))
    store.close()
    out = tmp_path / "report.json"
    main(["feedback", "report", "--db", db, "--cost-per-hour", "30", "-o", str(out)])  # returns: exit code 0
    printed = capsys.readouterr().out
    # 2 judgments, median 9 s, 1 usable (the tie is not); 18 s at 30 an hour = 0.15
    assert "costs, campaign c:" in printed
    assert "all: 2 judgments, median 9.0 s each, 1 usable (50%), cost 0.15, 0.15 per usable pair" in printed
    assert json.loads(out.read_text())["costs"]["c"]["annotators"]["alice"]["usable"] == 1
    with pytest.raises(SystemExit) as e:
        main(["feedback", "report", "--db", db, "--cost-per-hour", "30", "--cost-per-judgment", "1"])
    assert e.value.code == 2 and "not both" in capsys.readouterr().err
