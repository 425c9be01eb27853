"""Durability, checked in the system calls: the annotation server runs under ``strace``, annotators submit
judgments, and for every acknowledged judgment the trace must show, in this order, a write of the judgment to
the database (SQLite: the -wal file; PostgreSQL: a pg_wal segment, written by the server's processes), an
fsync/fdatasync of that same file completed, and only then the HTTP answer carrying its client id.

SIGKILL cannot test this (the kernel's page cache survives a killed process); a missing flush shows here.
Each backend runs twice: as shipped (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on) the check
passes; with durability switched off (synchronous=OFF; synchronous_commit=off) it must find answers sent
before their flush — the test fails if it does not, so it can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.store import Store

STRACE = shutil.which("strace")
SYSCALLS = "fsync,fdatasync,write,pwrite64,pwritev,pwritev2,writev,sendto,sendmsg"
LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
DONE = re.compile(r"= (-?\d+|\?)[^<]*<(\d+\.\d+)>$")
SERVER = """import sys, uvicorn
import rlhaif.feedback.human.db as d
d.SQLITE_SYNCHRONOUS, d.PG_SYNCHRONOUS_COMMIT = sys.argv[1], sys.argv[2]
from rlhaif.feedback.human.app import Settings, create_app
uvicorn.run(create_app(Settings(db=sys.argv[3], migrate=False)), host="127.0.0.1", port=int(sys.argv[4]),
            log_level="error")
"""

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace not installed (scripts/install-dev.sh installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strace(out: Path, size: int) -> list[str]:
    return [STRACE, "-f", "-ttt", "-T", "-y", "-s", str(size), "-e", f"trace={SYSCALLS}", "-o", str(out)]


def parse(trace: Path) -> list[tuple[str, float, float, str, str]]:
    """Events of a trace as (syscall, start, end, file the fd names, the line). An interrupted call
    (``<unfinished ...>`` then ``<... resumed>``) starts at its first line and ends at its resumed line."""
    events, open_calls = [], {}
    for raw in trace.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, ts, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.startswith("<... "):
            name = rest[5:].split(" ", 1)[0]
            if (pid, name) in open_calls:
                start, text = open_calls.pop((pid, name))
                events.append((name, start, ts, _fd_path(text), text))
            continue
        name = rest.split("(", 1)[0]
        if rest.endswith("<unfinished ...>"):
            open_calls[(pid, name)] = (ts, rest)
            continue
        d = DONE.search(rest)
        if d and "(" in rest:
            events.append((name, ts, ts + float(d.group(2)), _fd_path(rest), rest))
    return events


def _fd_path(text: str) -> str:
    m = re.match(r"\w+\(\d+<([^>]*)>", text)
    return m.group(1) if m else ""


def unflushed_answers(events, acked: list[str], is_db_file) -> tuple[list[str], int]:
    """Client ids whose HTTP answer was sent before a write of the judgment to a database file followed by a
    completed fsync/fdatasync of that file; and how many acknowledged ids were found in an answer at all."""
    sends = {}
    for name, start, _, path, text in events:
        # an answer to a client, not the app's own queries to PostgreSQL (those carry the client id too)
        if (name in ("sendto", "sendmsg", "write", "writev") and path.startswith(("socket:", "TCP"))
                and "judgment_id" in text):
            for cid in acked:
                if cid in text and cid not in sends:
                    sends[cid] = start
    bad = []
    for cid, sent in sends.items():
        writes = [(start, path) for name, start, _, path, text in events
                  if name.startswith(("write", "pwrite")) and is_db_file(path) and cid in text and start < sent]
        flushed = any(name in ("fsync", "fdatasync") and sp == path and w < s and e < sent
                      for w, path in writes for name, s, e, sp, _ in events)
        if not flushed:
            bad.append(cid)
    return bad, len(sends)


def _setup_store(url: str, n_tasks: int) -> list[str]:
    store = Store(url)
    store.migrate()
    tokens = [store.add_annotator(f"a{i}") for i in range(4)]
    store.create_campaign("d", "pairwise")
    store.import_completions("d", [CompletionRecord(prompt_id=f"q{i}", prompt=f"question {i}", response=f"answer {j}",
                                                    model=f"m{j}", index=j) for i in range(n_tasks) for j in range(2)])
    store.close()
    return tokens


def _serve_and_label(cmd: list[str], port: int, tokens: list[str], per: int) -> list[str]:
    """Start the server (under strace), let each annotator submit ``per`` judgments concurrently, stop it;
    returns the acknowledged client ids."""
    import httpx

    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("the server under strace did not start")

        def label(token: str) -> list[str]:
            done = []
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                for _ in range(per):
                    a = c.get("/api/next").json()["assignment"]
                    body = {"client_id": uuid.uuid4().hex, "assignment_id": a["assignment_id"], "value": {"choice": "A"}}
                    c.post("/api/judgments", json=body).raise_for_status()
                    done.append(body["client_id"])
            return done

        with ThreadPoolExecutor(len(tokens)) as ex:
            return [cid for got in ex.map(label, tokens) for cid in got]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # to the server: strace blocks signals while it runs a command
        proc.wait(timeout=60)


def _check(bad: list[str], found: int, acked: list[str], durable: bool) -> None:
    assert found == len(acked) > 0, f"only {found} of {len(acked)} answers found in the trace: the check would be vacuous"
    if durable:
        assert bad == [], f"{len(bad)} of {len(acked)} judgments acknowledged before their fsync/fdatasync"
    else:
        assert len(bad) > len(acked) // 2, f"durability off, yet only {len(bad)} of {len(acked)} answers came early"


@pytest.mark.parametrize("durable", [True, False], ids=["shipped-FULL", "patched-OFF"])
def test_sqlite_answers_after_fsync(tmp_path, durable):
    db = tmp_path / "d.db"
    tokens = _setup_store(str(db), n_tasks=40)
    port = _free_port()
    trace = tmp_path / "trace.txt"
    cmd = _strace(trace, 8192) + [sys.executable, "-c", SERVER, "FULL" if durable else "OFF", "on", str(db), str(port)]
    acked = _serve_and_label(cmd, port, tokens, per=6)
    bad, found = unflushed_answers(parse(trace), acked, lambda p: p.startswith(str(db)))
    _check(bad, found, acked, durable)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts)
    return found[-1].parent if found else None


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [True, False], ids=["shipped-on", "patched-off"])
def test_postgres_answers_after_fdatasync(tmp_path, durable):
    """A throwaway PostgreSQL cluster runs under strace (its backends write and flush the WAL); the app runs
    under a second strace (its answers); both use the same clock."""
    pgbin = _pg_bin()
    if pgbin is None:
        pytest.skip("PostgreSQL server binaries not found (scripts/install-dev.sh installs postgresql)")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="rlhaif-pgdur-"))
    as_pg = []
    if os.getuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(pgbin / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                            "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
    pg_port, port = _free_port(), _free_port()
    pg_trace, app_trace = tmp_path / "pg.txt", tmp_path / "app.txt"
    pg = subprocess.Popen(_strace(pg_trace, 65536) + as_pg + [
        str(pgbin / "postgres"), "-D", str(root / "data"), "-c", "listen_addresses=127.0.0.1", "-p", str(pg_port),
        "-k", str(root), "-c", "max_connections=50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        for _ in range(300):
            try:
                tokens = _setup_store(url, n_tasks=40)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.2)
        else:
            raise AssertionError("the traced PostgreSQL did not start")
        cmd = _strace(app_trace, 8192) + [sys.executable, "-c", SERVER, "FULL", "on" if durable else "off", url, str(port)]
        acked = _serve_and_label(cmd, port, tokens, per=6)
    finally:
        os.killpg(pg.pid, signal.SIGINT)  # fast shutdown; strace ends with it
        pg.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    events = parse(pg_trace) + parse(app_trace)
    bad, found = unflushed_answers(events, acked, lambda p: "/pg_wal/" in p)
    _check(bad, found, acked, durable)
