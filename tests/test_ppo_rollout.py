"""Rollout layout, the LoRA reference after SFT, scorer validation and bad input for `rlhaif ppo`."""

import math
import types

import pytest
import torch
from torch import nn

from rlhaif.errors import RlhaifError
from rlhaif.policy.kl import kl_penalized_rewards
from rlhaif.policy.ppo import PPOConfig, check_batch_sizes, check_scores, encode_all_prompts, load_policy, load_scorer
from rlhaif.policy.rollout import sample_responses

EOS, PAD, V = 3, 0, 20


class RowCache:
    """A stand-in KV cache that remembers which original row each batch row is (the sampler drops finished
    rows from the batch through ``batch_select_indices``, as from transformers' caches)."""

    def __init__(self, rows):
        self.rows = rows

    def batch_select_indices(self, indices):
        self.rows = [self.rows[i] for i in indices.tolist()]


class ScriptedLM(nn.Module):
    """Emits token script[row][k] at the k-th generated position, whatever the prompt."""

    def __init__(self, script, prompt_len):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.script, self.prompt_len = script, prompt_len

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False, logits_to_keep=0,
                past_key_values=None):
        k = attention_mask.shape[1] - self.prompt_len  # tokens generated so far
        cache = past_key_values or RowCache(list(range(input_ids.shape[0])))
        logits = torch.full((input_ids.shape[0], 1, V), -1e9)
        for b, r in enumerate(cache.rows):
            row = self.script[r]
            logits[b, 0, row[min(k, len(row) - 1)]] = 0.0
        return types.SimpleNamespace(logits=logits, past_key_values=cache)


def test_rollout_masks_and_eos_look_at_the_response_only():
    # Row 0 stops at EOS after one token; row 1's *prompt* holds EOS but its response never does.
    prompts = [[5, 6, 7], [5, EOS, 7]]
    lm = ScriptedLM([[10, EOS, 12, 12], [11, 12, 13, 14]], prompt_len=3)
    ro = sample_responses(lm, prompts, PAD, [EOS], max_new_tokens=3, temperature=1.0)
    assert ro.response_ids.tolist() == [[10, EOS, PAD], [11, 12, 13]]
    assert ro.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert ro.eos_reached.tolist() == [True, False]
    # The score lands on each row's last real token (EOS for row 0), never on the pad; only row 1 is penalised.
    zeros = torch.zeros(2, 3)
    rewards, stats = kl_penalized_rewards(torch.tensor([1.0, 1.0]), zeros, zeros, ro.response_mask, beta=0.1,
                                          eos_reached=ro.eos_reached, missing_eos_penalty=2.0)
    assert rewards.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]


def test_rollout_stops_when_every_row_has_ended():
    lm = ScriptedLM([[EOS], [9, EOS]], prompt_len=2)
    ro = sample_responses(lm, [[5, 6], [5, 6]], PAD, [EOS], max_new_tokens=8)
    assert ro.response_ids.shape == (2, 2) and ro.eos_reached.all()


class FixedLM(nn.Module):
    """The same next-token logits at every position, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.logits = torch.tensor(logits)

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False, logits_to_keep=0,
                past_key_values=None):
        k = len(logits_to_keep) if torch.is_tensor(logits_to_keep) else (logits_to_keep or input_ids.shape[1])
        return types.SimpleNamespace(logits=self.logits.expand(input_ids.shape[0], k, V).clone(), past_key_values=None)


def test_rollout_samples_the_plain_softmax_at_temperature():
    # softmax(l / 0.7) by hand for l = (−30, 0, 1, 0.5, −1, 2, −2, 0, 0, ...): pad ≈ 0; token 5 (in the prompt, which a
    # repetition penalty would lower) has exp(2/0.7) = 17.4117; EOS (3, which a min-length rule would forbid) has
    # exp(0.5/0.7) = 2.0427; the tail tokens (which top-k / top-p would cut) have exp(0) = 1 each.
    # Z = 1 (tok 1) + 4.1727 (tok 2) + 2.0427 + 0.2397 (tok 4) + 17.4117 + 0.0574 (tok 6) + 13·1 (toks 7..19) = 37.9243
    logits = [-30.0, 0.0, 1.0, 0.5, -1.0, 2.0, -2.0] + [0.0] * (V - 7)
    expected = {5: 17.4117 / 37.9243, EOS: 2.0427 / 37.9243, 4: 0.2397 / 37.9243, 19: 1 / 37.9243}
    lm = FixedLM(logits)
    torch.manual_seed(0)
    ro = sample_responses(lm, [[5, 5, 2]] * 4000, PAD, [EOS], max_new_tokens=1, temperature=0.7)
    counts = torch.bincount(ro.response_ids[:, 0], minlength=V).float() / 4000
    for token, p in expected.items():  # binomial std ≤ 0.008: a 0.03 band cannot hide top-k/top-p/penalties
        assert abs(counts[token].item() - p) < 0.03, (token, counts[token].item(), p)
    assert counts[7:].min() > 0.01  # every tail token is still drawn
    # the log-probs PPO uses for the ratio and the KL come from that same distribution
    from rlhaif.policy.rollout import response_logprobs

    lp = response_logprobs(lm, ro, temperature=0.7)
    picked = ro.response_ids[:3, 0].tolist()
    z = 37.9243
    by_hand = {5: math.log(17.4117 / z), EOS: math.log(2.0427 / z), 2: math.log(4.1727 / z), 1: math.log(1 / z),
               4: math.log(0.2397 / z), 6: math.log(0.0574 / z), **{t: math.log(1 / z) for t in range(7, V)}}
    assert lp[:3, 0].tolist() == pytest.approx([by_hand[t] for t in picked], abs=1e-3)


def test_sample_categorical_draws_the_given_distribution_and_never_an_empty_token():
    from rlhaif.policy.rollout import sample_categorical

    # zero mass at the first, a middle and the last token: u = 0 or u = c_i must not land on them
    p = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    torch.manual_seed(0)
    draws = sample_categorical(p.expand(20000, 6).contiguous())
    freq = torch.bincount(draws, minlength=6).float() / 20000
    assert freq[[0, 2, 5]].sum().item() == 0.0
    for token, q in ((1, 0.5), (3, 0.3), (4, 0.2)):  # binomial std ≤ 0.0036: a 0.015 band is ≈ 4 std
        assert abs(freq[token].item() - q) < 0.015, (token, freq[token].item())
    # unnormalised rows (softmax rounding) are fine, and each row draws from its own distribution
    rows = torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert sample_categorical(rows).tolist() == [2, 0]
    # a real vocabulary: a one-hot row far from both ends
    big = torch.zeros(4, 49152)
    big[:, 31337] = 1.0
    assert sample_categorical(big).tolist() == [31337] * 4


def _lora_sft_folder(tmp_path):
    from rlhaif.models.loading import add_lora, load_causal_lm
    from rlhaif.models.tiny import save_tiny

    base = save_tiny(tmp_path / "base", "llama")
    model, tok = load_causal_lm(str(base))
    model = add_lora(model, r=4, alpha=8)
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p, std=0.5)  # a trained SFT adapter: lora_B is no longer zero
    model.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    return base, model


def test_lora_reference_after_lora_sft_is_the_sft_policy(tmp_path):
    from rlhaif.models.loading import load_causal_lm
    from rlhaif.policy.logprobs import token_logprobs

    base, sft = _lora_sft_folder(tmp_path)
    cfg = PPOConfig(model=str(tmp_path / "sft"), prompts="unused.jsonl", reward_fn="x:y", lora_r=4)
    model, ref, tok = load_policy(cfg)
    assert ref is None  # LoRA: the reference is the policy with PPO's adapter disabled
    ids = torch.tensor([[2, 10, 20, 30, 40, 50]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        with model.policy.disable_adapter():
            ref_lp = token_logprobs(model.policy, ids, mask)
        sft_lp = token_logprobs(sft.eval(), ids, mask)
        raw, _ = load_causal_lm(str(base))
        raw_lp = token_logprobs(raw, ids, mask)
    torch.testing.assert_close(ref_lp, sft_lp, atol=1e-4, rtol=0)
    assert (ref_lp - raw_lp).abs().max() > 1e-2  # and not the raw base
    assert any("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    assert all(not p.requires_grad for n, p in model.policy.named_parameters() if "lora" not in n)


def test_ppo_after_lora_sft_saves_a_policy_that_keeps_the_sft_weights(tmp_path):
    """PPO merges the SFT adapter into the base and trains its own adapter; saving that adapter alone would name
    the raw base and lose the SFT weights, so the saved policy must be merged."""
    from rlhaif.models.loading import load_causal_lm
    from rlhaif.policy.logprobs import token_logprobs
    from rlhaif.policy.ppo import run_ppo

    base, sft = _lora_sft_folder(tmp_path)
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "the cat"}\n{"prompt": "a dog"}\n')
    (tmp_path / "rules.py").write_text("def score(prompts, responses):\n    return [0.0 for _ in responses]\n")
    cfg = PPOConfig(model=str(tmp_path / "sft"), prompts=str(tmp_path / "prompts.jsonl"),
                    reward_fn=f"{tmp_path / 'rules.py'}:score", output_dir=str(tmp_path / "ppo"), lora_r=4,
                    steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=3, learning_rate=1e-9)
    run_ppo(cfg)
    saved = tmp_path / "ppo" / "model"
    assert not (saved / "adapter_config.json").exists()
    ids = torch.tensor([[2, 10, 20, 30, 40, 50]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ppo_lp = token_logprobs(load_causal_lm(str(saved))[0], ids, mask)
        sft_lp = token_logprobs(sft.eval(), ids, mask)
        raw_lp = token_logprobs(load_causal_lm(str(base))[0], ids, mask)
    torch.testing.assert_close(ppo_lp, sft_lp, atol=1e-3, rtol=0)
    assert (ppo_lp - raw_lp).abs().max() > 1e-2


def test_full_finetune_reference_is_a_frozen_copy(tmp_path):
    from rlhaif.models.tiny import save_tiny

    save_tiny(tmp_path / "m", "gpt2")
    model, ref, _ = load_policy(PPOConfig(model=str(tmp_path / "m"), prompts="p", reward_fn="x:y", lora_r=0))
    assert ref is not None and not any(p.requires_grad for p in ref.parameters())
    assert ref is not model.policy and all(p.requires_grad for p in model.policy.parameters())


def test_scores_are_validated_with_the_scorer_named():
    assert check_scores([1, 2.5], 2, "f").tolist() == [1.0, 2.5]
    with pytest.raises(RlhaifError, match=r"my\.py:score returned 1 scores for 2 responses"):
        check_scores([1.0], 2, "my.py:score")
    with pytest.raises(RlhaifError, match=r"my\.py:score returned nan for response 1"):
        check_scores([1.0, float("nan")], 2, "my.py:score")
    with pytest.raises(RlhaifError, match="list of numbers"):
        check_scores(None, 2, "my.py:score")


def test_reward_fn_from_a_file_and_bad_specs(tmp_path):
    f = tmp_path / "rules.py"
    f.write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    scorer, name = load_scorer(PPOConfig(prompts="p", reward_fn=f"{f}:score"))
    from rlhaif.data.records import Message

    assert scorer([[Message(role="user", content="hi")], "x"], ["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(RlhaifError, match="'nope' is not a function"):
        load_scorer(PPOConfig(prompts="p", reward_fn=f"{f}:nope"))
    with pytest.raises(RlhaifError, match="missing.py not found"):
        load_scorer(PPOConfig(prompts="p", reward_fn=f"{tmp_path}/missing.py:score"))
    with pytest.raises(RlhaifError, match="must look like 'module:function'"):
        load_scorer(PPOConfig(prompts="p", reward_fn="no_colon"))


def test_batch_sizes_checked_at_start_with_one_message():
    with pytest.raises(RlhaifError, match=r"batch_size \(16\) must be a multiple of mini_batch_size \(6\).*\[1, 2, 4, 8, 16\]"):
        check_batch_sizes(PPOConfig(prompts="p", reward_fn="a:b", batch_size=16, mini_batch_size=6))
    with pytest.raises(RlhaifError, match="needs a scorer"):
        check_batch_sizes(PPOConfig(prompts="p"))


def test_prompt_longer_than_the_context_is_named():
    from rlhaif.data.records import PromptRecord
    from rlhaif.models.tiny import make_tokenizer

    tok = make_tokenizer()
    recs = [PromptRecord(id="short", prompt="hello"), PromptRecord(id="long", prompt="the " * 250)]
    cfg = PPOConfig(prompts="prompts.jsonl", reward_fn="a:b", max_prompt_length=1000, max_new_tokens=16)
    with pytest.raises(RlhaifError, match=r"prompts\.jsonl: prompt long is 25\d tokens.*context of 256"):
        encode_all_prompts(cfg, tok, recs, context=256)
    with pytest.raises(RlhaifError, match=r"prompts\.jsonl: .*longer than max_prompt_length=100"):
        encode_all_prompts(cfg.model_copy(update={"max_prompt_length": 100}), tok, recs, context=256)
