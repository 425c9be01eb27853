"""`rlhaif sft` run as a user runs it: the command trains a tiny model, saves it, exits 0 and prints a summary
that names the saved model."""

import json
import os
import subprocess
import sys

from rlhaif.models.tiny import save_tiny


def test_sft_command_trains_saves_and_prints_the_model_folder(tmp_path):
    save_tiny(tmp_path / "base", "llama", seed=0)
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": "hello what is the sun", "response": "the sun is big"}) + "\n"
                             for _ in range(6)))
    out = tmp_path / "sft"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rlhaif.cli", "sft", "--model", str(tmp_path / "base"),
                           "--data", str(demos), "-o", str(out), "--batch-size", "4", "--max-length", "32"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("trained 2 steps on 6 examples (last loss ")  # 6 demos / 4 per batch, 1 epoch
    assert summary.endswith(f"-> {out / 'model'}")
    assert (out / "model" / "config.json").exists()
