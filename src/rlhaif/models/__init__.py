"""Model loading (HF folders, GGUF files, built-in names), LoRA, value heads, tiny test models."""

from rlhaif.models.loading import load_causal_lm, load_reward_backbone, load_tokenizer, resolve_model

__all__ = ["load_causal_lm", "load_reward_backbone", "load_tokenizer", "resolve_model"]
