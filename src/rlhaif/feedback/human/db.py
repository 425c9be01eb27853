"""Engines for the feedback store: SQLite (a file; WAL, synchronous=FULL, foreign keys on) or PostgreSQL.

Durability: a request commits before it answers, and SQLite's synchronous=FULL (PostgreSQL's
synchronous_commit=on, set on every connection whatever the server's default) flushes the commit to disk
(fsync/fdatasync of the WAL) before the commit returns, so an acknowledged label survives a crash of the
process and of the machine. tests/test_feedback_durability.py checks this with strace. A new SQLite file is
created 0600 (SQLite gives its -wal and -shm files the same mode). Write transactions on SQLite start with
BEGIN IMMEDIATE so two writers queue on the busy timeout instead of failing with SQLITE_BUSY when one upgrades
its read lock.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from rlhaif.errors import RlhaifError

SQLITE_SYNCHRONOUS = "FULL"  # the durability switch the strace test flips (to OFF) to show that it can fail
PG_SYNCHRONOUS_COMMIT = "on"


def normalize_url(url_or_path: str) -> str:
    """A database URL; a plain path becomes ``sqlite:///path``; ``postgresql://`` uses psycopg 3."""
    s = str(url_or_path)
    if "://" not in s:
        Path(s).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(s).expanduser().resolve()}"
    if s.startswith("postgresql://") or s.startswith("postgres://"):
        return "postgresql+psycopg://" + s.split("://", 1)[1]
    return s


def tighten_sqlite_mode(url_or_path: str) -> list[str]:
    """Make an existing SQLite store and its -wal and -shm files owner-only (0600) where they are readable or
    writable by others (a store made before files were created 0600, or by another tool); returns
    "path: 0644 -> 0600" for each file changed. PostgreSQL: nothing to do."""
    url = normalize_url(url_or_path)
    path = url.split("///", 1)[1] if url.startswith("sqlite") and "///" in url else ""
    changed = []
    for f in ([path, path + "-wal", path + "-shm"] if path and path != ":memory:" else []):
        if os.path.exists(f) and (mode := stat.S_IMODE(os.stat(f).st_mode)) & 0o077:
            os.chmod(f, 0o600)
            changed.append(f"{f}: {mode:04o} -> 0600")
    return changed


def make_engine(url_or_path: str, immediate: bool = False) -> Engine:
    url = normalize_url(url_or_path)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:" and not Path(path).exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # the store holds labels: owner only
        engine = create_engine(url, pool_size=8, max_overflow=64, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise RlhaifError("PostgreSQL needs psycopg: pip install 'rlhaif[postgres]'") from None
        engine = create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)

        @event.listens_for(engine, "connect")
        def _durable(dbapi_conn, _record) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET synchronous_commit = {PG_SYNCHRONOUS_COMMIT}")
            dbapi_conn.commit()

        return engine
    raise RlhaifError(f"unsupported database URL {url!r}: use a file path, sqlite:///... or postgresql://...")
