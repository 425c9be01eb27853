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


@pytest.mark.parametrize("lora", [False, True])
def test_bench_kto_rlhaif_side_runs_on_a_tiny_model(tmp_path, hh_path, lora):
    """bench_kto.py's rlhaif worker with the settings it passes to `rlhaif dpo --loss kto` (it once named fields
    the config had renamed, and only a full benchmark run found out)."""
    sys.path.insert(0, str(BENCH))
    try:
        from bench_kto import make_inputs
    finally:
        sys.path.remove(str(BENCH))
    assert make_inputs(tmp_path, "tiny", 8) > 0
    res = subprocess.run([sys.executable, str(BENCH / "bench_kto.py"), "--worker", "rlhaif", "--dir", str(tmp_path),
                          "--steps", "1", "--batch", "8", "--max-length", "64", *(["--lora"] if lora else [])],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
    assert out["side"] == "rlhaif" and out["items"] == 8 and out["items_per_s"] > 0
    assert out["mean_loss"] == pytest.approx(0.5, abs=0.05)  # KTO's loss starts at 1 - sigmoid(0) = 0.5


def test_study_table_reads_the_arms_curves_and_the_paired_gains(tmp_path):
    """benchmarks/study_table.py: window means of proxy, gold and KL per arm, and the report's paired gains."""
    for arm, scale in (("ppo", 1.0), ("rloo", 2.0)):
        d = tmp_path / "round1" / arm
        d.mkdir(parents=True)
        rows = [{"step": s, "time": 10.0 * s, "objective/score": scale * s, "monitor/gold": -s, "objective/kl": 0.5 * s}
                for s in range(1, 9)]
        if arm == "rloo":  # an arm optimizing an ensemble watches the one proxy: its curve is the proxy's
            rows = [{**r, "monitor/proxy": 3.0 * r["step"]} for r in rows]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"final": true}\n')
    paired = [{"model": "ppo", "against": "sft", "kind": k, "mean": m, "low": m - 0.1, "high": m + 0.1, "mde": 0.18,
               "prompts": 120, "samples_per_prompt": 2} for k, m in (("gold", 0.25), ("proxy", 0.5), ("length", 3.0))]
    report = {"reference": "sft", "paired": paired, "models": {"ppo": {"kl": {"mean": 2.5}}, "sft": {"kl": {"mean": 0.0}}}}
    (tmp_path / "study_eval" / "samples").mkdir(parents=True)
    (tmp_path / "study_eval" / "report.json").write_text(json.dumps(report))
    # 4 prompts x 2 samples; ppo's gold gain is 0.5 + 0.1 per extra token: 0.5 at equal length
    for model, rows in (("sft", [(10, 0.0)] * 8), ("ppo", [(10 + dl, 0.5 + 0.1 * dl) for dl in (0, 0, 2, 2, 4, 4, 6, 6)])):
        (tmp_path / "study_eval" / "samples" / f"{model}.jsonl").write_text("".join(
            json.dumps({"prompt_id": f"p{i // 2}", "tokens": t, "gold": g, "proxy": g}) + "\n" for i, (t, g) in enumerate(rows)))
    res = subprocess.run([sys.executable, str(BENCH / "study_table.py"), str(tmp_path), "--arms", "ppo", "rloo"],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert "| ppo proxy | 8 | 80 | +2.500 | +6.500 |" in lines      # means of steps 1-4 and 5-8
    assert "| rloo proxy | 8 | 80 | +7.500 | +19.500 |" in lines    # monitor/proxy, not objective/score
    assert "| ppo gold | 8 | 80 | -2.500 | -6.500 |" in lines
    assert "| ppo KL | 8 | 80 | 1.25 | 3.25 |" in lines
    assert "| ppo | +0.250 [+0.150, +0.350] | +0.500 [+0.400, +0.600] | +3.0 [+2.9, +3.1] | 2.50 |" in lines
    assert any(line.startswith("| ppo | +0.500 [") for line in lines)  # the length-controlled gain
