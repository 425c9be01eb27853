"""rlhaif: align a causal language model with human or AI feedback (RLHF, RLAIF, Constitutional AI).

The folders follow the pipeline: data -> feedback (human, ai) -> reward -> policy -> evaluate.
See docs/architecture.md for the map (stages, files, formulas and where each lives).
"""

__version__ = "0.1.0"
