"""Evaluation: metrics (diversity, length, refusals, KL, win rate), the `rlhaif evaluate` stage, the report."""
