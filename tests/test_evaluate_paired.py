"""Paired gains in the evaluation: per-prompt differences, their bootstrap interval and detectable effect
pinned by hand, the interval's behaviour on a clear shift and on pure noise, and the report leading with them."""

import json
import math
import random

import pytest
from test_evaluate import tiny_setup  # noqa: F401  (a fixture)

from rlhaif.evaluate import metrics as M


def test_paired_difference_by_hand_on_three_prompts():
    # 2 samples per prompt. model: (1, 2) (3, 3) (0, 1) → per-prompt means 1.5, 3, 0.5
    # reference: (1, 1) (2, 2) (1, 1) → 1, 2, 1;  d = 0.5, 1, −0.5;  mean 1/3
    # sd(d) = sqrt(((1/6)² + (2/3)² + (5/6)²)/2) = sqrt(7/12) = 0.7637626;  se = sd/√3 = 0.4409586;  mde = 2.8·se
    # bootstrap over 3 prompts: all three draws the smallest d has probability 1/27 = 3.7 % > 2.5 %, so the
    # 2.5 % quantile of the resampled means is min(d) = −0.5 and the 97.5 % one is max(d) = 1.0
    r = M.paired_difference([1, 2, 3, 3, 0, 1], [1, 1, 2, 2, 1, 1], samples_per_prompt=2, rounds=2000, seed=3)
    assert r["mean"] == pytest.approx(1 / 3)
    assert r["se"] == pytest.approx(math.sqrt(7 / 12) / math.sqrt(3))
    assert r["mde"] == pytest.approx(2.8 * math.sqrt(7 / 12) / math.sqrt(3))
    assert (r["low"], r["high"]) == (pytest.approx(-0.5), pytest.approx(1.0))
    assert r["prompts"] == 3 and r["samples_per_prompt"] == 2
    assert M.per_prompt_means([1, 2, 3, 3], 2) == [1.5, 3.0]
    with pytest.raises(ValueError, match="runs of 2"):
        M.per_prompt_means([1, 2, 3], 2)
    with pytest.raises(ValueError, match="differ in number"):
        M.paired_difference([1, 2], [1], 1)
    # seeded: the same interval every time
    assert M.bootstrap_mean_ci([0.1, 0.5, -0.2, 0.9], 500, seed=1) == M.bootstrap_mean_ci([0.1, 0.5, -0.2, 0.9], 500, 1)


def test_interval_excludes_zero_for_a_clear_shift_and_includes_it_for_noise():
    rng = random.Random(0)
    # 100 prompts whose level varies a lot (sd 2) and is shared by both models: pairing removes it
    level = [rng.gauss(0, 2) for _ in range(100)]
    ref = [x + rng.gauss(0, 0.5) for x in level]
    shifted = [x + 0.4 + rng.gauss(0, 0.5) for x in level]
    noise = [x + rng.gauss(0, 0.5) for x in level]
    gain = M.paired_difference(shifted, ref, seed=0)
    assert gain["low"] > 0 and gain["mean"] == pytest.approx(0.4, abs=0.15)
    assert gain["mde"] < 0.4  # this set can detect a gain of this size
    null = M.paired_difference(noise, ref, seed=0)
    assert null["low"] < 0 < null["high"]
    # unpaired, the same shift hides in the prompt-to-prompt spread: the two 95 % intervals overlap
    a, b = M.mean_and_ci(shifted), M.mean_and_ci(ref)
    assert a["low"] < b["high"]


def test_paired_comparisons_against_reference_and_baseline():
    per_model = {"base": {"gold": [0.0, 0.0], "proxy": [1.0, 1.0]}, "sft": {"gold": [1.0, 2.0]},
                 "rl": {"gold": [2.0, 4.0], "length": [5.0, 7.0]}}
    rows = M.paired_comparisons(per_model, ["sft", "base"], 1, rounds=200)
    got = {(r["model"], r["against"], r["kind"]): r["mean"] for r in rows}
    # gold only where both have it; length only where both have it (none); proxy only base has
    assert got == {("base", "sft", "gold"): -1.5, ("rl", "sft", "gold"): 1.5, ("sft", "base", "gold"): 1.5,
                   ("rl", "base", "gold"): 3.0}
    assert M.paired_comparisons(per_model, ["base", "base"], 1, rounds=10) == M.paired_comparisons(per_model, ["base"], 1, rounds=10)


def test_report_leads_with_the_paired_gain_over_the_reference(tiny_setup):  # noqa: F811
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate
    from rlhaif.models.tiny import save_tiny

    d = tiny_setup
    save_tiny(d / "sft", "llama", seed=2)
    cfg = EvaluateConfig(models={"base": str(d / "base"), "sft": str(d / "sft"), "rl": str(d / "tuned")},
                         prompts=str(d / "prompts.jsonl"), output_dir=str(d / "paired"), reference="sft", k=2,
                         proxy_scorer=f"{d / 'scorers.py'}:good_words", gold_scorer=f"{d / 'scorers.py'}:length",
                         max_new_tokens=8, batch_size=4, bootstrap_rounds=10)
    run_evaluate(cfg)
    rep = json.loads((d / "paired" / "report.json").read_text())
    assert list(rep)[:3] == ["objectives", "headline", "paired"]
    assert rep["headline"][0].startswith("rl over sft: ") and " gold, " in rep["headline"][0]
    assert "at KL" in rep["headline"][0] and "detectable gain" in rep["headline"][0]
    assert rep["models"]["sft"]["kl"]["mean"] == 0.0  # the KL is measured to the reference
    # recompute the gold gain of rl over sft from the written samples: per-prompt means of 2 samples, paired
    samples = {n: [json.loads(l) for l in (d / "paired" / "samples" / f"{n}.jsonl").read_text().splitlines()]
               for n in ("sft", "rl")}
    assert len(samples["rl"]) == 10 and samples["rl"][0]["prompt_id"] == samples["rl"][1]["prompt_id"]
    per_prompt = {n: M.per_prompt_means([r["gold"] for r in s], 2) for n, s in samples.items()}
    want = sum(a - b for a, b in zip(per_prompt["rl"], per_prompt["sft"])) / 5
    row = next(r for r in rep["paired"] if (r["model"], r["against"], r["kind"]) == ("rl", "sft", "gold"))
    assert row["mean"] == pytest.approx(want) and row["prompts"] == 5 and row["samples_per_prompt"] == 2
    assert row["low"] <= row["mean"] <= row["high"]
    length = next(r for r in rep["paired"] if (r["model"], r["against"], r["kind"]) == ("rl", "sft", "length"))
    assert length["mean"] == pytest.approx(sum(r["tokens"] for r in samples["rl"]) / 10
                                           - sum(r["tokens"] for r in samples["sft"]) / 10)
    pairs = {(r["model"], r["against"]) for r in rep["paired"]}
    assert pairs == {("base", "sft"), ("rl", "sft"), ("sft", "base"), ("rl", "base")}
    html = (d / "paired" / "report.html").read_text()
    assert html.index("Paired gains") < html.index("<h2>Models</h2>")
    assert "KL: the k1 estimate" in html and "can come out slightly negative" in html  # a KL below 0 explained
    assert "rl over sft: " in html
