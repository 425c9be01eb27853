"""TRL preference rows (standard and conversational) <-> pairs, and `convert_pairs` between all formats."""

import json

import pytest

from rlhaif.data.formats import (convert_pairs, pair_to_trl, read_hh_rlhf, read_pairs, read_trl, trl_to_pair,
                                 write_trl)
from rlhaif.data.io import read_jsonl, read_records, write_records
from rlhaif.data.records import PairRecord
from rlhaif.errors import DataError, RlhaifError

STANDARD = [{"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Paint."},
            {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "margin": 2.0}]
CONVERSATIONAL = [
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
     "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
    {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "name a colour"}],
     "chosen": [{"role": "assistant", "content": "blue"}], "rejected": [{"role": "assistant", "content": "car"}]},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("rows, conversational", [(STANDARD, False), (CONVERSATIONAL, True)])
def test_trl_round_trip_file(tmp_path, rows, conversational):
    pairs = read_trl(_write(tmp_path / "in.jsonl", rows))
    assert all(p.source == "trl" and p.p == 1.0 for p in pairs)
    assert write_trl(tmp_path / "out.jsonl.gz", pairs, conversational=conversational) == len(rows)
    assert [o for _, o in read_jsonl(tmp_path / "out.jsonl.gz")] == rows
    # read_pairs detects the format from the first row (TRL standard rows are valid pairs as they stand)
    key = lambda p: (p.prompt, p.chosen, p.rejected, p.margin)  # noqa: E731
    assert [key(p) for p in read_pairs(tmp_path / "out.jsonl.gz")] == [key(p) for p in pairs]


def test_trl_conversational_fields():
    pair = trl_to_pair(CONVERSATIONAL[0])
    assert [m.role for m in pair.prompt] == ["system", "user"]
    assert (pair.chosen, pair.rejected) == ("4", "5")


def test_standard_to_conversational_and_back():
    pair = trl_to_pair(STANDARD[0])
    conv = pair_to_trl(pair, conversational=True)
    assert conv == {"prompt": [{"role": "user", "content": "Why is the sky blue?"}],
                    "chosen": [{"role": "assistant", "content": "Rayleigh scattering."}],
                    "rejected": [{"role": "assistant", "content": "Paint."}]}
    # a one-user-turn conversation becomes plain text; a longer one keeps who said what
    assert pair_to_trl(trl_to_pair(conv), conversational=False)["prompt"] == "Why is the sky blue?"
    multi = pair_to_trl(trl_to_pair(CONVERSATIONAL[1]), conversational=False)
    assert multi["prompt"] == "User: hi\n\nAssistant: hello\n\nUser: name a colour"
    assert pair_to_trl(trl_to_pair(STANDARD[1]))["margin"] == 2.0


@pytest.mark.parametrize("row, field, message", [
    ({"chosen": "a", "rejected": "b"}, "prompt", "is missing (implicit-prompt TRL data is not supported"),
    ({**CONVERSATIONAL[0], "chosen": [{"role": "user", "content": "4"}]}, "chosen",
     "conversational value must be a list of exactly one assistant message"),
    ({**CONVERSATIONAL[0], "rejected": []}, "rejected", "conversational value must be a list of exactly one"),
    ({**CONVERSATIONAL[0], "prompt": [{"role": "bot", "content": "x"}]}, "prompt.0.role",
     "Input should be 'system', 'user' or 'assistant', got 'bot'"),
    ({**STANDARD[0], "rejected": ""}, "rejected", "rejected must be a non-empty string"),
])
def test_trl_bad_rows(tmp_path, row, field, message):
    path = _write(tmp_path / "trl.jsonl", [STANDARD[0], row])
    with pytest.raises(DataError) as e:
        read_trl(path)
    assert str(e.value).startswith(f"{path}:2: field '{field}': {message}")


def test_convert_between_all_formats(tmp_path, hh_path):
    counts = convert_pairs(hh_path, tmp_path / "pairs.jsonl", "hh", "pairs", skip_invalid=True)
    assert counts == {"read": 1800, "written": 1794, "skipped": 6}
    pairs = read_records(tmp_path / "pairs.jsonl", PairRecord)
    assert pairs == read_hh_rlhf(hh_path, skip_invalid=True)
    convert_pairs(tmp_path / "pairs.jsonl", tmp_path / "conv.jsonl", "pairs", "trl-conversational")
    convert_pairs(tmp_path / "conv.jsonl", tmp_path / "hh.jsonl.gz", "trl", "hh")
    convert_pairs(tmp_path / "hh.jsonl.gz", tmp_path / "back.jsonl", "auto", "pairs")
    back = read_records(tmp_path / "back.jsonl", PairRecord)
    assert [(p.prompt, p.chosen, p.rejected) for p in back] == [(p.prompt, p.chosen, p.rejected) for p in pairs]
    convert_pairs(tmp_path / "pairs.jsonl", tmp_path / "std.jsonl", "auto", "trl")
    first = next(read_jsonl(tmp_path / "std.jsonl"))[1]
    assert isinstance(first["prompt"], str) and first["chosen"] == pairs[0].chosen


def test_convert_errors(tmp_path, hh_path):
    with pytest.raises(RlhaifError, match=r":87: field 'chosen': the last Assistant reply is empty "
                                          r"\(--skip-invalid drops such records\)"):
        convert_pairs(hh_path, tmp_path / "x.jsonl", "hh", "pairs")
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(DataError, match="unknown output format 'csv'"):
        convert_pairs(hh_path, tmp_path / "x.jsonl", "hh", "csv")
    write_records(tmp_path / "p.jsonl", [PairRecord(prompt="q", chosen="a", rejected="b", p=0.7)])
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'p'"):
        (tmp_path / "p.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b", "p": 7}\n')
        convert_pairs(tmp_path / "p.jsonl", tmp_path / "y.jsonl", "pairs", "trl")
