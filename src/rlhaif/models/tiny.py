"""Tiny random models for tests: GPT-2, Llama and Qwen2 configs (2 layers, hidden 64) and a word-level
tokenizer built in memory with a chat template. No download anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import torch

ARCHS = ("gpt2", "llama", "qwen2")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

# A small closed vocabulary: tests write prompts and responses from these words.
WORDS = ("the a an is are was be to of and in that it for on with as you i he she they we this what how why "
         "who where when can do does not no yes please thanks hello help tell me about good bad happy sad cat dog "
         "sun moon water fire tree book car house food music time day night red blue green big small fast slow "
         "love hate safe harm kind rude honest true false answer question sure sorry ok one two three four five").split()


def make_tokenizer(vocab_words: tuple[str, ...] = WORDS):
    """A word-level fast tokenizer with pad/eos/bos/unk and chat-role tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(vocab_words) | set(".,?!")))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    from tokenizers import AddedToken

    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="<|end|>", padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, max_pos: int = 256,
                pad_token_id: int = 0, bos_token_id: int = 2, eos_token_id: int = 3):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                  eos_token_id=eos_token_id, tie_word_embeddings=False)
    if arch == "gpt2":
        # dropout off, as in Llama/Qwen2 (GPT-2 defaults to 0.1): RLHF log-probabilities must be deterministic
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_pos, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0, **common)
    if arch == "llama":
        return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=heads // 2, intermediate_size=hidden * 2,
                           max_position_embeddings=max_pos, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=heads // 2, intermediate_size=hidden * 2,
                           max_position_embeddings=max_pos, **common)
    raise ValueError(f"unknown tiny arch {arch!r}; use one of {ARCHS}")


def make_tiny_causal_lm(arch: str = "llama", seed: int = 0, tokenizer=None, **kw):
    """(model, tokenizer): a random tiny causal LM of ``arch`` with the in-memory tokenizer."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = tokenizer or make_tokenizer()
    cfg = make_config(arch, len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                               bos_token_id=tok.bos_token_id)
    return model, tok


def make_tiny_reward_model(arch: str = "llama", seed: int = 0, tokenizer=None, **kw):
    """(model, tokenizer): a random tiny sequence-classification model with one output (a reward model)."""
    from transformers import AutoModelForSequenceClassification

    tok = tokenizer or make_tokenizer()
    cfg = make_config(arch, len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, **kw)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg), tok


def save_tiny(path: str | os.PathLike, arch: str = "llama", seed: int = 0, reward: bool = False, **kw) -> Path:
    """Save a tiny model + tokenizer with save_pretrained, so CLI tests can pass a folder."""
    path = Path(path)
    model, tok = (make_tiny_reward_model if reward else make_tiny_causal_lm)(arch, seed, **kw)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
