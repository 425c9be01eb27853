"""Load benchmark of the annotation server on loopback: N concurrent annotators submit pairwise labels
through the JSON API (judgments/s, p50/p95 latency of a submission). Then the commit-before-answer and
idempotent-retry check, repeated: the server (all its workers) is killed with SIGKILL at a random moment
*during* the load, restarted, every label it acknowledged must be in the store, and the clients retry their
unanswered posts with the same client ids: each must be stored exactly once (no assignment gets a second
version). SIGKILL leaves the kernel's page cache intact, so this does not test the flush to disk; that is
tests/test_feedback_durability.py (strace).

    python benchmarks/bench_feedback_load.py --annotators 50 --per-annotator 20 --repeats 3 --kill-rounds 10 \\
        [--db postgresql://... --workers 4]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APP = "rlhaif.feedback.human.app:app_from_env"


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in the server's process group (Linux /proc)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def start_server(db: str, port: int, workers: int) -> subprocess.Popen:
    """uvicorn with ``workers`` processes, in its own process group (so SIGKILL reaches every worker)."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", APP, "--host",
           "127.0.0.1", "--port", str(port), "--log-level", "error", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env={**os.environ, "RLHAIF_FEEDBACK_DB": db}, start_new_session=True)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def load(clients: dict[str, httpx.Client], per: int, stop: threading.Event | None = None, progress=None):
    """Each annotator labels up to ``per`` tasks; returns (acked ids, latencies, unacked posts, seconds).
    Clients are made beforehand (building 50 clients would otherwise be timed too)."""
    acked, lat, unacked = [], [], []
    lock = threading.Lock()

    def one(token: str) -> None:
        c = clients[token]
        for _ in range(per):
            if stop is not None and stop.is_set():
                return
            try:
                nxt = c.get("/api/next").json()["assignment"]
            except (httpx.HTTPError, ValueError):
                return
            if nxt is None:
                return
            body = {"client_id": uuid.uuid4().hex, "assignment_id": nxt["assignment_id"], "value": {"choice": "A"}}
            t0 = time.perf_counter()
            try:
                r = c.post("/api/judgments", json=body)
                r.raise_for_status()
            except httpx.HTTPError:
                with lock:
                    unacked.append((token, body))
                return
            with lock:
                lat.append(time.perf_counter() - t0)
                acked.append(body["client_id"])
                if progress is not None:
                    progress[0] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as ex:
        list(ex.map(one, list(clients)))
    return acked, lat, unacked, time.perf_counter() - t0


def setup(db: str, n: int, tasks: int) -> list[str]:
    store = Store(db)
    store.migrate()
    tokens = [store.add_annotator(f"load{i}-{uuid.uuid4().hex[:6]}") for i in range(n)]
    camp = f"load-{uuid.uuid4().hex[:6]}"
    store.create_campaign(camp, "pairwise", overlap=1)
    recs = [CompletionRecord(prompt_id=f"p{i}", prompt=f"question {i}", response=f"answer {j} to question {i}",
                             model=f"m{j}", index=j) for i in range(tasks) for j in range(2)]
    store.import_completions(camp, recs)
    store.close()
    return tokens


def kill_round(db, port, workers, server, clients, per, at):
    """Load, SIGKILL at ``at`` seconds (if the load is still running), restart, check, retry. Returns
    (server, row) where row = dict of counts, or None when the load ended before the kill moment."""
    stop, result, progress = threading.Event(), {}, [0]
    th = threading.Thread(target=lambda: result.update(zip(("acked", "lat", "unacked", "secs"),
                                                           load(clients, per, stop, progress))))
    th.start()
    time.sleep(at)
    running = th.is_alive()
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    th.join()
    server = start_server(db, port, workers)
    if not running:
        return server, None
    store = Store(db)
    stored = set(store.client_ids())
    missing = sum(c not in stored for c in result["acked"])
    created = {True: 0, False: 0}
    for token, body in result["unacked"]:
        r = httpx.post(f"http://127.0.0.1:{port}/api/judgments", json=body,
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        r.raise_for_status()
        created[r.json()["created"]] += 1
    ids = set(store.client_ids())
    lost = sum(c not in ids for c in result["acked"] + [b["client_id"] for _, b in result["unacked"]])
    twice = sum(j["version"] > 1 for j in store.latest_judgments())
    store.close()
    return server, {"at": at, "acked": len(result["acked"]), "missing": missing, "unanswered": len(result["unacked"]),
                    "committed_unanswered": created[False], "new_on_retry": created[True], "lost": lost,
                    "twice": twice}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--per-annotator", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kill-rounds", type=int, default=10, help="SIGKILL rounds at random moments during load")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default=None, help="store URL (default: a SQLite file in a temp dir)")
    ap.add_argument("--app", default=None, help="app factory for uvicorn --factory (to run an older version)")
    a = ap.parse_args()
    global APP
    APP = a.app or APP
    db = a.db or os.path.join(tempfile.mkdtemp(), "load.db")
    print(f"setting up {a.annotators} annotators on {db} ...", flush=True)
    tokens = setup(db, a.annotators, a.annotators * a.per_annotator * (a.repeats + a.kill_rounds + 2))
    port = free_port()
    server = start_server(db, port, a.workers)
    clients = {t: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {t}"},
                               timeout=60, limits=httpx.Limits(max_connections=1)) for t in tokens}
    rates, p95s, p50s, secs_all = [], [], [], []
    failed = False
    try:
        for rep in range(a.repeats):
            cpu0 = cpu_seconds(server.pid)
            acked, lat, unacked, secs = load(clients, a.per_annotator)
            cpu = (cpu_seconds(server.pid) - cpu0) / max(len(acked), 1) * 1000
            lat.sort()
            rates.append(len(acked) / secs)
            secs_all.append(secs)
            p50s.append(lat[len(lat) // 2] * 1000)
            p95s.append(lat[int(0.95 * (len(lat) - 1))] * 1000)
            print(f"run {rep + 1}: {len(acked)} judgments in {secs:.2f} s = {rates[-1]:.1f}/s, "
                  f"p50 {p50s[-1]:.1f} ms, p95 {p95s[-1]:.1f} ms, failed posts {len(unacked)}, "
                  f"server CPU {cpu:.1f} ms per judgment (GET /api/next + POST)", flush=True)
            failed |= bool(unacked)
        if a.repeats:
            print(f"median over {a.repeats} runs: {statistics.median(rates):.1f} judgments/s, "
                  f"p50 {statistics.median(p50s):.1f} ms, p95 {statistics.median(p95s):.1f} ms", flush=True)
        rng = random.Random(a.seed)
        span = 0.9 * (statistics.median(secs_all) if secs_all else 5.0)
        rows, skipped = [], 0
        while len(rows) < a.kill_rounds and skipped < 3 * a.kill_rounds:
            at = rng.uniform(0.05, span)
            server, row = kill_round(db, port, a.workers, server, clients, a.per_annotator, at)
            if row is None:
                skipped += 1
                continue
            rows.append(row)
            print("kill at {at:.2f} s: {acked} acknowledged, {missing} missing after restart; {unanswered} "
                  "unanswered, of which {committed_unanswered} had been committed and {new_on_retry} stored on retry; "
                  "{lost} lost, {twice} stored twice".format(**row), flush=True)
        if rows:
            for k in ("at", "acked", "unanswered", "committed_unanswered", "missing", "lost", "twice"):
                v = sorted(r[k] for r in rows)
                print(f"  {k}: min {v[0]:g}, median {statistics.median(v):g}, max {v[-1]:g}")
            print(f"{len(rows)} kill rounds ({skipped} redrawn: load over before the kill): "
                  f"{sum(r['missing'] + r['lost'] + r['twice'] for r in rows)} labels missing, lost or stored twice")
        failed |= any(r["missing"] or r["lost"] or r["twice"] for r in rows)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
