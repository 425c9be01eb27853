"""JSONL (optionally gzip) readers and writers.

Readers stop at the first bad line with a ``DataError`` naming file, line and field. Writers write to a
temporary file beside the target and rename it into place, so a crash never leaves a partial file that
looks complete.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from rlhaif.errors import DataError

R = TypeVar("R", bound=BaseModel)


def _open_text(path: Path, mode: str):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) for each non-blank line; a line that is not a JSON object is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "file not found")
    with _open_text(path, "r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), lineno, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(str(path), lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def validation_error_to_data_error(path: str, lineno: int | None, err: ValidationError) -> DataError:
    """The first pydantic error as a DataError naming the field (dotted for nested fields)."""
    errors = err.errors()
    # For a union (text or messages) pydantic reports every branch; the deepest location is the real one.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = ".".join(str(x) for x in first.get("loc", ()) if not str(x).startswith("function-after"))
    # pydantic reports unions as e.g. "prompt.str" / "prompt.list[Message].0.role": keep the useful part.
    loc = loc.replace(".str", "").replace(".list[Message]", "")
    msg = first.get("msg", "invalid value")
    kind = first.get("type", "")
    if kind == "missing":
        msg = "is missing"
    elif kind == "literal_error":
        msg = f"{msg}, got {first.get('input')!r}"
    elif len({len(e.get("loc", ())) for e in errors}) == 1 and len(errors) > 1 and kind in ("string_type", "list_type"):
        # every branch of a text-or-messages union failed at the top: the value has the wrong type.
        msg = f"must be text or a list of {{role, content}} messages, got {type(first.get('input')).__name__}"
    msg = msg.removeprefix("Value error, ")
    return DataError(path, lineno, loc or None, msg)


def parse_record(model: type[R], obj: dict[str, Any], path: str = "<input>", lineno: int | None = None) -> R:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise validation_error_to_data_error(path, lineno, e) from None


def read_records(path: str | os.PathLike, model: type[R]) -> list[R]:
    """Read a JSONL file of ``model`` records; the first bad line stops with file, line and field."""
    out = []
    for lineno, obj in read_jsonl(path):
        out.append(parse_record(model, obj, str(path), lineno))
    if not out:
        raise DataError(str(path), None, None, "the file holds no records")
    return out


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it back would
    let another thread create a file under the wrong umask meanwhile)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file made by ``tempfile`` (0600, for privacy while it is written), or a folder and everything in
    it (``mkdtemp`` makes 0700; safetensors writes 0600), the mode a plain ``open`` or ``mkdir`` would (0644 /
    0755 under umask 022), before it is renamed into place: a stage's outputs all get one mode. Secrets are
    written otherwise (``feedback.human.store.write_secret``, 0600)."""
    umask = _umask()
    path = Path(path)
    for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path`` (with the mode a
    plain ``open`` gives, ``umask_mode``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask_mode(tmp)
    try:
        if path.suffix == ".gz":
            f = io.TextIOWrapper(gzip.open(tmp, "wb"), encoding="utf-8")
        else:
            f = open(tmp, mode, encoding=None if "b" in mode else "utf-8")
        with f:
            yield f
            f.flush()
            with contextlib.suppress(Exception):
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write dicts as JSONL atomically; returns the number of rows."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_records(path: str | os.PathLike, records: Iterable[BaseModel]) -> int:
    """Write pydantic records as JSONL atomically (fields left at None are omitted)."""
    return write_jsonl(path, (r.model_dump(exclude_none=True) for r in records))


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row and flush (metrics logs, resumable outputs). A torn last line is skipped on read."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an append-only log, ignoring a torn final line left by a crash mid-write."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise DataError(str(path), i + 1, None, "not valid JSON in an append-only log") from None
    return rows
