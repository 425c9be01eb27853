"""The CLI end to end in a subprocess: `rlhaif generate`, `rlhaif data convert`, --help, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from rlhaif.models.tiny import save_tiny


def rlhaif(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "rlhaif.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _one_line_error(proc, expected):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert lines == [f"error: {expected}"], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny-qwen2", "qwen2", seed=5)


def test_generate_writes_completions_with_sampling_settings(tmp_path, tiny_folder):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hello how are you"}\n'
                       '{"id": "b", "prompt": [{"role": "user", "content": "tell me about the cat"}]}\n')
    (tmp_path / "gen.yaml").write_text("top_k: 20\ntemperature: 0.5\n")
    out = tmp_path / "run" / "completions.jsonl"
    proc = rlhaif("generate", "--model", tiny_folder, "--prompts", prompts, "-k", 3, "--max-new-tokens", 6,
                  "--temperature", 0.9, "--seed", 7, "--batch-size", 4, "-c", tmp_path / "gen.yaml", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 6 completions to" in proc.stdout
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["index"]) for r in rows] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    for r in rows:
        assert set(r) == {"prompt_id", "prompt", "response", "model", "index", "finished", "sampling"}
        assert r["model"] == str(tiny_folder) and isinstance(r["finished"], bool)
        # flags win over the YAML (temperature), the YAML over defaults (top_k)
        assert r["sampling"] == {"max_new_tokens": 6, "temperature": 0.9, "top_p": 1.0, "top_k": 20,
                                 "do_sample": True, "repetition_penalty": 1.0, "seed": 7, "k": 3}
        assert r["finished"] or len(r["response"].split()) >= 1
    assert rows[3]["prompt"] == [{"role": "user", "content": "tell me about the cat"}]
    stats = json.loads((out.parent / "generate_stats.json").read_text())
    assert stats["responses"] == 6 and stats["new_tokens"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["completions.jsonl", "generate_stats.json", "manifest.json"]
    man = json.loads((out.parent / "manifest.json").read_text())  # run alone, the stage still writes its manifest
    assert man["stage"] == "generate" and man["config"]["output"] == str(out) and man["config"]["top_k"] == 20
    assert man["outputs"]["completions"] == str(out) and "prompts" in man["inputs"]


def test_help_lists_commands():
    proc = rlhaif("--help")
    assert proc.returncode == 0, proc.stderr
    assert "generate" in proc.stdout and "data" in proc.stdout
    proc = rlhaif("data", "convert", "--help")
    assert proc.returncode == 0 and "--skip-invalid" in proc.stdout


def test_missing_prompts_file_is_one_line(tmp_path, tiny_folder):
    proc = rlhaif("generate", "--model", tiny_folder, "--prompts", tmp_path / "nope.jsonl")
    _one_line_error(proc, f"{tmp_path / 'nope.jsonl'}: file not found")
    assert not (tmp_path / "completions.jsonl").exists()


def test_config_typo_is_one_line(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n")
    (tmp_path / "c.yaml").write_text("temprature: 0.3\n")
    proc = rlhaif("generate", "--prompts", tmp_path / "p.txt", "-c", tmp_path / "c.yaml")
    _one_line_error(proc, f"{tmp_path / 'c.yaml'}: unknown key 'temprature' for GenerateConfig; "
                          "did you mean 'temperature'?")


def test_data_convert_hh_to_trl(tmp_path, hh_path):
    out = tmp_path / "trl.jsonl.gz"
    proc = rlhaif("data", "convert", "--from", "hh", "--to", "trl-conversational", "--skip-invalid", hh_path, out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1794 pairs" in proc.stdout and "6 skipped" in proc.stdout
    proc = rlhaif("data", "convert", "--from", "hh", "--to", "pairs", hh_path, tmp_path / "p.jsonl")
    _one_line_error(proc, f"{hh_path}:87: field 'chosen': the last Assistant reply is empty "
                          "(--skip-invalid drops such records)")
    assert not (tmp_path / "p.jsonl").exists()


def test_generate_best_of_n_keeps_each_prompts_top_scored_response(tmp_path, tiny_folder):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hello how are you"}\n{"id": "b", "prompt": "tell me about the cat"}\n')
    scorer = tmp_path / "score_len.py"
    scorer.write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    out = tmp_path / "best" / "completions.jsonl"
    proc = rlhaif("generate", "--model", tiny_folder, "--prompts", prompts, "-k", 3, "--best-of", 3,
                  "--scorer", f"python:{scorer}:score", "--max-new-tokens", 8, "--seed", 3, "-o", out)
    assert proc.returncode == 0, proc.stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in kept] == ["a", "b"]  # one per prompt
    for r in kept:
        assert len(r["scores"]) == 3 and r["score"] == max(r["scores"]) == float(len(r["response"]))
    stats = json.loads((out.parent / "generate_stats.json").read_text())
    assert stats["best_of"] == 3
    bad = rlhaif("generate", "--model", tiny_folder, "--prompts", prompts, "-k", 2, "--best-of", 3,
                 "--scorer", f"python:{scorer}:score", "-o", tmp_path / "x.jsonl")
    assert bad.returncode == 2 and "set k to at least 3" in bad.stderr
