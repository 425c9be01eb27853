"""hh-rlhf transcripts <-> pairs, checked on the shared 1,800 real records (harmless-base test split)."""

import re

import pytest

from rlhaif.data.formats import hh_to_pair, pair_to_hh, read_hh_rlhf, read_pairs, write_hh
from rlhaif.data.io import read_jsonl, write_records
from rlhaif.data.records import PairRecord
from rlhaif.errors import DataError

H, A = "\n\nHuman:", "\n\nAssistant:"


def _raw(path):
    return {n: obj for n, obj in read_jsonl(path)}


def _hand_split(transcript):
    """The split the issue asks for, done with plain string operations on the raw text."""
    i = transcript.rfind(A)
    return transcript[:i], transcript[i + len(A):].strip()


@pytest.mark.parametrize("lineno", [1, 2, 3, 100, 777, 1500, 1800])
def test_split_matches_hand_split_of_raw_strings(hh_path, lineno):
    obj = _raw(hh_path)[lineno]
    pair = hh_to_pair(obj, hh_path, lineno)
    prefix_c, reply_c = _hand_split(obj["chosen"])
    prefix_r, reply_r = _hand_split(obj["rejected"])
    assert prefix_c == prefix_r  # the two transcripts share every turn but the last reply
    assert pair.chosen == reply_c and pair.rejected == reply_r and reply_c != reply_r
    # prompt = every turn up to the last "Assistant:", ending with the last Human turn
    assert len(pair.prompt) == prefix_c.count(H) + prefix_c.count(A)
    assert pair.prompt[-1].role == "user"
    assert pair.prompt[-1].content == prefix_c[prefix_c.rfind(H) + len(H):].strip()
    first_end = min(i for i in (prefix_c.find(A), len(prefix_c)) if i >= 0)
    assert pair.prompt[0].content == prefix_c[len(H):first_end].strip()
    assert (pair.p, pair.source, pair.id) == (1.0, "hh-rlhf", f"hh-{lineno}")


def test_1794_of_1800_parse_and_the_6_malformed_are_real(hh_path):
    raw = _raw(hh_path)
    assert len(raw) == 1800
    failures = {}
    for n, obj in raw.items():
        try:
            hh_to_pair(obj, hh_path, n)
        except DataError as e:
            failures[n] = e
    assert len(raw) - len(failures) == 1794
    assert sorted(failures) == [87, 517, 926, 1104, 1255, 1689]
    for n, err in failures.items():
        _, reply_c = _hand_split(raw[n]["chosen"])
        if n in (87, 517, 926, 1104):  # the chosen transcript ends with an empty Assistant turn
            assert reply_c == ""
            assert str(err) == f"{hh_path}:{n}: field 'chosen': the last Assistant reply is empty"
        else:  # a "Human:" marker inside a line, without its blank line: the turns no longer align
            assert "  Human: " in raw[n]["chosen"]
            assert _hand_split(raw[n]["chosen"])[0] != _hand_split(raw[n]["rejected"])[0]
            assert err.line == n and err.field == "chosen" and "not a Human turn" in str(err)
    assert len(read_hh_rlhf(hh_path, skip_invalid=True)) == 1794
    assert len(read_hh_rlhf(hh_path, limit=10)) == 10


def test_without_skip_invalid_the_first_malformed_record_stops(hh_path):
    with pytest.raises(DataError, match=r":87: field 'chosen': the last Assistant reply is empty"):
        read_hh_rlhf(hh_path)


def _norm(text):
    return re.sub(r"\s+", " ", text).strip()


def test_hh_round_trip_on_all_valid_records(hh_path, tmp_path):
    raw = _raw(hh_path)
    pairs = read_hh_rlhf(hh_path, skip_invalid=True)
    for pair in pairs:
        back = pair_to_hh(pair)
        obj = raw[int(pair.id.split("-")[1])]
        assert _norm(back["chosen"]) == _norm(obj["chosen"])
        assert _norm(back["rejected"]) == _norm(obj["rejected"])
    # file level: hh -> hh file -> pairs again, and hh -> pairs.jsonl.gz -> auto-detected read
    write_hh(tmp_path / "hh.jsonl.gz", pairs)
    again = read_hh_rlhf(tmp_path / "hh.jsonl.gz")
    assert [(p.prompt, p.chosen, p.rejected) for p in again] == [(p.prompt, p.chosen, p.rejected) for p in pairs]
    assert read_pairs(tmp_path / "hh.jsonl.gz")[5].chosen == pairs[5].chosen
    write_records(tmp_path / "pairs.jsonl.gz", pairs)
    assert read_pairs(tmp_path / "pairs.jsonl.gz") == pairs


def test_pair_to_hh_text_prompt_and_bad_records():
    pair = PairRecord(prompt="hi there", chosen="hello", rejected="go away")
    assert pair_to_hh(pair) == {"chosen": "\n\nHuman: hi there\n\nAssistant: hello",
                                "rejected": "\n\nHuman: hi there\n\nAssistant: go away"}
    with pytest.raises(DataError, match=r"^f.jsonl:4: field 'rejected': is missing or not a string"):
        hh_to_pair({"chosen": "\n\nHuman: a\n\nAssistant: b"}, "f.jsonl", 4)
    with pytest.raises(DataError, match=r"^f.jsonl:5: field 'chosen': no '\\n\\nHuman:'"):
        hh_to_pair({"chosen": "no turns here", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "f.jsonl", 5)
    with pytest.raises(DataError, match=r"^f.jsonl:6: field 'rejected': the transcript differs from 'chosen'"):
        hh_to_pair({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: c"},
                   "f.jsonl", 6)
    with pytest.raises(DataError, match=r"^f.jsonl:7: field 'rejected': transcript does not end with an Assistant"):
        hh_to_pair({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a"}, "f.jsonl", 7)
