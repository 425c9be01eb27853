"""The engine module's pure parts, in the project's own python (no vLLM): samples -> the PPO loop's Rollout,
the trainer's weights under plain names (LoRA merged into a copy), and a clear message without vLLM."""

import pytest
import torch

from rlhaif.engines.vllm_engine import EngineSample, VLLMEngine, plain_state_dict, rollout_from_samples, vllm_available
from rlhaif.errors import RlhaifError
from rlhaif.models.tiny import make_tiny_causal_lm


def test_rollout_from_samples_pads_like_the_hf_sampler():
    prompts = [[5, 6, 7], [8]]
    samples = [EngineSample([10, 3], [-0.5, -0.25], True), EngineSample([11, 12, 13], [-1.0, -2.0, -3.0], False)]
    r, lp = rollout_from_samples(prompts, samples, pad_id=0)
    assert r.query_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and r.query_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert r.response_ids.tolist() == [[10, 3, 0], [11, 12, 13]]
    assert r.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert r.eos_reached.tolist() == [True, False]
    assert lp.tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0]]


def test_plain_state_dict_merges_lora_into_a_copy():
    peft = pytest.importorskip("peft")
    model, _ = make_tiny_causal_lm("llama")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    x = torch.tensor([[2, 10, 11]])
    with torch.no_grad():
        expect = lora(input_ids=x).logits
    sd = plain_state_dict(lora)
    assert "model.layers.0.self_attn.q_proj.weight" in sd and not any("lora" in k or "base_layer" in k for k in sd)
    plain, _ = make_tiny_causal_lm("llama", seed=1)
    plain.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=x).logits, expect, atol=1e-5)  # the merged weights = the adapter's model
    assert hasattr(lora, "peft_config") and lora.model.model.layers[0].self_attn.q_proj.lora_A  # untouched


def test_engine_without_vllm_says_how_to_get_it(tmp_path):
    if vllm_available():
        pytest.skip("vLLM is installed here")
    with pytest.raises(RlhaifError, match="setup_vllm_venv.sh"):
        VLLMEngine(tmp_path)
