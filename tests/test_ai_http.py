"""The OpenAI-compatible HTTP backend against a small server started on loopback in the test:
scoring by hand, retries on 429/500, timeout, malformed reply, no logprobs, the chat API, the CLI."""

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlhaif.errors import RlhaifError
from rlhaif.feedback.ai.backends import OpenAIBackend, Query

# Fake model: every token has log-probability -1.0 except "A" (-0.2) and "B" (-1.7).
LOGPROB = {"A": -0.2, "B": -1.7}


def tokenize(text):
    return re.findall(r"\s*[A-Za-z']+|\s*[^\sA-Za-z']", text)


def completion_choice(i, text):
    toks = tokenize(text) + ["<gen>"]  # max_tokens=1: one generated token after the echoed prompt
    offsets, pos = [], 0
    for t in toks[:-1]:
        offsets.append(pos)
        pos += len(t)
    offsets.append(len(text))
    lps = [None] + [LOGPROB.get(t.strip(), -1.0) for t in toks[1:]]
    return {"index": i, "text": text + "<gen>",
            "logprobs": {"tokens": toks, "token_logprobs": lps, "text_offset": offsets}}


class Server:
    def __init__(self):
        self.script, self.requests, self.lock = [], [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, body))
                    action = server.script.pop(0) if server.script else ("ok",)
                kind = action[0]
                if kind == "status":
                    return self._send(action[1], b'{"error": "busy"}')
                if kind == "sleep":
                    time.sleep(action[1])
                    return self._send(200, b"{}")
                if kind == "raw":
                    return self._send(200, action[1])
                if kind == "json":
                    return self._send(200, json.dumps(action[1]).encode())
                if self.path.endswith("/chat/completions"):
                    top = [{"token": "(", "logprob": -0.1}, {"token": "A", "logprob": -0.3},
                           {"token": " B", "logprob": -1.1}, {"token": "x", "logprob": -4.0}]
                    reply = {"choices": [{"index": 0, "message": {"content": "(A)"}, "logprobs": {"content": [
                        {"token": "(", "logprob": -0.1, "top_logprobs": [{"token": "(", "logprob": -0.1}]},
                        {"token": "A", "logprob": -0.3, "top_logprobs": top[1:]}]}}]}
                else:
                    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                    reply = {"choices": [completion_choice(i, p) for i, p in enumerate(prompts)]}
                self._send(200, json.dumps(reply).encode())

            def _send(self, code, data):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def query():
    return Query([{"role": "user", "content": "Which is kinder?\n(A) yes\n(B) no"}], "The answer is:")


def backend(server, **kw):
    return OpenAIBackend(server.url, "fake", **{"backoff": 0.01, "timeout": 5, **kw})


def test_completions_scores_full_continuations_by_hand(server):
    (lps,) = backend(server).continuation_logprobs([query()])
    # tails after the shared " (": "A" then ")" and "B" then ")"; the generated token is ignored
    assert lps == pytest.approx([-0.2 + -1.0, -1.7 + -1.0])
    path, body = server.requests[0]
    assert path == "/v1/completions" and body["echo"] is True and body["logprobs"] >= 1
    assert body["prompt"][0].endswith("Assistant: The answer is: (A)")


def test_retries_on_429_and_500_then_succeeds(server):
    server.script = [("status", 429), ("status", 500), ("status", 503)]
    (lps,) = backend(server, max_retries=3).continuation_logprobs([query()])
    assert lps == pytest.approx([-1.2, -2.7]) and len(server.requests) == 4


def test_gives_up_after_max_retries_with_a_clear_message(server):
    server.script = [("status", 500)] * 10
    with pytest.raises(RlhaifError, match=r"gave up after 3 attempts.*HTTP 500"):
        backend(server, max_retries=2).continuation_logprobs([query()])
    assert len(server.requests) == 3


def test_timeout_is_retried_then_reported(server):
    server.script = [("sleep", 1.0)] * 3
    t0 = time.time()
    with pytest.raises(RlhaifError, match=r"gave up after 2 attempts.*timed out"):
        backend(server, timeout=0.2, max_retries=1).continuation_logprobs([query()])
    assert time.time() - t0 < 5


def test_timeout_then_success(server):
    server.script = [("sleep", 1.0)]
    (lps,) = backend(server, timeout=0.3, max_retries=2).continuation_logprobs([query()])
    assert lps == pytest.approx([-1.2, -2.7])


def test_client_error_is_not_retried(server):
    server.script = [("status", 400)]
    with pytest.raises(RlhaifError, match="HTTP 400"):
        backend(server).continuation_logprobs([query()])
    assert len(server.requests) == 1


@pytest.mark.parametrize("action,pattern", [
    (("raw", b"<html>oops</html>"), "malformed reply, not JSON"),
    (("json", {"id": "x"}), "malformed reply"),
    (("json", {"choices": [{"index": 0, "text": "x"}, {"index": 1, "text": "y"}]}), "returned no logprobs"),
    (("json", {"choices": [{"index": 0, "text": "x", "logprobs": None},
                           {"index": 1, "text": "y", "logprobs": None}]}), "returned no logprobs"),
])
def test_malformed_or_logprob_free_replies_are_clear_errors(server, action, pattern):
    server.script = [action]
    with pytest.raises(RlhaifError, match=pattern):
        backend(server).continuation_logprobs([query()])


def test_chat_api_reads_option_letters_from_top_logprobs(server):
    (lps,) = backend(server, api="chat").continuation_logprobs([query()])
    assert lps == pytest.approx([-0.3, -1.1])
    assert server.requests[0][0] == "/v1/chat/completions" and server.requests[0][1]["logprobs"] is True
    server.script = [("json", {"choices": [{"index": 0, "message": {"content": "A"}}]})]
    with pytest.raises(RlhaifError, match="no logprobs"):
        backend(server, api="chat").continuation_logprobs([query()])


def test_concurrency_and_rate_limit(server):
    b = backend(server, concurrency=3, requests_per_second=50)
    t0 = time.time()
    out = b.continuation_logprobs([query() for _ in range(6)])
    assert len(out) == 6 and all(o == pytest.approx([-1.2, -2.7]) for o in out)
    assert time.time() - t0 >= 5 / 50 * 0.9  # six request starts spaced by at least 1/50 s


def test_cli_ai_label_against_the_endpoint_then_cache(server, tmp_path):
    comp = tmp_path / "completions.jsonl"
    comp.write_text("".join(json.dumps({"prompt_id": "q", "prompt": "hi", "response": r, "index": i}) + "\n"
                            for i, r in enumerate(["hello", "go away"])))
    cmd = [sys.executable, "-m", "rlhaif.cli", "feedback", "ai-label", "-i", str(comp), "-o", str(tmp_path / "ai"),
           "--api", "completions", "--base-url", server.url, "--judge-model", "fake"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    pair = json.loads((tmp_path / "ai" / "pairs.jsonl").read_text())
    # The fake model always prefers "(A)": P(A) = σ(-1.2 - -2.7) in both orders, so the debiased label is 0.5.
    p_a = 1 / (1 + math.exp(-1.5))
    assert pair["p_orders"] == pytest.approx([p_a, p_a]) and pair["p"] == pytest.approx(0.5)
    assert pair["source"].startswith("ai:fake:")
    n = len(server.requests)
    assert n == 2
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and len(server.requests) == n  # cached: no new request
    assert json.loads(res.stdout[res.stdout.index("{"):])["cache_hits"] == 1
