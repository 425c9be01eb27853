"""The feedback store and app: SQLite and PostgreSQL, migrations, idempotent submissions, isolation,
concurrency on loopback, and export -> `rlhaif reward train`."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.schemas import JudgmentIn
from rlhaif.feedback.human.store import NotFound, Store

PG = os.environ.get("RLHAIF_TEST_POSTGRES_URL")


def _completions(n_prompts=3, k=3, evil=False):
    return [CompletionRecord(prompt_id=f"p{i}", prompt=f"question {i}", model=f"m{j}", index=j,
                             response=f"answer {j} to {i}" + (" <script>alert(1)</script>" if evil else ""))
            for i in range(n_prompts) for j in range(k)]


@pytest.fixture
def pg_url():
    if not PG:
        pytest.skip("RLHAIF_TEST_POSTGRES_URL is not set (scripts/test.sh starts a throwaway PostgreSQL and sets it)")
    import psycopg

    name = "rlhaif_t_" + uuid.uuid4().hex[:10]
    base = PG.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """The store on each backend: a SQLite file, and a fresh database on the test PostgreSQL server."""
    return str(tmp_path / "f.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_store_roundtrip(db_url):
    url = db_url
    store = Store(url)
    store.migrate()
    assert store.revision() == "0005"
    t1, t2 = store.add_annotator("alice"), store.add_annotator("bob")
    store.create_campaign("c", "pairwise", overlap=2, guidelines="Pick the *helpful* one.")
    assert store.import_completions("c", _completions()) == 6  # 3 prompts x (3-1) consecutive pairs
    assert store.import_completions("c", _completions()) == 0  # importing twice adds nothing
    alice, bob = store.annotator_by_token(t1), store.annotator_by_token(t2)
    assert store.annotator_by_token("wrong") is None
    aid = store.next_assignment(alice.id)
    view = store.task_view(aid, alice.id)
    assert "model" not in json.dumps(view) or all("m0" not in r for r in view["responses"])
    first = store.submit(alice.id, JudgmentIn(client_id="alice-0001", assignment_id=aid, value={"choice": "A"}))
    again = store.submit(alice.id, JudgmentIn(client_id="alice-0001", assignment_id=aid, value={"choice": "A"}))
    assert first.created and not again.created and again.judgment_id == first.judgment_id
    edit = store.submit(alice.id, JudgmentIn(client_id="alice-0002", assignment_id=aid, value={"choice": "B", "strength": 2}))
    assert edit.version == 2
    assert store.count_judgments() == 2  # history kept
    latest = store.latest_judgments("c")
    assert len(latest) == 1 and latest[0]["version"] == 2 and latest[0]["value"]["strength"] == 2
    with pytest.raises(NotFound):  # bob can neither read nor label alice's assignment
        store.task_view(aid, bob.id)
    with pytest.raises(NotFound):
        store.submit(bob.id, JudgmentIn(client_id="bob-000001", assignment_id=aid, value={"choice": "A"}))
    assert store.my_judgments(bob.id) == []
    store.close()


def test_sqlite_store_is_wal_durable_with_foreign_keys(tmp_path):
    store = Store(str(tmp_path / "f.db"))
    store.migrate()
    assert sqlite3.connect(tmp_path / "f.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # in the file
    with store.engine.connect() as conn:  # per connection: every connection of the store sets them
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: a commit survives a crash
    store.close()


def test_migration_keeps_labels(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text

    from rlhaif.feedback.human.models import Base

    store = Store(db_url)
    store.migrate("0001")  # a store made by the first release, with a label in it
    now = "2026-01-01 00:00:00"
    rows = [
        ("campaigns (id, name, kind, overlap, guidelines, guideline_version, created_at)",
         dict(id=1, name="old", kind="pairwise", overlap=1, guidelines="g", guideline_version=1, created_at=now)),
        ("annotators (id, name, token_hash, is_admin, created_at)",
         dict(id=1, name="ann", token_hash="0" * 64, is_admin=False, created_at=now)),
        ("prompts (id, campaign_id, external_id, prompt)", dict(id=1, campaign_id=1, external_id="p1", prompt='"hi"')),
        ("responses (id, prompt_id, text, model, idx)", dict(id=1, prompt_id=1, text="r one", model="m1", idx=0)),
        ("responses (id, prompt_id, text, model, idx)", dict(id=2, prompt_id=1, text="r two", model="m2", idx=1)),
        ("tasks (id, campaign_id, prompt_id, kind, response_ids)",
         dict(id=1, campaign_id=1, prompt_id=1, kind="pairwise", response_ids="[1, 2]")),
        ("assignments (id, task_id, annotator_id, display_order, status)",
         dict(id=1, task_id=1, annotator_id=1, display_order="[2, 1]", status="done")),
        ("judgments (id, client_id, assignment_id, task_id, annotator_id, version, value, displayed_order, "
         "guideline_version, duration_ms, created_at)",
         dict(id=1, client_id="cid-00001", assignment_id=1, task_id=1, annotator_id=1, version=1,
              value='{"choice": "win", "winner": 2, "strength": null}', displayed_order="[2, 1]",
              guideline_version=1, duration_ms=900, created_at=now)),
    ]
    with store.engine.begin() as conn:
        for table, row in rows:
            conn.execute(text(f"INSERT INTO {table} VALUES ({', '.join(':' + k for k in row)})"), row)
    assert store.revision() == "0001"
    store.migrate()
    assert store.revision() == "0005"
    got = store.latest_judgments()
    assert len(got) == 1 and got[0]["value"]["winner"] == 2 and got[0]["annotator"] == "ann"
    assert got[0]["duration_ms"] == 900 and store.client_ids() == ["cid-00001"]
    store.set_gold(1, {"choice": "win", "winner": 2, "strength": None})  # the new column works
    assert store.gold()[0]["value"]["winner"] == 2
    with store.engine.connect() as conn:  # the ORM classes match the head revision exactly
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    store.close()


def test_server_does_not_import_torch():
    code = ("import sys; import rlhaif.feedback.human.app, rlhaif.feedback.human.report, rlhaif.cli.feedback; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_concurrent_annotators_with_retries_store_each_label_once(db_url, live_server):
    import httpx

    from rlhaif.feedback.human.app import Settings, create_app

    db = db_url
    store = Store(db)
    store.migrate()
    tokens = [store.add_annotator(f"a{i}") for i in range(8)]
    store.create_campaign("c", "pairwise", overlap=8)
    store.import_completions("c", _completions(n_prompts=3, k=2))  # 3 tasks, each to all 8 annotators
    url = live_server(create_app(Settings(db=db)))
    acked: list[str] = []
    lock = threading.Lock()

    def annotate(token):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as c:
            while (nxt := c.get("/api/next").json()["assignment"]) is not None:
                body = {"client_id": uuid.uuid4().hex, "assignment_id": nxt["assignment_id"], "value": {"choice": "A"}}
                with ThreadPoolExecutor(3) as ex:  # the same post sent three times at once (a retrying client)
                    rs = list(ex.map(lambda _: c.post("/api/judgments", json=body), range(3)))
                assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
                assert len({r.json()["judgment_id"] for r in rs}) == 1
                assert sum(r.json()["created"] for r in rs) == 1
                with lock:
                    acked.append(body["client_id"])

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(annotate, tokens))
    stored = store.client_ids()
    assert len(acked) == 24 and sorted(stored) == sorted(acked)  # every acknowledged label exactly once
    store.close()


def cli(*args) -> int:
    """Run `rlhaif ...` in this process; returns the exit code."""
    from rlhaif.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return e.code
    return 0


def test_cli_export_trains_reward_model(tmp_path):
    from rlhaif.data.io import read_records, write_records
    from rlhaif.data.records import PairRecord
    from rlhaif.models.tiny import save_tiny

    db = str(tmp_path / "f.db")
    comp = tmp_path / "completions.jsonl"
    write_records(comp, _completions(n_prompts=4, k=3))
    (tmp_path / "g.md").write_text("# Rank them\nBest first.")

    assert cli("feedback", "init", "--db", db) == 0
    assert cli("feedback", "import", str(comp), "--db", db, "--campaign", "r", "--kind", "ranking",
               "--guidelines", str(tmp_path / "g.md")) == 0
    store = Store(db)
    tok = store.add_annotator("carol")
    me = store.annotator_by_token(tok)
    for aid in store.pending(me.id):
        store.submit(me.id, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=aid, value={"ranks": [2, 1, "F"]}))
    out = tmp_path / "pairs.jsonl"
    assert cli("feedback", "export", "--db", db, "-o", str(out)) == 0
    pairs = read_records(out, PairRecord)
    assert len(pairs) == 4 * 3 and all(p.source == "human:carol" for p in pairs)
    assert all(abs(p.weight - 1 / 3) < 1e-9 for p in pairs)  # 1/C(3,2) per ranking
    assert cli("feedback", "import", "missing.jsonl", "--db", db) == 2  # a clear error, exit 2
    assert cli("feedback", "export", "--db", db, "-o", str(out), "--ties", "both") == 2  # a clear error
    assert cli("feedback", "status", "--db", db) == 0
    assert cli("feedback", "report", "--db", db, "-o", str(tmp_path / "report.json")) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["judgments"] == 4 and report["progress"][0]["done"] == 4 and report["flagged"] == []
    backbone = save_tiny(tmp_path / "tiny-rm", "llama", reward=True)
    # the exported file goes to `rlhaif reward train` as it is: no conversion step
    assert cli("reward", "train", "--data", str(out), "-o", str(tmp_path / "rm"), "--backbone", str(backbone),
               "--max-steps", "1", "--batch-size", "4", "--eval-fraction", "0.25", "--max-length", "32") == 0
    assert (tmp_path / "rm" / "config.json").exists()
    store.close()


def test_cli_gold_pairs_measure_each_annotator(tmp_path):
    from rlhaif.data.io import write_records
    from rlhaif.data.records import PairRecord
    from rlhaif.feedback.human.report import build_report

    db = str(tmp_path / "f.db")
    store = Store(db)
    store.migrate()
    ids = {n: store.annotator_by_token(store.add_annotator(n)).id for n in ("good1", "good2", "contrary")}
    store.create_campaign("g", "pairwise", overlap=3)
    store.import_completions("g", _completions(n_prompts=3, k=2))  # tasks: "answer 0 to i" vs "answer 1 to i"
    gold = [PairRecord(prompt=f"question {i}", chosen=f"answer 0 to {i}", rejected=f"answer 1 to {i}")
            for i in range(2)]  # known answers for 2 of the 3 tasks
    write_records(tmp_path / "gold.jsonl", gold)
    write_records(tmp_path / "bad.jsonl", gold + [PairRecord(prompt="q", chosen="answer 0 to 0", rejected="nope")])
    assert cli("feedback", "gold", str(tmp_path / "bad.jsonl"), "--db", db, "--campaign", "g") == 2
    assert store.gold("g") == []  # all or nothing: the bad line 3 stopped it before any task was marked
    assert cli("feedback", "gold", str(tmp_path / "gold.jsonl"), "--db", db, "--campaign", "g") == 0
    assert len(store.gold("g")) == 2
    for name, aid in ids.items():
        for v in store.pending_views(aid):
            want = "answer 1" if name == "contrary" else "answer 0"
            store.submit(aid, JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=v["assignment_id"],
                                         value={"choice": "A" if v["responses"][0].startswith(want) else "B"}))
    rel = build_report(store, "g", bootstrap_rounds=0)["reliability"]
    assert rel["good1"]["gold_accuracy"] == 1.0 and rel["good1"]["gold_units"] == 2 and not rel["good1"]["flagged"]
    assert rel["contrary"]["gold_accuracy"] == 0.0 and rel["contrary"]["flagged"]
    store.close()


def test_group_commit_batches_fail_alone_and_stay_idempotent(tmp_path):
    """SQLite's group commit: concurrent submissions share transactions; a bad one (another annotator's
    assignment, a bad value) fails alone, concurrent duplicates of a client id are stored once."""
    from rlhaif.feedback.human.store import Conflict

    store = Store(str(tmp_path / "g.db"))
    store.migrate()
    ann = [store.annotator_by_token(store.add_annotator(n)).id for n in ("a", "b")]
    store.create_campaign("g", "pairwise")
    store.import_completions("g", _completions(n_prompts=20, k=2))
    mine = {a: store.pending(a) for a in ann}
    dup = uuid.uuid4().hex
    jobs = [(ann[0], JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=x, value={"choice": "A"})) for x in mine[ann[0]]]
    jobs += [(ann[1], JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=mine[ann[0]][0], value={"choice": "A"}))]
    jobs += [(ann[1], JudgmentIn(client_id=uuid.uuid4().hex, assignment_id=mine[ann[1]][0], value={"choice": "Q"}))]
    jobs += [(ann[1], JudgmentIn(client_id=dup, assignment_id=mine[ann[1]][1], value={"choice": "B"}))] * 8

    def run(job):
        try:
            return store.submit(*job)
        except Exception as e:  # noqa: BLE001
            return e

    with ThreadPoolExecutor(16) as ex:
        out = list(ex.map(run, jobs))
    n = len(mine[ann[0]])
    assert all(o.created for o in out[:n])
    assert isinstance(out[n], NotFound) and "for you" in str(out[n])
    assert isinstance(out[n + 1], ValueError) and not isinstance(out[n + 1], Conflict)
    dups = out[n + 2:]
    assert [o.created for o in dups].count(True) == 1 and all(o.judgment_id == dups[0].judgment_id for o in dups)
    assert store.count_judgments() == n + 1
    store.close()


def test_cli_revoke_rotate_remove(tmp_path, capsys):
    db = str(tmp_path / "f.db")
    assert cli("feedback", "add-annotator", "dora", "--db", db) == 0
    old = capsys.readouterr().out.strip()
    store = Store(db)
    assert store.annotator_by_token(old) is not None
    assert cli("feedback", "rotate-token", "dora", "--db", db) == 0
    new = capsys.readouterr().out.strip()
    assert store.annotator_by_token(old) is None and store.annotator_by_token(new).name == "dora"
    assert cli("feedback", "revoke", "dora", "--db", db) == 0
    assert "token revoked" in capsys.readouterr().out and store.annotator_by_token(new) is None
    assert cli("feedback", "remove-annotator", "dora", "--db", db) == 0
    assert "removed" in capsys.readouterr().out
    assert cli("feedback", "rotate-token", "dora", "--db", db) != 0  # removed: add a new annotator instead
    assert cli("feedback", "revoke", "nobody", "--db", db) != 0
    store.close()


def test_cli_token_file_is_owner_only_and_the_token_is_not_printed(tmp_path, capsys):
    db = str(tmp_path / "f.db")
    old = os.umask(0o022)  # the usual umask, under which `> alice.token` gives 0644
    try:
        for cmd in (["add-annotator", "alice"], ["rotate-token", "alice"]):
            tok = tmp_path / "alice.token"
            assert cli("feedback", *cmd, "--db", db, "--token-file", str(tok)) == 0
            out = capsys.readouterr().out
            assert stat.S_IMODE(tok.stat().st_mode) == 0o600
            token = tok.read_text().strip()
            assert token and token not in out and str(tok) in out
            store = Store(db)
            assert store.annotator_by_token(token).name == "alice"
            store.close()
    finally:
        os.umask(old)


def test_cli_init_tightens_an_existing_store_to_owner_only(tmp_path, capsys):
    db = tmp_path / "f.db"
    sqlite3.connect(db).close()  # a store file made 0644 earlier (by another tool, or an older version)
    db.chmod(0o644)
    assert cli("feedback", "init", "--db", str(db)) == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for f in (tmp_path / "f.db-wal", tmp_path / "f.db-shm"):
        assert not f.exists() or stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert "0600" in capsys.readouterr().out  # and says so
