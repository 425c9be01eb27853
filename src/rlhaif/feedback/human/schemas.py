"""Request and response shapes of the annotation app, and the conversion of what the annotator saw
(positions A, B, C...) into the canonical stored value (response ids).

Submitted values, by task kind (positions refer to the displayed order):

- pairwise: ``{"choice": "A"|"B"|"tie"|"both_bad", "strength": 0..3 | null}``
- ranking:  ``{"ranks": [1, 2, "F", ...]}`` one per displayed response; equal ranks are ties, "F" = fail.
  Ranks are stored dense from 1 (only their order counts): ``[3, 3, 3]`` is stored as ``[1, 1, 1]`` and
  ``[1, 3, "F", 3]`` as ``[1, 2, "F", 2]``.
- rating:   ``{"rating": 1..10}``;  thumbs: ``{"thumb": "up"|"down"}``
- aspects:  ``{"helpful": "A"|"B"|"tie", "honest": ..., "harmless": ...}``

Stored (canonical) values are documented in ``rlhaif.feedback.aggregate``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KINDS = ("pairwise", "ranking", "rating", "thumbs", "aspects")
ASPECTS = ("helpful", "honest", "harmless")
MAX_TEXT = 100_000  # characters of a prompt or a response
MAX_BODY = 64 * 1024  # bytes of a request body
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_ID = 2**31 - 1  # the largest id a table holds (INTEGER on PostgreSQL is 32-bit); larger ids are a 422
MAX_VERSIONS = 20  # versions (the first label and its edits) kept per assignment; one more is refused (409)


class InvalidValue(ValueError):
    """A submitted value that does not fit the task."""


class JudgmentIn(BaseModel):
    """One submission. ``client_id`` is made by the client; a retry with the same id is stored once."""

    model_config = ConfigDict(extra="forbid")
    client_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    assignment_id: int = Field(strict=True, ge=1, le=MAX_ID)  # strict: a JSON integer (not true, "1" or 1.0)
    value: dict[str, Any]
    duration_ms: int | None = Field(default=None, strict=True, ge=0, le=86_400_000)


class JudgmentOut(BaseModel):
    """The answer to a submission. ``value`` is in the annotator's screen positions (A, B, ...), never in
    response ids: an annotator must not learn which letter is which stored response."""

    judgment_id: int
    assignment_id: int
    version: int
    client_id: str
    created: bool  # False when this client_id was already stored (a retry)
    value: dict[str, Any]


def is_int(v: Any) -> bool:
    """A JSON integer (``true`` and ``false`` are not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def dense_ranks(ranks: list[Any]) -> list[Any]:
    """Numeric ranks renumbered 1, 2, ... in their order (ties kept); "F" stays."""
    order = {r: i for i, r in enumerate(sorted({r for r in ranks if r != "F"}), start=1)}
    return [r if r == "F" else order[r] for r in ranks]


def to_canonical(kind: str, value: dict[str, Any], shown: list[int]) -> dict[str, Any]:
    """Map a submitted value from screen positions to response ids; raise InvalidValue if it does not fit."""
    def pos(letter: Any) -> int:
        if not isinstance(letter, str) or len(letter) != 1 or LETTERS.find(letter) < 0 or LETTERS.index(letter) >= len(shown):
            raise InvalidValue(f"unknown response {letter!r}")
        return shown[LETTERS.index(letter)]

    if kind == "pairwise":
        choice, strength = value.get("choice"), value.get("strength")
        if strength is not None and (not is_int(strength) or not 0 <= strength <= 3):
            raise InvalidValue("strength must be an integer 0..3")
        if choice in ("tie", "both_bad"):
            return {"choice": choice, "winner": None, "strength": strength}
        return {"choice": "win", "winner": pos(choice), "strength": strength}
    if kind == "ranking":
        ranks = value.get("ranks")
        if not isinstance(ranks, list) or len(ranks) != len(shown):
            raise InvalidValue(f"ranks must list one rank per response ({len(shown)})")
        checked = []
        for r in ranks:
            if isinstance(r, str) and r.upper() == "F":
                checked.append("F")
            elif is_int(r) and 1 <= r <= len(shown):
                checked.append(r)
            else:
                raise InvalidValue(f"a rank must be 1..{len(shown)} or 'F', got {r!r}")
        return {"ranks": {str(rid): r for rid, r in zip(shown, dense_ranks(checked))}}
    if kind == "rating":
        r = value.get("rating")
        if not is_int(r) or not 1 <= r <= 10:
            raise InvalidValue("rating must be an integer 1..10")
        return {"rating": r}
    if kind == "thumbs":
        if value.get("thumb") not in ("up", "down"):
            raise InvalidValue("thumb must be 'up' or 'down'")
        return {"thumb": value["thumb"]}
    if kind == "aspects":
        out = {}
        for a in ASPECTS:
            v = value.get(a)
            out[a] = "tie" if v == "tie" else pos(v)
        return out
    raise InvalidValue(f"unknown task kind {kind!r}")


def to_display(kind: str, value: dict[str, Any], shown: list[int]) -> dict[str, Any]:
    """The inverse of ``to_canonical``: a stored value in this annotator's screen positions (to edit it)."""
    letter = {rid: LETTERS[i] for i, rid in enumerate(shown)}
    if kind == "pairwise":
        return {"choice": value["choice"] if value["choice"] != "win" else letter[value["winner"]],
                "strength": value.get("strength")}
    if kind == "ranking":
        return {"ranks": [value["ranks"][str(rid)] for rid in shown]}
    if kind == "aspects":
        return {a: ("tie" if v == "tie" else letter[v]) for a, v in value.items()}
    return dict(value)
