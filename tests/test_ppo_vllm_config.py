"""`rollout_backend: vllm` settings in the project's python (no vLLM): the refusals, each naming its fix.
The engine itself runs in tests/test_vllm_wiring.py (vLLM venv, scripts/test-vllm.sh)."""

import json

import pytest

from rlhaif.engines.vllm_engine import vllm_available
from rlhaif.errors import ConfigError, RlhaifError
from rlhaif.models.tiny import save_tiny
from rlhaif.policy.ppo import PPOConfig, check_batch_sizes, run_ppo


def cfg(tmp_path, **kw):
    base = dict(model=str(tmp_path / "tiny"), prompts=str(tmp_path / "p.jsonl"), output_dir=str(tmp_path / "out"),
                reward_fn="len:len", batch_size=4, mini_batch_size=2, steps=1, rollout_backend="vllm")
    return PPOConfig(**{**base, **kw})


def test_vllm_rollouts_refuse_several_processes_and_a_bad_cap(tmp_path):
    with pytest.raises(ConfigError, match=r"one process.*has 2.*rollout_backend 'hf'"):
        check_batch_sizes(cfg(tmp_path), world_size=2)
    check_batch_sizes(cfg(tmp_path, rollout_backend="hf"), world_size=2)  # HF rollouts: fine
    with pytest.raises(ConfigError, match=r"ppo.yaml: key 'tis_cap': must be > 0 \(got 0.0\)"):  # before any load
        PPOConfig.validate_dict({**cfg(tmp_path).model_dump(), "tis_cap": 0.0}, "ppo.yaml")


def test_vllm_rollouts_without_vllm_say_how_to_get_it(tmp_path):
    if vllm_available():
        pytest.skip("vLLM is installed here")
    save_tiny(tmp_path / "tiny", "llama")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "a b c"}) + "\n")
    (tmp_path / "score.py").write_text("def score(p, r):\n    return [0.0] * len(r)\n")
    with pytest.raises(RlhaifError, match=r"rollout_backend: vllm.*setup_vllm_venv.sh"):
        run_ppo(cfg(tmp_path, reward_fn=f"{tmp_path / 'score.py'}:score", lora_r=0))
