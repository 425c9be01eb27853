"""Records: validation and the one-line error for each bad input (file, line, field)."""

import json

import pytest

from rlhaif.data.io import read_records
from rlhaif.data.records import (CompletionRecord, DemoRecord, Message, PairRecord, PromptRecord, as_messages,
                                 prompt_text)
from rlhaif.errors import DataError


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


GOOD = {"prompt": "hello", "chosen": "yes", "rejected": "no"}


@pytest.mark.parametrize("bad, field, message", [
    ({"prompt": "hello", "chosen": "yes"}, "rejected", "is missing"),
    ({**GOOD, "prompt": [{"role": "human", "content": "hi"}]}, "prompt.0.role",
     "Input should be 'system', 'user' or 'assistant', got 'human'"),
    ({**GOOD, "rejected": "   "}, "rejected", "rejected must be a non-empty string"),
    ({**GOOD, "chosen": ""}, "chosen", "chosen must be a non-empty string"),
    ({**GOOD, "p": 1.5}, "p", "p must lie in [0, 1] (the probability that chosen is preferred), got 1.5"),
    ({**GOOD, "p": -0.1}, "p", "p must lie in [0, 1] (the probability that chosen is preferred), got -0.1"),
    ({**GOOD, "weight": -1}, "weight", "weight must be >= 0, got -1.0"),
    ({**GOOD, "prompt": 3}, "prompt", "must be text or a list of {role, content} messages, got int"),
    ({**GOOD, "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "prompt",
     "a prompt's last message must not be from the assistant"),
    ({**GOOD, "prompt": [{"role": "user"}]}, "prompt.0.content", "is missing"),
])
def test_pair_bad_input_names_file_line_field(tmp_path, bad, field, message):
    path = _write(tmp_path, "pairs.jsonl", [GOOD, GOOD, bad])
    with pytest.raises(DataError) as e:
        read_records(path, PairRecord)
    assert str(e.value) == f"{path}:3: field '{field}': {message}"
    assert (e.value.line, e.value.field) == (3, field)


@pytest.mark.parametrize("bad, expected", [
    ({"prompt": "hi", "response": ""}, "field 'response': response must be a non-empty string"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
     "field 'messages': the last assistant message must not be empty"),
    ({"messages": [{"role": "user", "content": "a"}]},
     "field 'messages': messages must end with an assistant turn (the response to learn)"),
    ({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "field 'messages.0.role': Input should be 'system', 'user' or 'assistant', got 'robot'"),
    ({"prompt": "hi"}, "'response' is missing: give either 'prompt' and 'response', or 'messages'"),
])
def test_demo_bad_input(tmp_path, bad, expected):
    path = _write(tmp_path, "demos.jsonl", [{"prompt": "a", "response": "b"}, bad])
    with pytest.raises(DataError) as e:
        read_records(path, DemoRecord)
    assert str(e.value) == f"{path}:2: {expected}"


def test_demo_split_both_forms():
    d = DemoRecord(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                             {"role": "assistant", "content": "r"}])
    prompt, response = d.split()
    assert [m.role for m in prompt] == ["system", "user"] and response == "r"
    assert DemoRecord(prompt="p", response="r").split() == ("p", "r")


def test_prompt_helpers():
    msgs = [Message(role="user", content="hi"), Message(role="assistant", content="yo"),
            Message(role="user", content="how?")]
    assert prompt_text(msgs) == "User: hi\n\nAssistant: yo\n\nUser: how?"
    assert prompt_text("plain") == "plain"
    assert as_messages("plain") == [{"role": "user", "content": "plain"}]
    assert as_messages(msgs)[1] == {"role": "assistant", "content": "yo"}


def test_records_keep_unknown_metadata_and_defaults(tmp_path):
    path = _write(tmp_path, "p.jsonl", [{"id": "a", "prompt": "x", "kind": "red-team"}])
    (rec,) = read_records(path, PromptRecord)
    assert rec.model_dump()["kind"] == "red-team"
    pair = PairRecord(**GOOD)
    assert (pair.p, pair.weight, pair.margin, pair.source) == (1.0, 1.0, 0.0, "")
    # an empty response is a legitimate completion (the model stopped at once)
    c = CompletionRecord(prompt_id="0", prompt="x", response="")
    assert c.finished and c.index == 0


def test_message_rejects_extra_keys(tmp_path):
    path = _write(tmp_path, "p.jsonl", [{"prompt": [{"role": "user", "content": "a", "name": "bob"}]}])
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'prompt.0.name': Extra inputs are not permitted"):
        read_records(path, PromptRecord)
