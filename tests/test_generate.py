"""Batched generation: left padding, EOS handling, seeds, and the completions it writes."""

import json
import math

import pytest
import torch

from rlhaif.data.records import PromptRecord
from rlhaif.errors import DataError, RlhaifError
from rlhaif.generate import SamplingConfig, generate_completions, read_prompts, sample
from rlhaif.tokens import encode_prompts, left_pad
from rlhaif.models.tiny import make_tiny_causal_lm

PROMPTS = [PromptRecord(id="p0", prompt="hello"),
           PromptRecord(id="p1", prompt="tell me about the big red car and the small blue house please"),
           PromptRecord(id="p2", prompt=[{"role": "system", "content": "be kind"},
                                         {"role": "user", "content": "what is the sun ?"}])]


def test_left_pad_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_encode_prompts_applies_chat_template_and_checks_length():
    _, tok = make_tiny_causal_lm("llama")
    (ids,) = encode_prompts(tok, ["hello"])
    assert tok.convert_ids_to_tokens(ids) == ["<|user|>", "hello", "<|end|>", "<|assistant|>"]
    (ids,) = encode_prompts(tok, [PROMPTS[2].prompt])
    assert tok.convert_ids_to_tokens(ids)[:4] == ["<|system|>", "be", "kind", "<|end|>"]
    with pytest.raises(RlhaifError, match=r"^prompt 0 is 4 tokens, longer than max_prompt_length=3; "):
        encode_prompts(tok, ["hello"], max_prompt_length=3)
    (cut,) = encode_prompts(tok, ["hello"], max_prompt_length=3, truncate=True)  # keeps the end
    assert tok.convert_ids_to_tokens(cut) == ["hello", "<|end|>", "<|assistant|>"]


def _run(model, tok, seed, k=2, **kw):
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0, **kw)
    recs, stats = generate_completions(model, tok, PROMPTS, k, sampling, batch_size=4, seed=seed, model_name="tiny")
    return recs, stats


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_same_seed_same_completions_different_seed_different(arch):
    model, tok = make_tiny_causal_lm(arch)
    a, _ = _run(model, tok, seed=3)
    torch.manual_seed(999)  # global RNG state before the call must not matter
    b, _ = _run(model, tok, seed=3)
    c, _ = _run(model, tok, seed=4)
    assert [r.response for r in a] == [r.response for r in b]
    assert [r.response for r in a] != [r.response for r in c]
    assert [(r.prompt_id, r.index) for r in a] == [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]
    assert a[0].sampling == {"max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "do_sample": True,
                             "repetition_penalty": 1.0, "seed": 3, "k": 2}
    assert a[4].prompt == PROMPTS[2].prompt and a[0].model == "tiny"


def test_greedy_batched_equals_one_at_a_time():
    """Left padding + attention mask: a short prompt batched beside a long one continues exactly as alone."""
    model, tok = make_tiny_causal_lm("llama", seed=2)
    enc = encode_prompts(tok, [p.prompt for p in PROMPTS])
    greedy = SamplingConfig(max_new_tokens=6, do_sample=False)
    together = sample(model, tok, enc, greedy, batch_size=3)
    alone = [sample(model, tok, [e], greedy, batch_size=1)[0] for e in enc]
    assert together == alone


def _biased_lm(p_eos, pad_is_eos=False):
    """A tiny LM whose next-token distribution is fixed: EOS with probability p_eos, never the pad token,
    the rest uniform. Any pad id in a response can then only come from batch padding."""
    model, tok = make_tiny_causal_lm("llama")
    if pad_is_eos:
        tok.pad_token = tok.eos_token
    V = len(tok)
    head = torch.nn.Linear(model.config.hidden_size, V, bias=True)
    others = V - 1 - (0 if pad_is_eos else 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(math.log((1 - p_eos) / others))
        head.bias[tok.eos_token_id] = math.log(p_eos) if p_eos > 0 else -float("inf")
        head.bias[0] = -float("inf") if not pad_is_eos else head.bias[0]  # id 0 is <pad>
    model.lm_head = head
    return model, tok


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_eos_sets_finished_and_no_padding_leaks(pad_is_eos):
    model, tok = _biased_lm(p_eos=0.1, pad_is_eos=pad_is_eos)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    enc = encode_prompts(tok, [p.prompt for p in PROMPTS] * 4)
    torch.manual_seed(0)
    out = sample(model, tok, enc, SamplingConfig(max_new_tokens=8, temperature=1.0), batch_size=12)
    assert len(out) == 12
    assert {f for _, f in out} == {True, False}  # both kinds in one batch (fixed seed)
    for ids, finished in out:
        if finished:
            assert ids[-1] == eos and eos not in ids[:-1]
        else:
            assert len(ids) == 8 and eos not in ids
        if not pad_is_eos:
            assert pad not in ids
    recs, stats = generate_completions(model, tok, PROMPTS, 4, SamplingConfig(max_new_tokens=8, temperature=1.0),
                                       batch_size=12, seed=0)
    assert {r.finished for r in recs} == {True, False}
    for r in recs:
        assert "<pad>" not in r.response and "<|end|>" not in r.response
    assert stats["responses"] == 12
    assert stats["finished_share"] == round(sum(r.finished for r in recs) / 12, 3)


def test_new_tokens_counted_and_text_decoded():
    model, tok = _biased_lm(p_eos=0.0)  # never stops: every response is exactly max_new_tokens long
    recs, stats = generate_completions(model, tok, PROMPTS[:2], 2, SamplingConfig(max_new_tokens=5), seed=1)
    assert stats["new_tokens"] == 4 * 5 and not any(r.finished for r in recs)
    for r in recs:
        assert len(r.response.split()) >= 3  # word-level tokens decode to words (punctuation may attach)


def test_read_prompts_formats_and_errors(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n", encoding="utf-8")
    assert [(r.id, r.prompt) for r in read_prompts(tmp_path / "p.txt")] == [("0", "first prompt"),
                                                                             ("2", "second prompt")]  # line 3
    rows = [{"id": "a", "prompt": "x"}, {"prompt": "y"}, {"prompt_id": "c", "prompt": "z", "response": "r"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [r.id for r in read_prompts(tmp_path / "p.jsonl")] == ["a", "1", "c"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n{"text": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'prompt': is missing$"):
        read_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(RlhaifError, match=r"nope.txt: file not found"):
        read_prompts(tmp_path / "nope.txt")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl:2: field 'id': duplicate prompt id 'a' \(first on line 1\)"):
        read_prompts(tmp_path / "dup.jsonl")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(RlhaifError, match=r"empty.txt: the file holds no prompts"):
        read_prompts(tmp_path / "empty.txt")
