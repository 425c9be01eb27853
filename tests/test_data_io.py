"""JSONL readers and writers: round trips (plain and gzip), atomic writes, malformed lines."""

import gzip
import json

import pytest

from rlhaif.data.io import (append_jsonl, atomic_write, read_jsonl, read_jsonl_tolerant, read_records, write_jsonl,
                            write_records)
from rlhaif.data.records import CompletionRecord, DemoRecord, PairRecord, PromptRecord
from rlhaif.errors import DataError

RECORDS = [
    PromptRecord(id="a", prompt="Why is the sky blue? ünïcode ✓"),
    PromptRecord(id="b", prompt=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]),
]
PAIRS = [
    PairRecord(prompt="q", chosen="good", rejected="bad", p=0.75, weight=1 / 6, margin=0.5, source="ai:judge:p1"),
    PairRecord(prompt=[{"role": "user", "content": "q2"}], chosen="c", rejected="r", id="x"),
]
DEMOS = [DemoRecord(prompt="p", response="r"),
         DemoRecord(messages=[{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])]
COMPLETIONS = [CompletionRecord(prompt_id="0", prompt="p", response="r", model="m", index=1, finished=False,
                                sampling={"temperature": 0.7, "seed": 3})]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("model, records", [(PromptRecord, RECORDS), (PairRecord, PAIRS), (DemoRecord, DEMOS),
                                            (CompletionRecord, COMPLETIONS)])
def test_records_round_trip(tmp_path, suffix, model, records):
    path = tmp_path / f"out{suffix}"
    assert write_records(path, records) == len(records)
    assert read_records(path, model) == records
    if suffix.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:  # really gzip, one JSON object a line
            assert len([json.loads(l) for l in f]) == len(records)


def test_jsonl_round_trip_and_blank_lines(tmp_path):
    rows = [{"a": 1}, {"b": [1, 2], "c": "é"}]
    path = tmp_path / "x.jsonl"
    write_jsonl(path, rows)
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert [(n, o) for n, o in read_jsonl(path)] == [(1, rows[0]), (2, rows[1])]


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b",\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_records(path, PromptRecord)
    assert str(e.value).startswith(f"{path}:2: not valid JSON (")
    assert e.value.line == 2


def test_malformed_gzip_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"prompt": "a"}\n{"prompt": "b"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl.gz:3: expected a JSON object, got list$"):
        read_records(path, PromptRecord)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: file not found"):
        read_records(tmp_path / "nope.jsonl", PromptRecord)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.jsonl: the file holds no records"):
        read_records(tmp_path / "empty.jsonl", PromptRecord)


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_atomic_write_crash_leaves_nothing(tmp_path, name):
    def rows():
        yield {"a": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / name, rows())
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_crash_keeps_previous_file(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"old": 1}])
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write('{"new": 1}\n')
            raise KeyboardInterrupt
    assert path.read_text(encoding="utf-8") == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_append_and_tolerant_read(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo')  # torn last line from a crash
    assert read_jsonl_tolerant(path) == [{"step": 1}, {"step": 2}]
    assert read_jsonl_tolerant(tmp_path / "absent.jsonl") == []
    path.write_text('{"step": 1}\n{bad\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"log.jsonl:2: not valid JSON in an append-only log"):
        read_jsonl_tolerant(path)
