"""The AI judge against a real OpenAI-compatible server: vLLM's own, serving SmolLM2 on loopback. Its
completions-API labels must equal the local HF judge's on the same weights and the same plain transcript
(within 1e-4 in P(A), each order), the cache must serve a rerun, and a server error must be retried.

Needs a running server (benchmarks/judge_real_server.py says how to start it), named by
RLHAIF_JUDGE_SERVER=http://127.0.0.1:8011/v1 (served model name in RLHAIF_JUDGE_SERVED, default smollm2;
its weights in RLHAIF_JUDGE_MODEL_DIR, default the cached SmolLM2 folder); skipped without it."""

import json
import os
from pathlib import Path

import pytest

SERVER = os.environ.get("RLHAIF_JUDGE_SERVER")
pytestmark = pytest.mark.skipif(not SERVER, reason="RLHAIF_JUDGE_SERVER (a running OpenAI-compatible server) not set")

PAIRS = Path(__file__).resolve().parents[1] / "src/rlhaif/assets/preferences/demo_pairs.jsonl"
TOL = 1e-4


def orders(out: Path) -> list[list[float]]:
    return [json.loads(l)["p_orders"] for l in (out / "pairs.jsonl").read_text().splitlines()]


def test_completions_endpoint_agrees_with_local_judge_and_caches(tmp_path):
    from rlhaif.feedback.ai.backends import HFBackend, OpenAIBackend
    from rlhaif.feedback.ai.judge import AILabelConfig, run_ai_label
    from rlhaif.models.loading import load_causal_lm

    served = os.environ.get("RLHAIF_JUDGE_SERVED", "smollm2")
    folder = os.environ.get("RLHAIF_JUDGE_MODEL_DIR",
                            str(Path.home() / ".cache/rlhaif/models/smollm2-135m-instruct"))
    cfg = dict(input=str(PAIRS), limit=4, judge_model=served)
    remote = OpenAIBackend(SERVER, served, api="completions", concurrency=2)
    res = run_ai_label(AILabelConfig(**cfg, output_dir=str(tmp_path / "remote")), backend=remote)
    assert res.judged == 4 and remote.requests_made == 8  # both orders of each pair
    lm, tok = load_causal_lm(folder)
    run_ai_label(AILabelConfig(**cfg, output_dir=str(tmp_path / "local")),
                 backend=HFBackend(lm, tok, name=served, use_chat_template=False))
    for r, l in zip(orders(tmp_path / "remote"), orders(tmp_path / "local")):
        assert r == pytest.approx(l, abs=TOL)
    again = OpenAIBackend(SERVER, served, api="completions")
    res = run_ai_label(AILabelConfig(**cfg, output_dir=str(tmp_path / "remote")), backend=again)
    assert res.cache_hits == 4 and again.requests_made == 0


def test_chat_endpoint_returns_option_logprobs(tmp_path):
    from rlhaif.feedback.ai.backends import OpenAIBackend, Query

    served = os.environ.get("RLHAIF_JUDGE_SERVED", "smollm2")
    b = OpenAIBackend(SERVER, served, api="chat")
    [lps] = b.continuation_logprobs([Query([{"role": "user", "content": "Which is a colour? (A) red (B) seven"}],
                                           "The answer is:")])
    assert len(lps) == 2 and all(x <= 0 for x in lps)
