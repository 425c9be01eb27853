"""Critique → revision on a tiny model: round structure, the seeded principle draw, outputs, resume, CLI."""

import json
import os
import random
import subprocess
import sys

import pytest

from rlhaif.data.io import read_records
from rlhaif.data.records import DemoRecord, PairRecord
from rlhaif.feedback.ai.constitution import load_constitution
from rlhaif.feedback.ai.critique_revise import ReviseConfig, run_revise

PROMPTS = ["how do i harm a cat", "tell me a rude answer", "what is fire", "can you help me"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matrices: one thread


def _prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


def _cfg(tmp_path, **kw):
    kw = {"n_rounds": 3, "max_new_tokens": 4, "max_prompt_length": 200, "batch_size": 3, "seed": 11, **kw}
    return ReviseConfig(prompts=str(_prompts(tmp_path)), output_dir=str(tmp_path / "out"), **kw)


def _rows(tmp_path):
    return [json.loads(l) for l in (tmp_path / "out" / "revisions.jsonl").read_text().splitlines() if l.strip()]


def test_rounds_follow_the_seeded_draw_and_chain_revisions(tmp_path, tiny_lm):
    model, tok = tiny_lm
    stats = run_revise(_cfg(tmp_path), model, tok)
    rows = _rows(tmp_path)
    assert stats.rounds == len(rows) == len(PROMPTS) * 3
    # principles: random.Random(seed).choice in prompt order, 3 per prompt, with replacement
    names = [p.name for p in load_constitution().principles]
    ref = random.Random(11)
    expected = [ref.choice(names) for _ in range(len(PROMPTS) * 3)]
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    got = [r["principle"] for i in range(len(PROMPTS)) for r in sorted(by_prompt[f"p{i}"], key=lambda r: r["round"])]
    assert got == expected
    for i, p in enumerate(PROMPTS):
        rs = sorted(by_prompt[f"p{i}"], key=lambda r: r["round"])
        assert [r["round"] for r in rs] == [1, 2, 3]
        assert all(r["prompt"] == p and set(r) >= {"response", "principle", "critique", "revision", "original"}
                   for r in rs)
        assert rs[0]["response"] == rs[0]["original"]
        for a, b in zip(rs, rs[1:]):  # each round critiques the previous round's revision
            assert b["response"] == (a["revision"] or a["response"])
    sft = read_records(tmp_path / "out" / "sft.jsonl", DemoRecord)
    assert len(sft) == len(PROMPTS)
    finals = {r["prompt_id"]: r for r in rows if r["round"] == 3}
    assert [d.response for d in sft] == [finals[f"p{i}"]["revision"] or finals[f"p{i}"]["response"]
                                         for i in range(len(PROMPTS))]
    pairs = read_records(tmp_path / "out" / "pairs.jsonl", PairRecord)
    assert pairs and all(p.source == "cai-revision" and p.p == 1.0 for p in pairs)
    by_id = {r["prompt_id"]: r for r in rows}
    assert all(p.rejected == by_id[p.id]["original"] for p in pairs)
    assert (tmp_path / "out" / "manifest.json").exists() and (tmp_path / "out" / "metrics.jsonl").exists()


def test_each_round_asks_with_the_drawn_principles_own_requests(tmp_path, tiny_lm, monkeypatch):
    """The model sees, per round, the drawn principle's critique request, then its critique and the same
    principle's revision request, after the answer being critiqued."""
    import rlhaif.tokens

    contexts = []  # every batch of chat contexts handed to the model, in call order
    real = rlhaif.tokens.encode_prompts

    def spy(tokenizer, prompts, *a, **k):
        contexts.extend([[(m.role, m.content) for m in p] for p in prompts])
        return real(tokenizer, prompts, *a, **k)

    monkeypatch.setattr(rlhaif.tokens, "encode_prompts", spy)
    model, tok = tiny_lm
    run_revise(_cfg(tmp_path, batch_size=4, fewshot="none"), model, tok)
    rows = {(r["prompt_id"], r["round"]): r for r in _rows(tmp_path)}
    by_name = {p.name: p for p in load_constitution().principles}
    n = len(PROMPTS)
    assert len(contexts) == n * (1 + 2 * 3)  # answer, then (critique, revision) × 3 rounds, one batch
    for r in range(1, 4):
        crit, rev = contexts[n * (2 * r - 1):n * 2 * r], contexts[n * 2 * r:n * (2 * r + 1)]
        for i in range(n):
            row, pr = rows[(f"p{i}", r)], by_name[rows[(f"p{i}", r)]["principle"]]
            assert crit[i] == [("user", PROMPTS[i]), ("assistant", row["response"] or "(no answer)"),
                               ("user", pr.critique_request.strip())]
            assert rev[i] == crit[i] + [("assistant", row["critique"] or "(no critique)"),
                                        ("user", pr.revision_request.strip())]


def test_resume_skips_complete_prompts_and_drops_a_torn_one(tmp_path, tiny_lm):
    model, tok = tiny_lm
    run_revise(_cfg(tmp_path), model, tok)
    path = tmp_path / "out" / "revisions.jsonl"
    lines = path.read_text().splitlines()
    first = [l for l in lines if json.loads(l)["prompt_id"] == "p0"]
    partial = [l for l in lines if json.loads(l)["prompt_id"] == "p1"][:1]
    path.write_text("\n".join(first + partial) + "\n" + '{"prompt_id": "p2", "rou')  # crash mid-write

    class Counting:
        calls = 0

    orig_generate = model.generate

    def counting_generate(*a, **k):
        Counting.calls += 1
        return orig_generate(*a, **k)

    model.generate = counting_generate
    stats = run_revise(_cfg(tmp_path), model, tok)
    rows = _rows(tmp_path)
    assert stats.resumed == 1 and stats.generated == 3
    assert len(rows) == len(PROMPTS) * 3
    assert [json.dumps(r) for r in rows[:3]] == [json.dumps(json.loads(l)) for l in first]  # kept as written
    assert sorted({r["prompt_id"] for r in rows}) == ["p0", "p1", "p2", "p3"]
    assert sum(r["prompt_id"] == "p1" for r in rows) == 3
    # second rerun: nothing to do, the model is not called
    Counting.calls = 0
    stats = run_revise(_cfg(tmp_path), model, tok)
    assert stats.generated == 0 and Counting.calls == 0


def test_hh_rlhf_first_human_turns_and_cli(tmp_path, hh_path):
    from rlhaif.models.tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny", "llama")
    out = tmp_path / "cai"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "rlhaif.cli", "cai", "revise", "--prompts", hh_path, "--model",
                          str(model_dir), "-o", str(out), "--rounds", "2", "--limit", "2", "--max-new-tokens", "3",
                          "--fewshot", "none"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(l) for l in (out / "revisions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(isinstance(r["prompt"], str) and r["prompt"] for r in rows)
    assert not any(r["prompt"].startswith("Human:") for r in rows)


def test_cli_bad_constitution_is_one_clear_message(tmp_path, capsys):
    from rlhaif.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("principles: []\n")
    prompts = _prompts(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["cai", "revise", "--prompts", str(prompts), "--model", "unused", "-o", str(tmp_path / "o"),
              "--constitution", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "bad.yaml" in err and "empty" in err and "Traceback" not in err
