"""The AI labeler measured against people (rlhaif.feedback.ai.calibration): agreement, position bias,
temperature scaling by hand-computed values; a judge at chance is flagged, one that copies people is not."""

import json
import math
import random

import pytest

from rlhaif.errors import RlhaifError
from rlhaif.feedback.ai.calibration import (agreement_scores, apply_temperature, fit_temperature, mean_log_loss,
                                            measure_labeler)
from rlhaif.feedback.ai.judge import AILabelConfig, run_ai_label
from test_ai_judge import GoodWordBackend as CopyingJudge  # agrees with the people of write_calibration


def test_agreement_scores_by_hand():
    assert agreement_scores([0.9, 0.2, 0.5, 0.6], [1.0, 1.0, 1.0, 0.0]) == [1.0, 0.0, 0.5, 0.0]


def test_log_loss_by_hand():
    # −mean[1·log 0.8, 0·… + 1·log(1 − 0.3)] for p = (0.8, 0.3), p_h = (1, 0)
    assert mean_log_loss([0.8, 0.3], [1.0, 0.0]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, abs=1e-12)
    # T = 2 halves the log-odds: σ(logit(0.8)/2) = σ(ln 2) = 2/3
    assert mean_log_loss([0.8], [1.0], temperature=2.0) == pytest.approx(-math.log(2 / 3), abs=1e-12)
    assert apply_temperature(0.8, 2.0) == pytest.approx(2 / 3, abs=1e-12)
    assert apply_temperature(0.8, math.inf) == 0.5


def test_fit_temperature_by_hand():
    # Four labels p = σ(2), the people agree on three: the best σ(2/T) is 3/4, so T = 2 / ln 3.
    p = [1 / (1 + math.exp(-2))] * 4
    assert fit_temperature(p, [1.0, 1.0, 1.0, 0.0]) == pytest.approx(2 / math.log(3), rel=1e-5)
    # Half right, half wrong: the log-odds carry nothing, every label becomes ½.
    assert math.isinf(fit_temperature(p, [1.0, 0.0, 1.0, 0.0]))


def test_measure_labeler_by_hand():
    # Three pairs (people prefer the first response in the first two, the second in the third), one human tie.
    p_ab = [0.8, 0.7, 0.4, 0.9]  # P(A), first response shown as A
    p_ba = [0.4, 0.6, 0.7, 0.9]  # P(A), first response shown as B
    p = [0.5 * (a + 1 - b) for a, b in zip(p_ab, p_ba)]  # 0.7, 0.55, 0.35, 0.5
    check = measure_labeler(p_ab, p_ba, p, [1.0, 1.0, 0.0, 0.5])
    assert check.n == 3
    assert check.agreement == pytest.approx(1.0)  # 0.7 > ½ ✓, 0.55 > ½ ✓, 0.35 < ½ with people at 0 ✓
    # first-slot picks: (0.8 ✓, 0.4 ✗), (0.7 ✓, 0.6 ✓), (0.4 ✗, 0.7 ✓) → 4 of 6
    assert check.first_slot_share == pytest.approx(4 / 6)
    # both orders pick the same response: pair 1 (y1, y1) ✓, pair 2 (y1, y2) ✗, pair 3 (y2, y2) ✓
    assert check.order_agreement == pytest.approx(2 / 3)
    assert check.mean_confidence == pytest.approx((0.7 + 0.55 + 0.65) / 3)
    assert check.log_loss == pytest.approx(-(math.log(0.7) + math.log(0.55) + math.log(0.65)) / 3)
    assert check.log_loss_calibrated <= check.log_loss + 1e-12
    assert check.low <= check.agreement <= check.high


def test_measure_labeler_refuses_a_set_of_ties():
    with pytest.raises(ValueError, match="all ties"):
        measure_labeler([0.6], [0.4], [0.6], [0.5])


# --------------------------------------------------------------------------- the stage with a known judge
def write_calibration(path, n=120):
    """People prefer the answer holding 'good' (the chosen); the rejected one never holds it."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"question {i}", "chosen": f"a good answer {i}",
                                "rejected": f"a poor answer {i}", "p": 1.0}) + "\n")


def write_completions(path):
    with open(path, "w") as f:
        for i, r in enumerate(["good one", "bad one"]):
            f.write(json.dumps({"prompt_id": "p0", "prompt": "hello", "index": i, "response": r}) + "\n")


class CoinJudge:
    """Random log-probabilities, whatever the options say."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)

    def continuation_logprobs(self, queries):
        return [(self.rng.gauss(0, 1), self.rng.gauss(0, 1)) for _ in queries]


def stage_config(tmp_path, **kw):
    write_calibration(tmp_path / "calib.jsonl")
    write_completions(tmp_path / "completions.jsonl")
    return AILabelConfig(input=str(tmp_path / "completions.jsonl"), calibration=str(tmp_path / "calib.jsonl"),
                         output_dir=str(tmp_path / "out"), **kw)


def test_a_judge_at_chance_is_flagged(tmp_path, capsys):
    result = run_ai_label(stage_config(tmp_path), backend=CoinJudge())
    lab = result.labeler
    assert lab["n"] == 120 and lab["at_chance"] is True
    assert lab["low"] <= 0.5
    assert "not better than chance" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["outputs"]["labeler"]["at_chance"] is True
    rows = [json.loads(l) for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("labeler/agreement" in r for r in rows)


def test_a_judge_that_copies_the_people_is_not_flagged(tmp_path, capsys):
    result = run_ai_label(stage_config(tmp_path), backend=CopyingJudge())
    lab = result.labeler
    assert lab["agreement"] == 1.0 and lab["at_chance"] is False
    assert lab["first_slot_share"] == pytest.approx(0.5)  # always picks 'good', shown first half the time
    out = capsys.readouterr().out
    assert "100.0%" in out and "not better than chance" not in out


def test_min_agreement_stops_before_labeling(tmp_path):
    with pytest.raises(RlhaifError, match="below min_agreement"):
        run_ai_label(stage_config(tmp_path, min_agreement=0.6), backend=CoinJudge())
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


def test_calibrate_rescales_the_written_labels(tmp_path):
    # The copying judge is right every time at p = σ(2): temperature scaling sharpens it (T < 1).
    result = run_ai_label(stage_config(tmp_path, calibrate=True), backend=CopyingJudge())
    assert result.labeler["temperature"] < 1.0
    pair = json.loads((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()[0])
    assert pair["chosen"] == "good one"
    assert pair["p"] == pytest.approx(apply_temperature(1 / (1 + math.exp(-2)), result.labeler["temperature"]),
                                      abs=1e-4)
    assert pair["p"] > 1 / (1 + math.exp(-2))


def test_calibrate_needs_a_calibration_set(tmp_path):
    with pytest.raises(ValueError, match="need 'calibration'"):
        AILabelConfig(input="x.jsonl", calibrate=True)
