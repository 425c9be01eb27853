"""The pieces of a PPO step that the loop composes: the scoring of a batch and the minibatch stream."""

import pytest
import torch

from rlhaif.data.records import PromptRecord
from rlhaif.errors import RlhaifError
from rlhaif.policy.ppo import Scoring, minibatches


def records(*prompts):
    return [PromptRecord(id=str(i), prompt=p) for i, p in enumerate(prompts)]


def test_scoring_clips_the_reward_and_returns_each_watcher_per_response():
    def reward(prompts, responses):
        return [20.0, -20.0, 1.5]

    def length(prompts, responses):
        return [len(r) for r in responses]

    scoring = Scoring(reward, "reward.py:score", {"len": length}, score_clip=10.0)
    scores, metrics = scoring(records("p", "p", "p"), ["a", "bb", "ccc"])
    assert scores.tolist() == [10.0, -10.0, 1.5]
    assert set(metrics) == {"monitor/len"} and metrics["monitor/len"].tolist() == [1.0, 2.0, 3.0]
    unclipped, none = Scoring(reward, "r", {}, score_clip=None)(records("p", "p", "p"), ["a", "b", "c"])
    assert unclipped.tolist() == [20.0, -20.0, 1.5] and none == {}


def test_scoring_names_the_watcher_that_returned_a_bad_score():
    scoring = Scoring(lambda p, r: [0.0, 1.0], "r", {"gold": lambda p, r: [0.0, float("nan")]}, score_clip=None)
    with pytest.raises(RlhaifError, match=r"monitor 'gold' returned nan for response 1"):
        scoring(records("p", "q"), ["a", "b"])


def test_minibatches_cover_every_row_once_per_epoch_and_draw_a_permutation_per_epoch():
    torch.manual_seed(0)
    got = [mb.tolist() for mb in minibatches(8, 2, 3, "cpu")]
    assert len(got) == 12 and all(len(mb) == 2 for mb in got)
    epochs = [sorted(sum(got[e * 4:(e + 1) * 4], [])) for e in range(3)]
    assert epochs == [list(range(8))] * 3
    torch.manual_seed(0)
    assert got[:4] == [p[k * 2:(k + 1) * 2].tolist() for p in [torch.randperm(8)] for k in range(4)]
    assert got[:4] != got[4:8]  # each epoch its own order
    # stopping after the first minibatch draws no second permutation: the random stream is where one left it
    torch.manual_seed(0)
    next(iter(minibatches(8, 2, 3, "cpu")))
    after_one = torch.rand(1)
    torch.manual_seed(0)
    torch.randperm(8)
    assert torch.equal(after_one, torch.rand(1))
