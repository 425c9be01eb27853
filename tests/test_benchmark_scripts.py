"""Smoke tests of the benchmark scripts (their figures live in BENCHMARKS.md, never in tests): each script
parses its options, and bench_ppo.py's rlhaif side runs end to end on a tiny model and reports its figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# the *_trl_side.py workers run inside TRL's venv, launched by their benchmark with a settings file: no options
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py")
                 if p.name != "bench_common.py" and not p.name.endswith("_trl_side.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_its_options(script):
    res = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage:" in res.stdout


def test_bench_ppo_rlhaif_side_runs_on_a_tiny_model(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from bench_ppo import build_models
    finally:
        sys.path.remove(str(BENCH))
    policy, reward, n_params = build_models(tmp_path, hidden=32, layers=1)
    settings = dict(batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, temperature=0.7, lr=1e-4,
                    kl_coef=0.05, seed=0, steps=2, device="cpu", threads=1, policy=policy, reward=reward,
                    prompts=str(tmp_path / "prompts.jsonl"), lora_r=0, out=str(tmp_path / "run"))
    (tmp_path / "s.json").write_text(json.dumps(settings))
    res = subprocess.run([sys.executable, str(BENCH / "bench_ppo.py"), "--side", "ours", str(tmp_path / "s.json")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
    assert out["side"] == "rlhaif" and out["steps"] == 2
    assert out["samples_per_second"] > 0 and out["peak_rss_mib"] > out["peak_rss_above_imports_mib"] > 0
    assert 1 <= out["response_length"] <= 6
    assert n_params > 0
