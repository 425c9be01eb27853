"""KTO's data: unpaired rows from the store (thumbs, ratings, "both bad", "F"), TRL's unpaired format and back."""

import json
import uuid

import pytest

from rlhaif.data.formats import read_unpaired, trl_to_unpaired, unpaired_to_trl, write_trl_unpaired
from rlhaif.data.io import read_jsonl, read_records, write_records
from rlhaif.data.records import CompletionRecord, PairRecord, UnpairedRecord
from rlhaif.errors import DataError
from rlhaif.feedback.export_kto import export_kto, kto_rows
from rlhaif.feedback.human.schemas import JudgmentIn
from rlhaif.feedback.human.store import Store


def _recs(k):
    return [CompletionRecord(prompt_id="q", prompt="Say hi", response=f"hi number {j}", model=f"m{j}", index=j)
            for j in range(k)]


def _campaign(tmp_path, kind, values, k=None, db=None):
    """A store with one annotator who answers the campaign's tasks (over ``k`` responses of one prompt; one
    task per response for thumbs and ratings) with ``values``, in task order."""
    store = Store(str(tmp_path / f"{db or kind}.db"))
    store.migrate()
    me = store.annotator_by_token(store.add_annotator("dan"))
    store.create_campaign("c", kind)
    store.import_completions("c", _recs(k or len(values)), responses_per_task=k or 4)
    pending = store.pending(me.id)
    assert len(pending) == len(values)
    for aid, v in zip(pending, values):
        store.submit(me.id, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=aid, value=v))
    return store


def _key(rows):
    return [(r.prompt, r.completion, r.label) for r in rows]


def test_thumbs_campaign_to_kto_rows_to_trl_and_back(tmp_path):
    store = _campaign(tmp_path, "thumbs", [{"thumb": "up"}, {"thumb": "down"}, {"thumb": "down"}])
    res = export_kto(store, tmp_path / "kto.jsonl", "c")
    assert res["rows"] == 3 and res["desirable"] == 1 and res["undesirable"] == 2
    rows = read_records(tmp_path / "kto.jsonl", UnpairedRecord)
    assert _key(rows) == [("Say hi", "hi number 0", True), ("Say hi", "hi number 1", False),
                          ("Say hi", "hi number 2", False)]
    assert all(r.source == "human:dan" for r in rows)
    # a single thumbs-down is a training example now (it gave no pair before)
    export_kto(store, tmp_path / "trl.jsonl", "c", trl=True)
    trl = [o for _, o in read_jsonl(tmp_path / "trl.jsonl")]
    assert trl[1] == {"prompt": "Say hi", "completion": "hi number 1", "label": False}
    back = read_unpaired(tmp_path / "trl.jsonl")
    assert _key(back) == _key(rows) and all(r.source == "trl" for r in back)
    store.close()


@pytest.mark.parametrize("threshold, expect", [(6, [True, False, True]), (9, [False, False, False]),
                                               (3, [True, True, True])])
def test_ratings_campaign_with_a_threshold(tmp_path, threshold, expect):
    store = _campaign(tmp_path, "rating", [{"rating": 8}, {"rating": 3}, {"rating": 6}])
    rows, counts = kto_rows(store, "c", rating_threshold=threshold)
    assert [r.label for r in rows] == expect
    assert counts["desirable"] == sum(expect)
    write_trl_unpaired(tmp_path / "trl.jsonl", rows)
    assert _key(read_unpaired(tmp_path / "trl.jsonl")) == _key(rows)
    store.close()


def test_both_bad_and_fail_ranks_are_undesirable_and_wins_give_nothing(tmp_path):
    store = _campaign(tmp_path, "pairwise", [{"choice": "both_bad"}], k=2)
    rows, _ = kto_rows(store, "c")
    assert sorted(_key(rows)) == [("Say hi", "hi number 0", False), ("Say hi", "hi number 1", False)]
    store.close()
    store = _campaign(tmp_path, "ranking", [{"ranks": [1, "F", 2]}], k=3)
    rows, _ = kto_rows(store, "c")
    ranks = store.latest_judgments("c")[0]["value"]["ranks"]  # stored by response id (shown order is shuffled)
    failed = [int(rid) for rid, r in ranks.items() if r == "F"]
    assert len(failed) == 1
    assert _key(rows) == [("Say hi", store.responses("c")[failed[0]]["text"], False)]
    store.close()
    store = _campaign(tmp_path, "pairwise", [{"choice": "A"}], k=2, db="win")
    assert kto_rows(store, "c")[0] == []  # a win says which is better, not which is good
    store.close()


def test_trl_conversational_unpaired_round_trip_and_bad_rows(tmp_path):
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
           "completion": [{"role": "assistant", "content": "4"}], "label": True}
    rec = trl_to_unpaired(row)
    assert rec.completion == "4" and rec.label is True and rec.prompt[1].content == "2+2?"
    assert unpaired_to_trl(rec) == row
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "completion": "y", "label": True}) + "\n"
                   + json.dumps({"prompt": "x", "completion": "y", "label": 1}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'label'.*true \(desirable\) or false"):
        read_unpaired(bad)
    bad.write_text(json.dumps({"prompt": "x", "completion": [{"role": "user", "content": "y"}], "label": True}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'completion'.*one assistant message"):
        read_unpaired(bad)


def test_pairs_file_reads_as_desirable_and_undesirable_rows(tmp_path):
    write_records(tmp_path / "pairs.jsonl", [PairRecord(prompt="q", chosen="good", rejected="bad", weight=0.5),
                                             PairRecord(prompt="q", chosen="same", rejected="meh", p=0.5),
                                             PairRecord(prompt="r", chosen="worse", rejected="better", p=0.2)])
    rows = read_unpaired(tmp_path / "pairs.jsonl")
    assert _key(rows) == [("q", "good", True), ("q", "bad", False), ("r", "better", True), ("r", "worse", False)]
    assert rows[0].weight == 0.5


def test_cli_feedback_export_format_kto(tmp_path):
    from rlhaif.cli import main

    store = _campaign(tmp_path, "thumbs", [{"thumb": "down"}, {"thumb": "up"}])
    store.close()
    for fmt, name in (("kto", "kto.jsonl"), ("kto-trl", "trl.jsonl")):
        try:
            main(["feedback", "export", "--db", str(tmp_path / "thumbs.db"), "--format", fmt,
                  "-o", str(tmp_path / name)])
        except SystemExit as e:
            assert e.code == 0
    assert _key(read_unpaired(tmp_path / "kto.jsonl")) == _key(read_unpaired(tmp_path / "trl.jsonl")) == [
        ("Say hi", "hi number 0", False), ("Say hi", "hi number 1", True)]
