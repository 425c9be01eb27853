"""Preference pairs for the reward model: any supported file format, optionally one range of its lines.

Used by training (``reward/train.py``) and evaluation (``reward/evaluate.py``), which import it and never
each other's loop.
"""

from __future__ import annotations

from rlhaif.data.records import PairRecord
from rlhaif.errors import ConfigError, DataError


def parse_lines(spec: str | None, field: str) -> tuple[int, int] | None:
    """ "1-1500" -> (1, 1500); None -> None."""
    if spec is None:
        return None
    try:
        a, b = (int(x) for x in str(spec).split("-"))
        assert 1 <= a <= b
    except Exception:
        raise ConfigError(f"{field}: expected a 1-based line range like '1-1500', got '{spec}'") from None
    return a, b


def load_pairs(path: str, lines: tuple[int, int] | None = None) -> list[PairRecord]:
    """Pairs of any supported format (detected from the first record), optionally one range of lines.
    hh-rlhf records that do not parse (empty last reply, a turn marker without its blank line: a handful exist
    in the public data) are skipped, as ``read_hh_rlhf(skip_invalid=True)`` does."""
    from rlhaif.data.formats import hh_to_pair, pairs_format, trl_to_pair
    from rlhaif.data.io import parse_record, read_jsonl

    out: list[PairRecord] = []
    kind = None
    for lineno, obj in read_jsonl(path):
        if kind is None:
            kind = pairs_format(obj)
        if lines is not None and not lines[0] <= lineno <= lines[1]:
            continue
        if kind == "hh":
            try:
                out.append(hh_to_pair(obj, str(path), lineno))
            except DataError:  # read_hh_rlhf(skip_invalid=True) semantics: malformed public records are dropped
                pass
        elif kind == "trl":
            out.append(trl_to_pair(obj, str(path), lineno))
        else:
            out.append(parse_record(PairRecord, obj, str(path), lineno))
    if not out:
        raise DataError(str(path), None, None, "no preference pairs found" + (f" in lines {lines}" if lines else ""))
    return out
