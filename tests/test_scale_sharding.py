"""FSDP and DeepSpeed on a machine without a GPU: Accelerate 1.x does not shard over CPU processes (an FSDP
config becomes plain DDP, DeepSpeed reports rank 0 of 1 to every process), so rlhaif refuses the launch by
name instead of running unsharded copies. The probes behind this are in benchmarks/scale_probes/."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhaif.errors import ConfigError
from rlhaif.training import make_accelerator

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env,name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharded_launch_without_gpu_is_refused(monkeypatch, env, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(env, "true")
    with pytest.raises(ConfigError, match=f"{name} needs GPUs.*multi-cpu.yaml"):
        make_accelerator()
    monkeypatch.setenv(env, "false")
    monkeypatch.setenv("WORLD_SIZE", "1")
    make_accelerator()  # one process, no sharding asked: fine


def test_sft_under_the_fsdp_config_stops_with_the_message(tmp_path):
    from rlhaif.models.tiny import save_tiny

    save_tiny(tmp_path / "base", "llama")
    (tmp_path / "demos.jsonl").write_text('{"prompt": "hello", "response": "the sun"}\n' * 4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(ROOT / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
                        "--main_process_port", "29531", "-m", "rlhaif.cli", "sft", "--model", str(tmp_path / "base"),
                        "--data", str(tmp_path / "demos.jsonl"), "-o", str(tmp_path / "out"), "--max-steps", "1"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode != 0
    assert "FSDP needs GPUs" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert not (tmp_path / "out" / "model").exists()


def test_stages_in_one_process_may_choose_different_mixed_precision():
    # a recipe runs its stages in one process: an fp32 SFT, then a PPO stage with mixed_precision bf16 (the demo's).
    # Accelerate refuses a second Accelerator with another precision unless rlhaif releases its state first.
    from rlhaif.training import bf16_supported, make_accelerator

    first = make_accelerator(mixed_precision="no")
    assert first.mixed_precision == "no"
    second = make_accelerator(mixed_precision="bf16")
    assert second.mixed_precision == ("bf16" if bf16_supported() else "no")
    assert make_accelerator(mixed_precision="no").mixed_precision == "no"
