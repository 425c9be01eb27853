"""SFT: prompt tokens masked, loss by hand, a tiny model learns, exact resume, LoRA, bad input."""

import json
import math

import pytest
import torch

from rlhaif.data.collate import encode_prompt_response, pad_batch
from rlhaif.errors import RlhaifError
from rlhaif.models.tiny import make_tokenizer, save_tiny
from rlhaif.policy.sft import IGNORE, SFTConfig, make_labels, run_sft, sft_loss


def write_demos(path, n=24):
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"messages": [{"role": "user", "content": "tell me about the cat"},
                                      {"role": "assistant", "content": "the cat is kind and happy"}]})
        else:
            rows.append({"prompt": "hello what is the sun", "response": "the sun is big and red"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_labels_mask_prompt_and_padding():
    tok = make_tokenizer()
    e1 = encode_prompt_response(tok, "hello what is the sun", "the sun is red")
    e2 = encode_prompt_response(tok, "hello", "yes")
    b = pad_batch([e1, e2], tok.pad_token_id, side="right")
    labels = make_labels(b["input_ids"], b["loss_mask"])
    for row, e in enumerate((e1, e2)):
        n_p, n = len(e.prompt_ids), len(e.input_ids)
        assert (labels[row, :n_p] == IGNORE).all()  # prompt (chat template included) ignored
        assert labels[row, n_p:n].tolist() == e.response_ids  # response learned, EOS included
        assert e.response_ids[-1] == tok.eos_token_id
        assert (labels[row, n:] == IGNORE).all()  # padding ignored
    assert tok.decode(e1.response_ids[:-1]).split() == "the sun is red".split()


def test_sft_loss_by_hand():
    # one sequence of 3 tokens, vocab 2; labels: position 0 ignored (prompt), tokens 1, 2 learned.
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE, 1, 0]])
    loss, stats = sft_loss(logits, labels)
    # token 1 predicted from position 0: -log softmax([0,1])[1]; token 0 from position 1: -log softmax([2,0])[0]
    nll1 = -(1.0 - math.log(math.exp(0.0) + math.exp(1.0)))
    nll2 = -(2.0 - math.log(math.exp(2.0) + math.exp(0.0)))
    assert stats["sft/tokens"] == 2
    assert loss.item() == pytest.approx((nll1 + nll2) / 2, rel=1e-6)
    loss4, _ = sft_loss(logits, labels, num_tokens=4)  # normalized by the whole optimizer step's tokens
    assert loss4.item() == pytest.approx((nll1 + nll2) / 4, rel=1e-6)


def _cfg(tmp_path, name, **kw):
    base = dict(model=str(tmp_path / "base"), data=str(tmp_path / "demos.jsonl"), output_dir=str(tmp_path / name),
                batch_size=4, learning_rate=3e-3, epochs=2, max_length=64, save_every=0, seed=1)
    base.update(kw)
    return SFTConfig(**base)


@pytest.fixture
def setup(tmp_path):
    save_tiny(tmp_path / "base", "llama", seed=0)
    write_demos(tmp_path / "demos.jsonl")
    return tmp_path


def _losses(run_dir):
    return [json.loads(l)["sft/loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_response_loss_falls_and_saves(setup):
    out = run_sft(_cfg(setup, "full", gradient_accumulation_steps=2, epochs=4, learning_rate=1e-2))
    losses = _losses(setup / "full")
    assert out.steps == len(losses) == 12  # 24 demos / 4 per micro-batch / 2 accumulated x 4 epochs
    assert losses[-1] < 0.5 * losses[0]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out.model)  # a plain save_pretrained folder
    assert not (setup / "full" / "checkpoints").exists()


def test_resume_after_interruption_equals_uninterrupted(setup, monkeypatch):
    full = run_sft(_cfg(setup, "straight", save_every=2, epochs=2, batch_size=5))  # 5 steps/epoch: mid-epoch resume
    import rlhaif.training as training

    orig = training.save_checkpoint

    def crash_after(out_dir, step, *a, **k):
        path = orig(out_dir, step, *a, **k)
        if step == 4:
            raise KeyboardInterrupt("simulated crash right after the step-4 checkpoint")
        return path

    monkeypatch.setattr(training, "save_checkpoint", crash_after)
    with pytest.raises(KeyboardInterrupt):
        run_sft(_cfg(setup, "resumed", save_every=2, epochs=2, batch_size=5))
    assert (setup / "resumed" / "checkpoints" / "step-000004").exists()
    monkeypatch.setattr(training, "save_checkpoint", orig)
    resumed = run_sft(_cfg(setup, "resumed", save_every=2, epochs=2, batch_size=5))
    assert resumed.steps == full.steps == 10
    assert _losses(setup / "resumed")[-6:] == pytest.approx(_losses(setup / "straight")[-6:], rel=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(setup / "straight" / "model" / "model.safetensors"))
    b = load_file(str(setup / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_lora_adapter_and_merged(setup):
    out = run_sft(_cfg(setup, "lora", lora_r=4, epochs=1, learning_rate=1e-2))
    assert (setup / "lora" / "model" / "adapter_config.json").exists()
    from rlhaif.models.loading import load_causal_lm

    m, _ = load_causal_lm(out.model)  # base + adapter
    merged = run_sft(_cfg(setup, "merged", lora_r=4, epochs=1, learning_rate=1e-2, merge_lora=True))
    assert (setup / "merged" / "model" / "config.json").exists()
    assert not (setup / "merged" / "model" / "adapter_config.json").exists()


def test_bad_demo_names_file_line_field(setup):
    bad = setup / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hello", "response": "yes"}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(RlhaifError, match=r"bad.jsonl:2"):
        run_sft(_cfg(setup, "bad", data=str(bad)))


def test_activation_checkpointing_trains_the_same_model(setup):
    """Recomputing activations in the backward changes memory, not the result: same losses, same weights."""
    run_sft(_cfg(setup, "plain", epochs=1, learning_rate=1e-2))
    out = run_sft(_cfg(setup, "ckpt", epochs=1, learning_rate=1e-2, activation_checkpointing=True))
    assert _losses(setup / "ckpt") == pytest.approx(_losses(setup / "plain"), rel=1e-5)
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(str(setup / "plain" / "model")).state_dict()
    b = AutoModelForCausalLM.from_pretrained(out.model).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_a_resumed_run_logs_each_step_once_and_a_changed_learning_rate_is_refused(setup, crash_after_logging):
    from rlhaif.errors import ConfigError

    kw = dict(save_every=2, epochs=2, batch_size=5)  # 10 steps; checkpoints at 2, 4, ...
    crash_after_logging(5)  # step 5 is logged, its state is not checkpointed: the resume restarts after step 4
    with pytest.raises(KeyboardInterrupt):
        run_sft(_cfg(setup, "dup", **kw))
    crash_after_logging(None)
    with pytest.raises(ConfigError, match=r"refusing to resume.*learning_rate: 0\.003 -> 0\.001"):
        run_sft(_cfg(setup, "dup", **kw, learning_rate=1e-3))
    out = run_sft(_cfg(setup, "dup", **kw))
    steps = [json.loads(line)["step"] for line in (setup / "dup" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
    assert out.output_dir == str(setup / "dup") and out.model == str(setup / "dup" / "model")
    assert "sft/loss" in out.metrics and out.steps == 10
    man = json.loads((setup / "dup" / "manifest.json").read_text())
    assert man["stage"] == "sft" and man["outputs"]["model"] == out.model
