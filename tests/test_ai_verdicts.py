"""Verdict mode of the AI judge, for endpoints without log-probabilities: parsing, vote shares, the switch in
'auto' mode, and the whole stage against a real OpenAI-compatible server (`transformers serve`, which ignores
`logprobs`) started on loopback with a tiny model saved by the test."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction

import pytest

from rlhaif.feedback.ai.backends import NoLogprobs, Query, parse_verdict
from rlhaif.feedback.ai.constitution import load_constitution
from rlhaif.feedback.ai.judge import AILabelConfig, judge_pairs, run_ai_label, vote_share


@pytest.mark.parametrize("text, want", [(" (A)", 0), ("The answer is (B).", 1), ("B", 1), ("A. because", 0),
                                        ("ABBA", None), ("neither", None), ("", None), ("(b)", None),
                                        ("option B, not A", 1)])
def test_parse_verdict(text, want):
    assert parse_verdict(text, ["A", "B"]) == want


def test_vote_share():
    assert vote_share(3, 1) == 0.75 and vote_share(0, 0) == 0.5 and vote_share(0, 2) == 0.0


class VotingJudge:
    """Answers 'A' to the first order's questions and 'A' twice then 'B' three times to the second's; counts
    one unparseable answer per question."""

    def continuation_logprobs(self, queries):
        raise NoLogprobs("no logprobs here")

    def verdicts(self, queries, n, temperature=1.0, max_tokens=8, seed=0):
        assert n == 5
        return [(5, 0, 1) if i % 2 == 0 else (2, 3, 1) for i, _ in enumerate(queries)]


def test_judge_pairs_in_verdict_mode_by_hand():
    pr = load_constitution().principles[0]
    (j,) = judge_pairs(VotingJudge(), [("hi", "y1", "y2", pr)], verdicts=5)
    # order 1: P(A) = 5/5; order 2 (y1 shown as B): P(A) = 2/5 → p = ½[1 + (1 − 0.4)] = 0.8
    assert (j.p_ab, j.p_ba) == (1.0, 0.4) and j.p == pytest.approx(0.8) and j.failures == 2


def test_auto_mode_switches_to_verdicts_when_the_endpoint_has_no_logprobs(tmp_path, capsys):
    comp = tmp_path / "c.jsonl"
    comp.write_text("".join(json.dumps({"prompt_id": "p", "prompt": "hi", "index": i, "response": r}) + "\n"
                            for i, r in enumerate(["one", "two"])))
    cfg = AILabelConfig(input=str(comp), output_dir=str(tmp_path / "out"), api="chat", base_url="http://x/v1")
    result = run_ai_label(cfg, backend=VotingJudge())
    assert result.judge_mode == "verdicts"
    assert result.verdicts_unparsed == 2 and result.verdicts_asked == 10
    assert "sampled verdicts" in capsys.readouterr().out
    with pytest.raises(NoLogprobs):  # asked for log-probabilities explicitly: no silent switch
        run_ai_label(cfg.model_copy(update={"judge_mode": "logprobs", "output_dir": str(tmp_path / "o2")}),
                     backend=VotingJudge())


def test_verdict_mode_needs_an_endpoint():
    with pytest.raises(ValueError, match="for endpoints"):
        AILabelConfig(input="c.jsonl", judge_mode="verdicts")


# ---------------------------------------------------------------------------------------------- real server
JUDGE_WORDS = ("(", ")", "A", "B", ".", "yes", "no", "good", "bad", "answer", "the", "is", "cat", "dog")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`transformers serve` on loopback with a tiny Llama whose vocabulary holds the option letters."""
    pytest.importorskip("openai", reason="transformers serve needs openai (the dev extras install it)")
    from rlhaif.models.tiny import WORDS, make_tiny_causal_lm, make_tokenizer

    folder = tmp_path_factory.mktemp("served") / "tiny-judge"
    model, tok = make_tiny_causal_lm("llama", seed=5, tokenizer=make_tokenizer(tuple(WORDS) + JUDGE_WORDS))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    port = free_port()
    log = open(folder.parent / "serve.log", "w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder),
                             "--host", "127.0.0.1", "--port", str(port), "--default-seed", "0"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"transformers serve did not start: {(folder.parent / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url + "/v1", str(folder)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_verdict_mode_against_transformers_serve(served, tmp_path, api):
    base_url, model = served
    comp = tmp_path / "c.jsonl"
    comp.write_text("".join(json.dumps({"prompt_id": f"p{k}", "prompt": "is the cat good", "index": i,
                                        "response": r}) + "\n"
                            for k in range(2) for i, r in enumerate(["yes good", "no bad"])))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rlhaif.cli", "feedback", "ai-label", "--input", str(comp), "--output-dir", str(out),
           "--api", api, "--base-url", base_url, "--judge-model", model, "--verdicts", "3", "--concurrency", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sampled verdicts" in run.stdout + run.stderr  # the server ignores logprobs: auto switched
    result = json.loads((out / "manifest.json").read_text())["outputs"]
    assert result["judge_mode"] == "verdicts" and result["n_pairs"] == 2
    assert result["verdicts_asked"] == 2 * 2 * 3
    assert 0 <= result["verdicts_unparsed"] <= result["verdicts_asked"]
    for line in (out / "pairs.jsonl").read_text().splitlines():
        pair = json.loads(line)
        for p_order in pair["p_orders"]:  # a share of at most 3 parsed votes, or ½ when none parsed
            assert Fraction(p_order).limit_denominator(6) in {Fraction(k, d) for d in (1, 2, 3) for k in range(d + 1)}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # the cache answers everything
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((out / "manifest.json").read_text())["outputs"]["judged"] == 0
