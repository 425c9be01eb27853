"""Truncated importance sampling (Yao et al. 2025): weights and mismatch metrics pinned by hand."""

import math

import pytest
import torch

from rlhaif.policy.importance import tis_weights


def test_tis_weights_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 0.0]])
    sampler = torch.tensor([[-1.0, -2.5, -2.0], [-0.2, -1.0, -7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w, st = tis_weights(trainer, sampler, mask, cap=2.0)
    # log ratios 0, 0.5, 1.5 | 0.1, -2.0, (masked); exp(1.5) = 4.48 is cut to the cap 2
    expect = [[1.0, math.exp(0.5), 2.0], [math.exp(0.1), math.exp(-2.0), 0.0]]
    assert w.flatten().tolist() == pytest.approx([x for row in expect for x in row], abs=1e-6)
    assert st["rollout/logprob_diff"].item() == pytest.approx((0 + 0.5 + 1.5 + 0.1 + 2.0) / 5, abs=1e-6)
    assert st["rollout/is_clip_share"].item() == pytest.approx(1 / 5)
    assert st["rollout/is_weight"].item() == pytest.approx(sum(map(sum, expect)) / 5, abs=1e-6)


def test_tis_identical_numerics_give_weight_one():
    lp = torch.log(torch.rand(4, 6)).requires_grad_()
    mask = torch.ones(4, 6)
    w, st = tis_weights(lp, lp.detach().clone(), mask)
    assert torch.equal(w, torch.ones(4, 6)) and not w.requires_grad
    assert st["rollout/logprob_diff"].item() == 0.0 and st["rollout/is_clip_share"].item() == 0.0


def test_tis_cap_must_be_positive():
    with pytest.raises(ValueError, match="cap"):
        tis_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), cap=0.0)
