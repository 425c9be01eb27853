"""`rlhaif dpo` on tiny models: learning a toy preference, reference paths agreeing, exact resume, bad input."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from rlhaif.errors import ConfigError, DataError
from rlhaif.models.tiny import save_tiny
from rlhaif.policy.dpo import DPOConfig, run_dpo

NOUNS = "cat dog sun moon water fire tree book car house food music".split()
GOOD = "kind safe honest happy good".split()
BAD = "rude harm bad hate false".split()


def toy_pairs(n, seed):
    """Prompts about a noun; chosen replies use kind/safe words, rejected ones rude/harm words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        noun = rng.choice(NOUNS)
        filler = rng.sample(["the", "a", "is", "and", "it", "you", "we", "this"], 3)
        good = " ".join([*rng.sample(GOOD, 2), noun, *filler])
        bad = " ".join([*rng.sample(BAD, 2), noun, *filler])
        rows.append({"prompt": f"tell me about the {noun}", "chosen": good, "rejected": bad, "id": f"t{i}"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matmuls on 2 busy cores: two OpenMP threads spin against each other (~50x slower than one).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=0))


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    return write_jsonl(d / "train.jsonl", toy_pairs(48, 1)), write_jsonl(d / "eval.jsonl", toy_pairs(24, 2))


def cfg(tiny_dir, files, out, **kw):
    base = dict(model=tiny_dir, pairs=files[0], eval_pairs=files[1], output_dir=str(out), max_length=32,
                batch_size=8, lora_r=0, learning_rate=1e-3, max_steps=4, save_every=100, seed=0)
    base.update(kw)
    return DPOConfig(**base)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_toy_preference_rises_well_above_chance(tiny_dir, toy_files, tmp_path):
    res = run_dpo(cfg(tiny_dir, toy_files, tmp_path, max_steps=30, beta=0.5, nll_alpha=0.1))
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["eval/pairs"] == 24
    assert ev["eval/accuracy"] >= 0.85, ev
    assert ev["eval/margin"] > 0
    rows = [r for r in metrics(tmp_path) if "dpo/loss" in r]
    assert len(rows) == 30
    for name in ("dpo/loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
                 "logps/chosen", "logps/rejected", "dpo/nll", "train/learning_rate"):
        assert name in rows[0]
    assert rows[0]["rewards/accuracy"] == pytest.approx(0.5)  # π_θ = π_ref at step 1: all ties
    assert rows[-1]["dpo/loss"] < rows[0]["dpo/loss"]
    assert os.path.exists(os.path.join(res.model, "config.json"))
    assert os.path.exists(tmp_path / "manifest.json") and os.path.exists(tmp_path / "ref_logprobs.pt")


def test_precomputed_and_adapter_reference_agree(tiny_dir, toy_files, tmp_path):
    runs = {}
    for ref in ("precompute", "adapter"):
        out = tmp_path / ref
        res = run_dpo(cfg(tiny_dir, toy_files, out, lora_r=4, learning_rate=5e-3, max_steps=3,
                          reference=ref, loss="ipo"))
        runs[ref] = ([r for r in metrics(out) if "dpo/loss" in r], res.eval)
    (a_rows, a_eval), (b_rows, b_eval) = runs["precompute"], runs["adapter"]
    assert a_rows[-1]["rewards/margin"] != 0.0  # the adapter moved the policy away from the reference
    for ra, rb in zip(a_rows, b_rows):
        for k in ("dpo/loss", "rewards/chosen", "rewards/rejected", "logps/chosen"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (k, ra, rb)
    for k in ("eval/accuracy", "eval/margin", "eval/loss"):
        assert a_eval[k] == pytest.approx(b_eval[k], rel=1e-4, abs=1e-5)
    assert os.path.exists(os.path.join(tmp_path / "adapter" / "model", "adapter_config.json"))


def test_interrupted_and_resumed_equals_uninterrupted(tiny_dir, toy_files, tmp_path, monkeypatch):
    kw = dict(max_steps=6, save_every=3, lora_r=4, learning_rate=5e-3)
    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "whole", **kw))

    from rlhaif import metrics as metrics_mod

    real_log = metrics_mod.MetricsLogger.log

    def crash_at_5(self, step, row, advance=1):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")
        return real_log(self, step, row, advance)

    monkeypatch.setattr(metrics_mod.MetricsLogger, "log", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        run_dpo(cfg(tiny_dir, toy_files, tmp_path / "resumed", **kw))
    assert not (tmp_path / "resumed" / "model").exists()
    monkeypatch.setattr(metrics_mod.MetricsLogger, "log", real_log)
    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "resumed", **kw))

    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "resumed")
    w = [r for r in whole if "dpo/loss" in r]
    r = [r for r in resumed if "dpo/loss" in r]  # no dedup by step: a resumed run logs each step once
    assert [x["step"] for x in r] == [x["step"] for x in w] == [1, 2, 3, 4, 5, 6]
    assert [x["step"] for x in resumed] == [x["step"] for x in whole] == [1, 2, 3, 4, 5, 6, 6]  # + the eval row
    for s in (3, 4, 5):
        assert r[s]["dpo/loss"] == pytest.approx(w[s]["dpo/loss"], rel=1e-6, abs=1e-7)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-000006" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step-000006" / "trainable.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_step_changes_every_trainable_parameter(tiny_dir, toy_files, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dpo(cfg(tiny_dir, toy_files, tmp_path, max_steps=1, max_grad_norm=0.0))
    before = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    after = load_file(str(tmp_path / "checkpoints" / "step-000001" / "trainable.safetensors"))
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    # every parameter except the embedding rows of tokens absent from the batch moves
    assert set(after) - set(changed) <= {"model.embed_tokens.weight"}, set(after) - set(changed)


def test_bad_inputs_give_clear_errors(tiny_dir, toy_files, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl.*no records"):
        run_dpo(cfg(tiny_dir, (str(empty), toy_files[1]), tmp_path / "o1"))
    bad = toy_pairs(3, 3)
    bad[1]["chosen"] = "  "
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'chosen'"):
        run_dpo(cfg(tiny_dir, (write_jsonl(tmp_path / "bad.jsonl", bad), toy_files[1]), tmp_path / "o2"))
    with pytest.raises(ConfigError, match="lora"):
        run_dpo(cfg(tiny_dir, toy_files, tmp_path / "o3", reference="adapter", lora_r=0))
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        DPOConfig.validate_dict({"pairs": "x", "betta": 0.1})


def test_cli_end_to_end(tiny_dir, toy_files, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "rlhaif.cli", "dpo", "--pairs", toy_files[0], "--eval-pairs", toy_files[1],
           "--model", tiny_dir, "-o", str(out), "--max-steps", "2", "--batch-size", "4", "--max-length", "32",
           "--reference", "adapter", "--lora-r", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    ev = json.loads((out / "eval.json").read_text())
    assert last == (f"dpo (sigmoid loss): trained 2 steps on 48 pairs; held-out accuracy {ev['eval/accuracy']:.3f} on "
                    f"{ev['eval/pairs']} pairs, implicit-reward margin {ev['eval/margin']:.4f} -> {out / 'model'}")
    assert (out / "model" / "adapter_config.json").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "ok"}\n')
    done = subprocess.run(cmd[:5] + [str(bad)] + cmd[6:], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert "bad.jsonl:1: field 'rejected'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_pair_logprobs_equal_full_forward_on_response_tokens(arch):
    """Left-padded, logits only for the response columns == the foundation's full forward, right-padded."""
    from rlhaif.data.collate import pad_batch
    from rlhaif.data.records import PairRecord
    from rlhaif.models.tiny import make_tiny_causal_lm
    from rlhaif.policy.dpo import collate_pairs, encode_pair, pair_logprobs
    from rlhaif.policy.logprobs import sequence_logprob, token_logprobs

    model, tok = make_tiny_causal_lm(arch, seed=1)
    model.eval()
    pairs = [PairRecord(**{k: r[k] for k in ("prompt", "chosen", "rejected")}) for r in toy_pairs(3, 5)]
    pairs[0] = pairs[0].model_copy(update={"chosen": "yes", "prompt": "please tell me about the big red dog now"})
    enc = [encode_pair(tok, p, 64) for p in pairs]
    with torch.no_grad():
        got = pair_logprobs(model, collate_pairs(enc, pairs, tok.pad_token_id))
        right = pad_batch([c for c, _ in enc] + [r for _, r in enc], tok.pad_token_id, side="right")
        want = sequence_logprob(token_logprobs(model, right["input_ids"], right["attention_mask"]),
                                right["loss_mask"])
    assert got.shape == (6,)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_encode_pair_cuts_the_prompt_equally():
    from rlhaif.data.records import PairRecord
    from rlhaif.models.tiny import make_tokenizer
    from rlhaif.policy.dpo import encode_pair

    tok = make_tokenizer()
    pair = PairRecord(prompt=" ".join(["the cat"] * 20), chosen="kind " * 6, rejected="rude " * 2)
    c, r = encode_pair(tok, pair, 16)
    assert c.prompt_ids == r.prompt_ids and len(c.input_ids) == 16 and len(r.input_ids) < 16
    assert c.response_ids[-1] == tok.eos_token_id and r.response_ids[-1] == tok.eos_token_id


def test_gradient_accumulation_equals_the_larger_batch(tiny_dir, toy_files, tmp_path):
    """Batch 8 in one micro-batch and batch 4 × 2 accumulated see the same 8 pairs and take the same step."""
    from safetensors.torch import load_file

    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "b8", max_steps=1, batch_size=8))
    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "b4x2", max_steps=1, batch_size=4, gradient_accumulation_steps=2))
    one, two = metrics(tmp_path / "b8")[0], metrics(tmp_path / "b4x2")[0]
    for k in ("dpo/loss", "train/grad_norm", "logps/chosen"):  # grad_norm: a missing 1/k would show here
        assert one[k] == pytest.approx(two[k], rel=1e-5), k
    # Adam's first step is ±lr where the gradient is not ~0; float noise in near-zero gradients moves ~1e-6.
    a = load_file(str(tmp_path / "b8" / "checkpoints" / "step-000001" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "b4x2" / "checkpoints" / "step-000001" / "trainable.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_collate_carries_soft_labels_smoothing_and_weights():
    from rlhaif.data.records import PairRecord
    from rlhaif.models.tiny import make_tokenizer
    from rlhaif.policy.dpo import collate_pairs, encode_pair

    tok = make_tokenizer()
    pairs = [PairRecord(prompt="tell me", chosen="kind dog", rejected="rude", p=0.7, weight=1 / 3),
             PairRecord(prompt="the cat", chosen="good", rejected="bad cat", p=1.0, weight=1.0)]
    batch = collate_pairs([encode_pair(tok, p, 32) for p in pairs], pairs, tok.pad_token_id, label_smoothing=0.1)
    assert batch["input_ids"].shape[0] == 4  # [chosen1, chosen2, rejected1, rejected2]
    assert batch["p"].tolist() == pytest.approx([0.9 * 0.7 + 0.1 * 0.3, 0.9])
    assert batch["weights"].tolist() == pytest.approx([1 / 3, 1.0])
    # response tokens: "kind dog" + EOS, "good" + EOS, "rude" + EOS, "bad cat" + EOS
    assert batch["loss_mask"].sum(-1).tolist() == [3, 2, 2, 3]


def test_activation_checkpointing_takes_the_same_step(tiny_dir, toy_files, tmp_path):
    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "plain", max_steps=1))
    run_dpo(cfg(tiny_dir, toy_files, tmp_path / "ckpt", max_steps=1, activation_checkpointing=True))
    one, two = metrics(tmp_path / "plain")[0], metrics(tmp_path / "ckpt")[0]
    for k in ("dpo/loss", "train/grad_norm", "logps/chosen"):
        assert one[k] == pytest.approx(two[k], rel=1e-5), k


def test_a_folder_holding_another_configurations_checkpoint_is_not_silently_continued(tiny_dir, toy_files, tmp_path):
    out = tmp_path / "shared"
    run_dpo(cfg(tiny_dir, toy_files, out, max_steps=2, save_every=1))
    assert (out / "checkpoints" / "step-000002").exists()
    # another learning rate (or loss, beta, data...): refused, naming the field, before any training
    with pytest.raises(ConfigError, match=r"refusing to resume.*learning_rate: 0\.001 -> 0\.002"):
        run_dpo(cfg(tiny_dir, toy_files, out, max_steps=4, learning_rate=2e-3))
    with pytest.raises(ConfigError, match="loss: 'sigmoid' -> 'ipo'"):
        run_dpo(cfg(tiny_dir, toy_files, out, max_steps=4, loss="ipo"))
    # a longer run with the same settings continues it: steps 3 and 4 only, each logged once
    res = run_dpo(cfg(tiny_dir, toy_files, out, max_steps=4, save_every=1))
    assert res.steps == 4
    assert [r["step"] for r in metrics(out) if "dpo/loss" in r] == [1, 2, 3, 4]
    # resume: false starts afresh: the old checkpoints and rows are gone
    res = run_dpo(cfg(tiny_dir, toy_files, out, max_steps=1, learning_rate=2e-3, resume=False))
    assert [r["step"] for r in metrics(out) if "dpo/loss" in r] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001"]


def test_run_dpo_returns_the_common_outputs_and_writes_its_manifest(tiny_dir, toy_files, tmp_path):
    from rlhaif.manifest import manifest_matches, stage_fingerprint

    c = cfg(tiny_dir, toy_files, tmp_path, max_steps=1)
    res = run_dpo(c)
    assert res.output_dir == str(tmp_path) and res.model == str(tmp_path / "model") and res.steps == 1
    assert "dpo/loss" in res.metrics and "eval/accuracy" in res.metrics
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest_matches(tmp_path, stage_fingerprint("dpo", c))  # what a recipe computes: it would skip
    assert man["outputs"]["model"] == res.model
