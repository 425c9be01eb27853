"""Inference engines that sample for the trainer (vLLM); HF ``generate`` stays the default sampler."""
