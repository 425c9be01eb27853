"""Converters between ``PairRecord`` and the ecosystem's preference formats.

- TRL standard:        {"prompt": str, "chosen": str, "rejected": str}
- TRL conversational:  {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}
- Anthropic hh-rlhf:   {"chosen": transcript, "rejected": transcript}, transcripts of
                       "\\n\\nHuman: ...\\n\\nAssistant: ..." sharing every turn but the last reply.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

from rlhaif.data.io import parse_record, read_jsonl, write_jsonl
from rlhaif.data.records import Message, PairRecord, UnpairedRecord, as_messages, prompt_text
from rlhaif.errors import DataError, RlhaifError

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """Split an hh-rlhf transcript into chat messages (Human -> user, Assistant -> assistant)."""
    parts = _TURN.split(text)
    # parts = [preamble, role1, text1, role2, text2, ...]
    if len(parts) < 3:
        raise ValueError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turns found")
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return msgs


def hh_to_pair(obj: dict[str, Any], path: str = "<hh>", lineno: int | None = None) -> PairRecord:
    """One hh-rlhf record -> PairRecord: prompt = the conversation up to the last ``Assistant:``,
    chosen / rejected = the two differing last replies."""
    for key in ("chosen", "rejected"):
        if not isinstance(obj.get(key), str):
            raise DataError(path, lineno, key, "is missing or not a string (expected an hh-rlhf transcript)")
    turns = {}
    for key in ("chosen", "rejected"):
        try:
            turns[key] = parse_hh_transcript(obj[key])
        except ValueError as e:
            raise DataError(path, lineno, key, str(e)) from None
        if turns[key][-1]["role"] != "assistant":
            raise DataError(path, lineno, key, "transcript does not end with an Assistant turn")
    c, r = turns["chosen"], turns["rejected"]
    # The prompt is the chosen transcript's turns before its last assistant reply.
    prompt = c[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise DataError(path, lineno, "chosen", "the turn before the last Assistant reply is not a Human turn "
                        "(a turn marker without its blank line?)")
    if r[:-1] != prompt:
        raise DataError(path, lineno, "rejected", "the transcript differs from 'chosen' before the last "
                        "Assistant reply (hh-rlhf pairs share every turn but the last)")
    chosen, rejected = c[-1]["content"], r[-1]["content"]
    if not chosen:
        raise DataError(path, lineno, "chosen", "the last Assistant reply is empty")
    if not rejected:
        raise DataError(path, lineno, "rejected", "the last Assistant reply is empty")
    return PairRecord(prompt=[Message(**m) for m in prompt], chosen=chosen, rejected=rejected,
                      p=1.0, source="hh-rlhf", id=None if lineno is None else f"hh-{lineno}")


def read_hh_rlhf(path: str | os.PathLike, limit: int | None = None, skip_invalid: bool = False) -> list[PairRecord]:
    """Read an hh-rlhf JSONL(.gz) file as PairRecords (line numbers in error messages are 1-based).

    ``skip_invalid`` drops records whose last replies are empty (a handful exist in the public data)."""
    out = []
    for lineno, obj in read_jsonl(path):
        try:
            out.append(hh_to_pair(obj, str(path), lineno))
        except DataError:
            if not skip_invalid:
                raise
        if limit is not None and len(out) >= limit:
            break
    return out


def pair_to_hh(pair: PairRecord) -> dict[str, str]:
    """PairRecord -> hh-rlhf transcripts (the soft label is lost: hh-rlhf has none)."""
    def transcript(reply: str) -> str:
        turns = as_messages(pair.prompt) + [{"role": "assistant", "content": reply}]
        return "".join(f"\n\n{'Human' if m['role'] != 'assistant' else 'Assistant'}: {m['content']}"
                       for m in turns if m["role"] != "system")
    return {"chosen": transcript(pair.chosen), "rejected": transcript(pair.rejected)}


def pair_to_trl(pair: PairRecord, conversational: bool | None = None) -> dict[str, Any]:
    """PairRecord -> TRL preference row. Conversational when the prompt is a message list (or asked)."""
    conv = (not isinstance(pair.prompt, str)) if conversational is None else conversational
    if conv:
        row = {"prompt": as_messages(pair.prompt),
               "chosen": [{"role": "assistant", "content": pair.chosen}],
               "rejected": [{"role": "assistant", "content": pair.rejected}]}
    else:
        prompt = pair.prompt
        if not isinstance(prompt, str):
            # one user turn -> its text; a longer conversation keeps who said what ("User: ...\n\nAssistant: ...")
            prompt = prompt[0].content if len(prompt) == 1 and prompt[0].role == "user" else prompt_text(prompt)
        row = {"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.margin:
        row["margin"] = pair.margin
    return row


def trl_to_pair(obj: dict[str, Any], path: str = "<trl>", lineno: int | None = None) -> PairRecord:
    """TRL preference row (standard or conversational) -> PairRecord."""
    row = dict(obj)
    for key in ("chosen", "rejected"):
        v = row.get(key)
        if isinstance(v, list):
            if len(v) != 1 or not isinstance(v[0], dict) or v[0].get("role") != "assistant":
                raise DataError(path, lineno, key, "conversational value must be a list of exactly one assistant "
                                "message, e.g. [{\"role\": \"assistant\", \"content\": \"...\"}]")
            row[key] = v[-1].get("content", "")
    if "prompt" not in row:
        raise DataError(path, lineno, "prompt", "is missing (implicit-prompt TRL data is not supported; add a 'prompt' column)")
    row.setdefault("source", "trl")
    return parse_record(PairRecord, row, path, lineno)


def read_trl(path: str | os.PathLike) -> list[PairRecord]:
    """Read a TRL preference file (standard or conversational, detected per row) as PairRecords."""
    return [trl_to_pair(obj, str(path), n) for n, obj in read_jsonl(path)]


def write_trl(path: str | os.PathLike, pairs: Iterable[PairRecord], conversational: bool | None = None) -> int:
    """Write TRL preference rows atomically (conversational when asked, or per row when None)."""
    return write_jsonl(path, (pair_to_trl(p, conversational) for p in pairs))


def write_hh(path: str | os.PathLike, pairs: Iterable[PairRecord]) -> int:
    """Write hh-rlhf transcripts atomically (p, weight and source are not representable and are dropped)."""
    return write_jsonl(path, (pair_to_hh(p) for p in pairs))


def read_pairs(path: str | os.PathLike, skip_invalid: bool = False) -> list[PairRecord]:
    """Read pairs in any supported format, detected from the first record's keys:
    rlhaif pairs.jsonl, TRL (standard / conversational), or hh-rlhf transcripts (``skip_invalid`` drops
    malformed hh-rlhf records instead of stopping at the first)."""
    kind = file_pairs_format(path)
    if kind == "hh":
        return read_hh_rlhf(path, skip_invalid=skip_invalid)
    if kind == "trl":
        return read_trl(path)
    return [parse_record(PairRecord, o, str(path), n) for n, o in read_jsonl(path)]


def pairs_format(record: dict[str, Any]) -> str:
    """The format of one preference record, from its keys: 'hh' (hh-rlhf transcripts: no prompt, chosen is
    a string with Human turns), 'trl' (TRL conversational: chosen is a message list) or 'pairs' (rlhaif
    pairs.jsonl, which also reads TRL's standard rows). The one place rlhaif decides this."""
    chosen = record.get("chosen")
    if "prompt" not in record and isinstance(chosen, str) and "\n\nHuman:" in chosen:
        return "hh"
    if isinstance(chosen, list):
        return "trl"
    return "pairs"


def file_pairs_format(path: str | os.PathLike) -> str:
    """``pairs_format`` of a file's first record (an empty file is an error)."""
    first = next(read_jsonl(path), None)
    if first is None:
        raise DataError(str(path), None, None, "the file holds no records")
    return pairs_format(first[1])


FROM_FORMATS = ("auto", "pairs", "trl", "hh")
TO_FORMATS = ("pairs", "trl", "trl-conversational", "hh")


def convert_pairs(src: str | os.PathLike, dst: str | os.PathLike, from_format: str = "auto", to_format: str = "pairs",
                  skip_invalid: bool = False) -> dict[str, int]:
    """Convert a preference file between rlhaif pairs, TRL (standard / conversational) and hh-rlhf.
    ``skip_invalid`` drops malformed hh-rlhf records instead of stopping. Returns counts."""
    from rlhaif.data.io import read_records, write_records

    if from_format not in FROM_FORMATS:
        raise DataError(str(src), None, None, f"unknown input format '{from_format}'; use one of {', '.join(FROM_FORMATS)}")
    if to_format not in TO_FORMATS:
        raise DataError(str(dst), None, None, f"unknown output format '{to_format}'; use one of {', '.join(TO_FORMATS)}")
    n_in = sum(1 for _ in read_jsonl(src))
    if from_format == "hh":
        try:
            pairs = read_hh_rlhf(src, skip_invalid=skip_invalid)
        except DataError as e:
            raise RlhaifError(f"{e} (--skip-invalid drops such records)") from None
    elif from_format == "trl":
        pairs = read_trl(src)
    elif from_format == "pairs":
        pairs = read_records(src, PairRecord)
    else:
        pairs = read_pairs(src)
    if not pairs:
        raise DataError(str(src), None, None, "no valid records to convert")
    if to_format == "pairs":
        n = write_records(dst, pairs)
    elif to_format == "hh":
        n = write_hh(dst, pairs)
    else:
        n = write_trl(dst, pairs, conversational=to_format == "trl-conversational")
    return {"read": n_in, "written": n, "skipped": n_in - len(pairs)}


# ---------------------------------------------------------------- unpaired rows (KTO)
# TRL's unpaired preference format: {"prompt": str, "completion": str, "label": bool}, or conversational with
# "prompt" a message list and "completion" a list of one assistant message.


def unpaired_to_trl(row: UnpairedRecord, conversational: bool | None = None) -> dict[str, Any]:
    """UnpairedRecord -> TRL unpaired row. Conversational when the prompt is a message list (or asked)."""
    conv = (not isinstance(row.prompt, str)) if conversational is None else conversational
    if conv:
        return {"prompt": as_messages(row.prompt), "completion": [{"role": "assistant", "content": row.completion}],
                "label": row.label}
    prompt = row.prompt
    if not isinstance(prompt, str):
        prompt = prompt[0].content if len(prompt) == 1 and prompt[0].role == "user" else prompt_text(prompt)
    return {"prompt": prompt, "completion": row.completion, "label": row.label}


def trl_to_unpaired(obj: dict[str, Any], path: str = "<trl>", lineno: int | None = None) -> UnpairedRecord:
    """TRL unpaired row (standard or conversational) -> UnpairedRecord."""
    row = dict(obj)
    v = row.get("completion")
    if isinstance(v, list):
        if len(v) != 1 or not isinstance(v[0], dict) or v[0].get("role") != "assistant":
            raise DataError(path, lineno, "completion", "conversational value must be a list of exactly one "
                            "assistant message, e.g. [{\"role\": \"assistant\", \"content\": \"...\"}]")
        row["completion"] = v[0].get("content", "")
    row.setdefault("source", "trl")
    return parse_record(UnpairedRecord, row, path, lineno)


def pair_to_unpaired(pair: PairRecord) -> list[UnpairedRecord]:
    """A hard-labelled pair as two unpaired rows (chosen desirable, rejected undesirable), as the KTO paper
    does with preference data; a tie (p = 0.5) says neither response is good or bad and gives none, and a
    pair with p < 0.5 is read the other way round."""
    if pair.p == 0.5:
        return []
    good, bad = (pair.chosen, pair.rejected) if pair.p > 0.5 else (pair.rejected, pair.chosen)
    src = pair.source or "pair"
    return [UnpairedRecord(prompt=pair.prompt, completion=good, label=True, weight=pair.weight, source=src),
            UnpairedRecord(prompt=pair.prompt, completion=bad, label=False, weight=pair.weight, source=src)]


def read_unpaired(path: str | os.PathLike) -> list[UnpairedRecord]:
    """Read unpaired rows: rlhaif / TRL unpaired rows (detected by a ``completion`` key in the first row),
    or any preference file ``read_pairs`` reads, split by ``pair_to_unpaired``."""
    first = next(read_jsonl(path), None)
    if first is None:
        raise DataError(str(path), None, None, "the file holds no records")
    if "completion" in first[1]:
        return [trl_to_unpaired(o, str(path), n) for n, o in read_jsonl(path)]
    return [row for pair in read_pairs(path) for row in pair_to_unpaired(pair)]


def write_trl_unpaired(path: str | os.PathLike, rows: Iterable[UnpairedRecord],
                       conversational: bool | None = None) -> int:
    """Write TRL unpaired rows atomically (weight and source are dropped: TRL's format has neither)."""
    return write_jsonl(path, (unpaired_to_trl(r, conversational) for r in rows))
