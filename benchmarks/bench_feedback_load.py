"""Load benchmark of the annotation server on loopback: N concurrent annotators submit pairwise labels
through the JSON API (judgments/s, p50/p95 latency of a submission), then the server is killed with SIGKILL
mid-load, restarted, and every label it acknowledged is checked to be in the store. Clients then retry
their unacknowledged posts with the same client ids; each label must be stored exactly once.

    python benchmarks/bench_feedback_load.py --annotators 50 --per-annotator 20 --repeats 3 [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import os
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


def start_server(db: str, port: int) -> subprocess.Popen:
    code = ("import sys, uvicorn; from rlhaif.feedback.human.app import Settings, create_app; "
            f"uvicorn.run(create_app(Settings(db={db!r})), host='127.0.0.1', port={port}, log_level='error')")
    proc = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def load(clients: dict[str, httpx.Client], per: int, stop: threading.Event | None = None):
    """Each annotator labels up to ``per`` tasks; returns (acked ids, latencies, unacked posts, seconds).
    Clients are made beforehand: building 50 TLS contexts would otherwise be timed too."""
    tokens = list(clients)
    acked, lat, unacked = [], [], []
    lock = threading.Lock()

    def one(token: str) -> None:
        c = clients[token]
        if True:
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

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(tokens)) as ex:
        list(ex.map(one, tokens))
    return acked, lat, unacked, time.perf_counter() - t0


def setup(db: str, n: int, per: int, repeats: int) -> list[str]:
    store = Store(db)
    store.migrate()
    tokens = [store.add_annotator(f"load{i}-{uuid.uuid4().hex[:6]}") for i in range(n)]
    store.create_campaign(f"load-{uuid.uuid4().hex[:6]}", "pairwise", overlap=1)
    camp = store.campaigns()[-1].name
    tasks = n * per * (repeats + 2)
    recs = [CompletionRecord(prompt_id=f"p{i}", prompt=f"question {i}", response=f"answer {j} to question {i}",
                             model=f"m{j}", index=j) for i in range(tasks) for j in range(2)]
    store.import_completions(camp, recs)
    store.close()
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--per-annotator", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kill-after", type=float, default=4.0, help="seconds of load before SIGKILL")
    ap.add_argument("--db", default=None, help="store URL (default: a SQLite file in a temp dir)")
    a = ap.parse_args()
    db = a.db or os.path.join(tempfile.mkdtemp(), "load.db")
    print(f"setting up {a.annotators} annotators on {db} ...", flush=True)
    tokens = setup(db, a.annotators, a.per_annotator, a.repeats)
    port = free_port()
    server = start_server(db, port)
    clients = {t: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {t}"},
                               timeout=30, limits=httpx.Limits(max_connections=1)) for t in tokens}
    rates, p95s, p50s = [], [], []
    try:
        for rep in range(a.repeats):
            acked, lat, unacked, secs = load(clients, a.per_annotator)
            lat.sort()
            rates.append(len(acked) / secs)
            p50s.append(lat[len(lat) // 2] * 1000)
            p95s.append(lat[int(0.95 * (len(lat) - 1))] * 1000)
            print(f"run {rep + 1}: {len(acked)} judgments in {secs:.2f} s = {rates[-1]:.1f}/s, "
                  f"p50 {p50s[-1]:.1f} ms, p95 {p95s[-1]:.1f} ms, failed posts {len(unacked)}", flush=True)
        print(f"median over {a.repeats} runs: {statistics.median(rates):.1f} judgments/s, "
              f"p50 {statistics.median(p50s):.1f} ms, p95 {statistics.median(p95s):.1f} ms")

        # crash test: SIGKILL mid-load, restart, check every acknowledged label, then retry the rest
        stop = threading.Event()
        result = {}
        th = threading.Thread(target=lambda: result.update(zip(("acked", "lat", "unacked", "secs"),
                                                               load(clients, a.per_annotator, stop))))
        th.start()
        time.sleep(a.kill_after)
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        th.join()
        server = start_server(db, port)
        store = Store(db)
        stored = set(store.client_ids())
        missing = [c for c in result["acked"] if c not in stored]
        print(f"SIGKILL after {a.kill_after:.1f} s of load: {len(result['acked'])} labels acknowledged before the "
              f"kill, {len(missing)} of them missing after restart; {len(result['unacked'])} posts unanswered")
        retried = 0
        for token, body in result["unacked"]:
            r = httpx.post(f"http://127.0.0.1:{port}/api/judgments", json=body,
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
            r.raise_for_status()
            retried += 1
        ids = store.client_ids()
        dup = len(ids) - len(set(ids))
        all_acked = result["acked"] + [b["client_id"] for _, b in result["unacked"]]
        lost = [c for c in all_acked if c not in set(ids)]
        print(f"after retrying {retried} unanswered posts: {len(lost)} labels lost, {dup} stored twice")
        store.close()
        if missing or lost or dup:
            sys.exit(1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
