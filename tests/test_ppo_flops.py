"""benchmarks/ppo_flops.py: the matrix-product count behind the "arithmetic ratio" in BENCHMARKS.md, by hand."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ppo_flops.py"
_spec = importlib.util.spec_from_file_location("ppo_flops", _PATH)
ppo_flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ppo_flops)


def test_trunk_macs_per_token_by_hand():
    # hidden 8, 2 heads (head dim 4), 1 kv head, MLP 16, 3 layers, 6 positions:
    # q, o 8·8 each = 128; k, v 8·4 each = 64; MLP 3·8·16 = 384; attention 2·8·6/2 = 48 → 624 per layer
    assert ppo_flops.trunk_macs_per_token(8, 3, 2, 1, 16, 6) == 3 * 624


def test_step_macs_by_hand():
    # one layer, hidden 4, 1 head, 1 kv head, MLP 8; vocab 10; prompt 2, response 3 → T = 5, 2 epochs.
    # trunk per token: 4·4·2 + 4·4·2 + 3·4·8 + 2·4·5/2 = 32 + 32 + 96 + 20 = 180; head per position: 40.
    t, h = 180, 40
    shared = 4 * t + 3 * h + 5 * t  # generation: trunk(T − 1) + head(R); reward model: trunk(T)
    ours = shared + 2 * (5 * t + 4 * h) + 2 * 3 * (5 * t + 4 * h)
    sep = ours + 5 * t + 2 * 3 * 5 * t
    # TRL 1.0.0: old log-probs from generate()'s scores (no pass); reference trunk(T) + head(T); value trunk(T)
    trl = shared + (5 * t + 5 * h) + 5 * t + 2 * 3 * (5 * t + 5 * h) + 2 * 3 * 5 * t
    got = ppo_flops.step_macs(4, 1, 1, 1, 8, 10, prompt=2, response=3, epochs=2)
    assert got == pytest.approx({"rlhaif": ours, "rlhaif-sepvalue": sep, "trl-1.0.0": trl})
    # LoRA: the frozen base is trained with input gradients only (2× forward instead of 3×); TRL's value
    # trunk stays fully trained
    lora = ppo_flops.step_macs(4, 1, 1, 1, 8, 10, prompt=2, response=3, epochs=2, lora=True)
    assert lora["rlhaif"] == pytest.approx(shared + 2 * (5 * t + 4 * h) + 2 * 2 * (5 * t + 4 * h))
    assert lora["trl-1.0.0"] == pytest.approx(shared + (5 * t + 5 * h) + 5 * t + 2 * 2 * (5 * t + 5 * h)
                                              + 2 * 3 * 5 * t)
