"""Evaluation: metrics pinned to hand-computed numbers, KL log-probs vs an unpadded forward pass, the
report end to end on tiny models, the CLI in a subprocess."""

import json
import math
import subprocess
import sys

import pytest
import torch

from rlhaif.evaluate import metrics as M
from rlhaif.evaluate.report import model_battles
from rlhaif.policy.kl import sequence_kl


def test_distinct_n_by_hand():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 6 in all, {a, b, c} unique
    assert M.distinct_n(texts, 1) == pytest.approx(3 / 6)
    # bigrams: (a b) (b a) (a b) | (a c) -> 4 in all, 3 unique (n-grams never cross responses)
    assert M.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert M.distinct_n(["one"], 2) == 0.0
    assert M.distinct_n(["Hello, hello!"], 1) == pytest.approx(3 / 4)  # hello , hello ! (case folded)


def test_refusal_rate_and_length():
    texts = ["I'm sorry, but I can't share that.", "Sure: boil it for six minutes.",
             "I cannot help with that request.", "I\u2019m unable to do this."]
    assert [M.is_refusal(t) for t in texts] == [True, False, True, True]
    assert M.refusal_rate(texts) == pytest.approx(3 / 4)
    assert M.refusal_rate([]) == 0.0
    assert M.mean_length([3, 5, 10]) == pytest.approx(6.0)


def test_sequence_kl_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-1.0, -2.0, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # row 0: (-1 + 1.5) + (-2 + 1) = -0.5 (third token masked); row 1: 0.5 + 1.5 + 0 = 2.0
    assert sequence_kl(lp, ref, mask).tolist() == pytest.approx([-0.5, 2.0])


def test_sequence_kl_drops_a_nan_or_inf_on_a_pad():
    # a pad's log-prob may be anything (NaN, −inf): it is dropped by selection, not multiplied by 0 (NaN·0 = NaN)
    lp = torch.tensor([[-1.0, float("nan")], [-0.5, float("-inf")]])
    ref = torch.tensor([[-1.5, -1.0], [-1.0, -2.0]])
    mask = torch.tensor([[1, 0], [1, 0]])
    assert sequence_kl(lp, ref, mask).tolist() == pytest.approx([0.5, 0.5])


def test_win_rate_both_orders_by_hand():
    r = M.win_rate([0.8, 0.4, 0.6], [0.6, 0.2, 0.4])
    # per-prompt means 0.7, 0.3, 0.5 -> mean 0.5; prompt 3's orders disagree
    assert r["win_rate"] == pytest.approx(0.5)
    assert (r["wins"], r["ties"], r["losses"]) == (1, 1, 1)
    assert r["consistency"] == pytest.approx(2 / 3)


def test_mean_and_ci_by_hand():
    r = M.mean_and_ci([1.0, 2.0, 3.0])
    se = math.sqrt(1.0 / 3)  # sample variance 1, n = 3
    assert r["mean"] == pytest.approx(2.0) and r["se"] == pytest.approx(se)
    assert r["low"] == pytest.approx(2 - 1.96 * se) and r["high"] == pytest.approx(2 + 1.96 * se)


def test_pearson_by_hand():
    from rlhaif.evaluate.metrics import pearson

    # x = 1,2,3 ; y = 1,3,2: means 2, 2; sxy = (-1)(-1) + 0 + (1)(0) = 1; sxx = 2; syy = 2 -> 1 / 2 = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) is None and pearson([1, 2], [1, 2]) is None


def test_model_battles():
    assert model_battles({"a": [1.0, 2.0], "b": [2.0, 2.0]}) == [("a", "b", 0.0), ("a", "b", 0.5)]


def test_response_logprobs_match_unpadded_forward(tiny_lm):
    from rlhaif.evaluate.run import response_logprobs

    model, tok = tiny_lm
    model.eval()
    prompts = [[2, 10, 11, 12, 13], [2, 20]]
    resps = [[30, 31], [40, 41, 42, 3]]
    got = response_logprobs(model, prompts, resps, tok.pad_token_id, temperature=0.7, batch_size=2)
    for p, r, g in zip(prompts, resps, got):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0] / 0.7
        lsm = torch.log_softmax(logits.float(), -1)
        want = [lsm[len(p) - 1 + j, t].item() for j, t in enumerate(r)]
        assert g.tolist() == pytest.approx(want, abs=1e-4)


SCORER = '''
def good_words(prompts, responses):
    return [float(r.split().count("good")) for r in responses]

def length(prompts, responses):
    return [float(len(r.split())) for r in responses]
'''


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from rlhaif.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("eval")
    save_tiny(d / "base", "llama", seed=0)
    save_tiny(d / "tuned", "llama", seed=1)
    (d / "scorers.py").write_text(SCORER)
    prompts = ["tell me about the cat", "what is good food", "how do you help <script>alert(1)</script>",
               "why is the sun big", "can you tell me a book"]
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                                             for i, p in enumerate(prompts)))
    (d / "ppo").mkdir()
    (d / "ppo" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "objective/score": 0.1 * s,
                                                                 "objective/kl": 0.05 * s}) + "\n"
                                                     for s in range(1, 6)))
    return d


def test_run_evaluate_end_to_end(tiny_setup):
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    d = tiny_setup
    cfg = EvaluateConfig(models={"base": str(d / "base"), "tuned": str(d / "tuned")}, prompts=str(d / "prompts.jsonl"),
                         output_dir=str(d / "out"), proxy_scorer=f"{d / 'scorers.py'}:good_words",
                         gold_scorer=f"{d / 'scorers.py'}:length", max_new_tokens=8, batch_size=4,
                         training_metrics={"ppo": str(d / "ppo" / "metrics.jsonl")}, bootstrap_rounds=20)
    res = run_evaluate(cfg)
    rep = json.loads((d / "out" / "report.json").read_text())
    assert set(rep["models"]) == {"base", "tuned"} and rep["baseline"] == "base"
    assert rep["models"]["base"]["kl"]["mean"] == 0.0  # the reference itself
    assert math.isfinite(rep["models"]["tuned"]["kl"]["mean"]) and rep["models"]["tuned"]["kl"]["mean"] != 0.0
    assert rep["training"]["ppo"]["steps"] == 5 and rep["training"]["ppo"]["kl_last"] == pytest.approx(0.25)
    # the gold score is the word count: recompute it from the written samples
    for name in ("base", "tuned"):
        rows = [json.loads(l) for l in (d / "out" / "samples" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 5
        gold = [float(len(r["response"].split())) for r in rows]
        assert [r["gold"] for r in rows] == gold
        assert rep["models"][name]["gold"]["mean"] == pytest.approx(sum(gold) / 5)
        assert rep["models"][name]["distinct_1"] == pytest.approx(M.distinct_n([r["response"] for r in rows], 1))
    assert rep["models"]["tuned"]["gold_delta_vs_baseline"] == pytest.approx(
        rep["models"]["tuned"]["gold"]["mean"] - rep["models"]["base"]["gold"]["mean"])
    # leaderboard: Bradley-Terry over per-prompt gold battles; the model with more wins rates higher
    gold = {n: [json.loads(l)["gold"] for l in (d / "out" / "samples" / f"{n}.jsonl").read_text().splitlines()]
            for n in ("base", "tuned")}
    wins = sum(a > b for a, b in zip(gold["base"], gold["tuned"])), sum(a < b for a, b in zip(gold["base"], gold["tuned"]))
    board = {r["model"]: r for r in rep["leaderboard"]}
    assert set(board) == {"base", "tuned"} and all(r["low"] <= r["rating"] <= r["high"] for r in board.values())
    if wins[0] != wins[1]:
        assert (board["base"]["rating"] > board["tuned"]["rating"]) == (wins[0] > wins[1])
    else:
        assert board["base"]["rating"] == pytest.approx(board["tuned"]["rating"], abs=1e-3)
    # each scorer's correlation with response length over all models' samples (numpy as the independent check)
    import numpy as np

    rows = [json.loads(l) for n in ("base", "tuned") for l in (d / "out" / "samples" / f"{n}.jsonl").read_text().splitlines()]
    for kind in ("proxy", "gold"):
        xs, ys = [r[kind] for r in rows], [r["tokens"] for r in rows]
        want = None if np.std(xs) == 0 or np.std(ys) == 0 else float(np.corrcoef(xs, ys)[0, 1])
        assert rep["score_length_correlation"][kind] == (pytest.approx(want) if want is not None else None)
    html = (d / "out" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html  # model and prompt text escaped
    assert html.count("data:image/png;base64,") >= 2
    assert (d / "out" / "plots" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert res.report.endswith("report.html")
    metrics = [json.loads(l) for l in (d / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [m["model"] for m in metrics] == ["base", "tuned"]


def test_evaluate_cli_and_bad_scorer(tiny_setup, tmp_path):
    d = tiny_setup
    base = [sys.executable, "-m", "rlhaif.cli", "evaluate", "--model", f"base={d / 'base'}",
            "--prompts", str(d / "prompts.jsonl"), "--max-prompts", "2", "--max-new-tokens", "4"]
    r = subprocess.run(base + ["-o", str(tmp_path / "a"), "--gold-scorer", f"{d / 'scorers.py'}:length"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and (tmp_path / "a" / "report.html").exists()
    r = subprocess.run(base + ["-o", str(tmp_path / "b"), "--gold-scorer", f"{d / 'scorers.py'}:nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "'nope' is not a function" in r.stderr and "Traceback" not in r.stderr


class _AlwaysA:
    """A judge backend with total position bias: it always answers (A)."""

    def continuation_logprobs(self, queries):
        return [[0.0, -20.0] for _ in queries]


def test_win_rate_by_judge_uses_both_orders(tiny_setup, tmp_path, monkeypatch):
    import rlhaif.feedback.ai.backends as B
    from rlhaif.evaluate.run import EvaluateConfig, run_evaluate

    monkeypatch.setattr(B, "make_backend", lambda *a, **k: _AlwaysA())
    d = tiny_setup
    cfg = EvaluateConfig(models={"base": str(d / "base"), "tuned": str(d / "tuned")}, prompts=str(d / "prompts.jsonl"),
                         output_dir=str(tmp_path / "out"), judge="any", max_prompts=3, max_new_tokens=4)
    rep = run_evaluate(cfg)
    wr = rep.models["tuned"]["win_rate"]
    # "A" wins in both orders: the candidate wins as (A) and loses as (B) -> 0.5 on every prompt, orders disagree
    assert wr["win_rate"] == pytest.approx(0.5, abs=1e-6) and wr["ties"] == 3 and wr["consistency"] == 0.0
    assert "win_rate" not in rep.models["base"]


def test_training_curves_summarise_monitored_scores_and_draw_them_against_kl(tmp_path):
    from rlhaif.evaluate.report import monitored_keys, training_curves

    rows = [{"step": i, "objective/score": 0.1 * i, "objective/kl": 0.5 * i, "monitor/gold": 0.2 - 0.05 * i}
            for i in range(1, 5)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "plain.jsonl").write_text(json.dumps({"step": 1, "objective/score": 1.0, "objective/kl": 0.0}) + "\n")
    png, summary = training_curves({"rl": str(tmp_path / "m.jsonl"), "plain": str(tmp_path / "plain.jsonl")})
    assert png[:4] == b"\x89PNG"
    assert summary["rl"]["monitor/gold_first"] == pytest.approx(0.15)
    assert summary["rl"]["monitor/gold_last"] == pytest.approx(0.0)
    assert "monitor/gold_last" not in summary["plain"] and monitored_keys(rows) == ["monitor/gold"]


def test_window_means_average_consecutive_steps_of_the_score_against_kl_panel():
    from rlhaif.evaluate.report import window_means

    pts = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (4.0, 7.0), (10.0, -1.0)]
    assert window_means(pts, 2) == [(0.5, 2.0), (3.0, 6.0), (10.0, -1.0)]
    assert window_means(pts, 5) == [(3.4, 3.0)]
