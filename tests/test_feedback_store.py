"""The feedback store and app: SQLite and PostgreSQL, migrations, idempotent submissions, isolation,
concurrency on loopback, and export -> `rlhaif reward train`."""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
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


def _roundtrip(url):
    store = Store(url)
    store.migrate()
    assert store.revision() == "0002"
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


def test_store_roundtrip_sqlite(tmp_path):
    _roundtrip(str(tmp_path / "f.db"))
    con = sqlite3.connect(tmp_path / "f.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.postgres
def test_store_roundtrip_postgres(pg_url):
    _roundtrip(pg_url)


def test_migration_keeps_labels(tmp_path):
    db = str(tmp_path / "old.db")
    store = Store(db)
    store.migrate("0001")
    con = sqlite3.connect(db)
    now = "2026-01-01 00:00:00"
    con.executescript(f"""
    INSERT INTO campaigns VALUES (1, 'old', 'pairwise', 1, 'g', 1, '{now}');
    INSERT INTO annotators VALUES (1, 'ann', '{'0' * 64}', 0, '{now}');
    INSERT INTO prompts VALUES (1, 1, 'p1', '"hi"');
    INSERT INTO responses VALUES (1, 1, 'r one', 'm1', 0), (2, 1, 'r two', 'm2', 1);
    INSERT INTO tasks VALUES (1, 1, 1, 'pairwise', '[1, 2]');
    INSERT INTO assignments VALUES (1, 1, 1, '[2, 1]', 'done');
    INSERT INTO judgments VALUES (1, 'cid-00001', 1, 1, 1, 1, '{{"choice": "win", "winner": 2, "strength": null}}',
                                  '[2, 1]', 1, 900, '{now}');
    """)
    con.commit()
    con.close()
    assert store.revision() == "0001"
    store.migrate()
    assert store.revision() == "0002"
    got = store.latest_judgments()
    assert len(got) == 1 and got[0]["value"]["winner"] == 2 and got[0]["annotator"] == "ann"
    store.set_gold(1, {"choice": "win", "winner": 2, "strength": None})  # the new column works
    assert store.gold()[0]["value"]["winner"] == 2
    store.close()


def test_server_does_not_import_torch():
    code = ("import sys; import rlhaif.feedback.human.app, rlhaif.feedback.human.report, rlhaif.cli_feedback; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_annotators_with_retries_store_each_label_once(tmp_path, backend, request):
    import httpx
    import uvicorn

    from rlhaif.feedback.human.app import Settings, create_app

    db = str(tmp_path / "f.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(db)
    store.migrate()
    tokens = [store.add_annotator(f"a{i}") for i in range(8)]
    store.create_campaign("c", "pairwise", overlap=8)
    store.import_completions("c", _completions(n_prompts=3, k=2))  # 3 tasks, each to all 8 annotators
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(db=db)), host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    acked: list[str] = []
    lock = threading.Lock()

    def annotate(token):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
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

    try:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(annotate, tokens))
    finally:
        server.should_exit = True
        th.join(timeout=10)
    stored = store.client_ids()
    assert len(acked) == 24 and sorted(stored) == sorted(acked)  # every acknowledged label exactly once
    store.close()


def test_cli_export_trains_reward_model(tmp_path):
    from rlhaif.cli import main
    from rlhaif.data.io import read_records, write_records
    from rlhaif.data.records import PairRecord
    from rlhaif.models.tiny import save_tiny
    from rlhaif.reward.train import RewardTrainConfig, run_reward_train

    db = str(tmp_path / "f.db")
    comp = tmp_path / "completions.jsonl"
    write_records(comp, _completions(n_prompts=4, k=3))
    (tmp_path / "g.md").write_text("# Rank them\nBest first.")

    def cli(*args):
        try:
            main(list(args))
        except SystemExit as e:
            return e.code
        return 0

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
    backbone = save_tiny(tmp_path / "tiny-rm", "llama", reward=True)
    res = run_reward_train(RewardTrainConfig(data=str(out), output_dir=str(tmp_path / "rm"), backbone=str(backbone),
                                             max_steps=1, batch_size=4, eval_fraction=0.25, max_length=32))
    assert (tmp_path / "rm").exists() and res is not None
    store.close()
