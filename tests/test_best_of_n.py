"""Best-of-N selection, the rejection-sampling recipe and online DPO as recipe rounds, on tiny models."""

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from rlhaif.best_of_n import BestOfNConfig, best_of_n, run_best_of_n, scored_pairs
from rlhaif.data.io import read_records, write_records
from rlhaif.data.records import CompletionRecord, DemoRecord, PairRecord
from rlhaif.errors import ConfigError

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: one torch thread


def _completions():
    # two prompts, four responses each; the score of a response is its number of "good"
    texts = {"a": ["good", "good good good", "meh", "good good"], "b": ["x", "y", "good", "good"]}
    return [CompletionRecord(prompt_id=pid, prompt=f"prompt {pid}", response=t, index=j, model="m")
            for pid, ts in texts.items() for j, t in enumerate(ts)]


def count_good(prompts, responses):
    return [float(r.split().count("good")) for r in responses]


def test_kept_response_has_the_top_score_and_all_n_scores_are_recorded():
    kept, scored = best_of_n(_completions(), count_good)
    assert [(c.prompt_id, c.response) for c in kept] == [("a", "good good good"), ("b", "good")]  # tie: lower index
    assert [c.index for c in kept] == [1, 2]
    assert kept[0].scores == [1.0, 3.0, 0.0, 2.0] and kept[1].scores == [0.0, 0.0, 1.0, 1.0]
    assert all(c.score == max(c.scores) for c in kept)
    assert [c.score for c in scored] == [1.0, 3.0, 0.0, 2.0, 0.0, 0.0, 1.0, 1.0]
    # n: only the first n responses of each prompt compete
    kept, scored = best_of_n(_completions(), count_good, n=1)
    assert [c.response for c in kept] == ["good", "x"] and len(scored) == 2 and kept[0].scores == [1.0]
    # per_prompt and top_share
    kept, _ = best_of_n(_completions(), count_good, per_prompt=2)
    assert [c.response for c in kept] == ["good good good", "good good", "good", "good"]
    kept, _ = best_of_n(_completions(), count_good, per_prompt=2, top_share=0.5)
    assert [c.response for c in kept] == ["good good good", "good good"]
    with pytest.raises(ConfigError, match="top_share"):
        best_of_n(_completions(), count_good, top_share=0.0)


def test_best_of_n_stage_writes_every_score_and_sft_demos(tmp_path):
    write_records(tmp_path / "c.jsonl", _completions())
    (tmp_path / "s.py").write_text("def score(p, r):\n    return [float(x.split().count('good')) for x in r]\n")
    res = run_best_of_n(BestOfNConfig(completions=str(tmp_path / "c.jsonl"), scorer=f"python:{tmp_path}/s.py:score",
                                      output_dir=str(tmp_path / "out")))
    assert res.kept == 2 and res.scored == 8 and res.mean_kept_score == 2.0
    scores = read_records(res.scores, CompletionRecord)
    assert [c.score for c in scores] == [1.0, 3.0, 0.0, 2.0, 0.0, 0.0, 1.0, 1.0]
    best = read_records(res.completions, CompletionRecord)
    assert best[0].scores == [1.0, 3.0, 0.0, 2.0]
    demos = read_records(res.demos, DemoRecord)
    assert [(d.prompt, d.response) for d in demos] == [("prompt a", "good good good"), ("prompt b", "good")]


def test_scored_pairs_take_best_and_worst_and_name_the_labeler():
    pairs = scored_pairs(_completions(), count_good, "python:s.py:score")
    assert [(p.chosen, p.rejected) for p in pairs] == [("good good good", "meh"), ("good", "y")]
    assert all(p.source == "scorer:python:s.py:score" and p.policy == "m" for p in pairs)
    assert pairs[0].margin_score == 3.0


# ---------------------------------------------------------------- the recipes on tiny models

NOUNS = "cat dog sun moon water fire tree book".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlhaif.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("rs")
    save_tiny(d / "lm", "llama", seed=0)
    save_tiny(d / "rm", "llama", seed=0, reward=True)
    rng = random.Random(0)
    pairs = [PairRecord(prompt=f"tell me about the {n}", chosen=f"kind good {n}", rejected=f"rude bad {n}")
             for n in (rng.choice(NOUNS) for _ in range(16))]
    write_records(d / "pairs.jsonl", pairs)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"tell me about the {n}"}) + "\n"
                                             for i, n in enumerate(NOUNS[:4])))
    return d


def tiny_recipe(name, d, run_dir):
    """The shipped recipe with its models, data and sizes swapped for tiny ones; the wiring is the file's."""
    data = yaml.safe_load((ROOT / "src" / "rlhaif" / "assets" / "recipes" / f"{name}.yaml").read_text())
    data.update(run_dir=str(run_dir), policy=str(d / "lm"), rounds=2)
    small = {"pairs": dict(inputs=[str(d / "pairs.jsonl")]),
             "reward": dict(backbone=str(d / "rm"), max_length=48, epochs=1, eval_fraction=0.0),
             "generate": dict(prompts=str(d / "prompts.jsonl"), k=3, max_new_tokens=6),
             "sft": dict(max_steps=2, batch_size=4, max_length=48, lora_r=4),
             "dpo": dict(max_steps=2, batch_size=2, max_length=48, lora_r=4),
             "evaluate": dict(prompts=str(d / "prompts.jsonl"), max_prompts=2, max_new_tokens=6, k=1,
                              bootstrap_rounds=10)}
    for st in data["stages"]:
        st.update(small.get(st["stage"], {}))
    return data


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_rejection_sampling_recipe_end_to_end(tiny, tmp_path):
    from rlhaif.pipeline import recipe_from_dict, run_recipe

    run = tmp_path / "run"
    summary = run_recipe(recipe_from_dict(tiny_recipe("rejection_sampling", tiny, run)), log=lambda s: None)
    assert [(s["name"], s["round"]) for s in summary["stages"]] == [
        ("pairs", None), ("rm", None), ("gen", 1), ("best", 1), ("sft", 1), ("evaluate", 1),
        ("gen", 2), ("best", 2), ("sft", 2), ("evaluate", 2)]
    for r in (1, 2):
        rd = run / f"round{r}"
        best = read_records(rd / "best" / "best.jsonl", CompletionRecord)
        assert len(best) == 4 and all(len(c.scores) == 3 and c.score == max(c.scores) for c in best)
        assert manifest(rd / "best")["config"]["scorer"] == f"reward_model:{run / 'rm'}"
        assert manifest(rd / "sft")["config"]["data"] == str(rd / "best" / "demos.jsonl")
        assert (rd / "evaluate" / "report.json").exists()
    # round 2 samples from round 1's fine-tuned policy, and fine-tunes it further
    sft1 = manifest(run / "round1" / "sft")["outputs"]["model"]
    assert manifest(run / "round2" / "gen")["config"]["model"] == sft1 == manifest(run / "round2" / "sft")["config"]["model"]
    report = json.loads((run / "round2" / "evaluate" / "report.json").read_text())  # paths relative to its run folder
    evaluated = run / "round2" / "evaluate" / report["paths_relative_to"] / report["config"]["models"]["round"]
    assert evaluated.resolve() == Path(manifest(run / "round2" / "sft")["outputs"]["model"]).resolve()


def test_online_dpo_round_two_pairs_come_from_round_one_policy_and_the_named_labeler(tiny, tmp_path):
    from rlhaif.pipeline import recipe_from_dict, run_recipe
    from rlhaif.scorers import load_scorer

    run = tmp_path / "run"
    summary = run_recipe(recipe_from_dict(tiny_recipe("online_dpo", tiny, run)), log=lambda s: None)
    assert [(s["name"], s["round"]) for s in summary["stages"]] == [
        ("pairs", None), ("labeler_rm", None), ("gen", 1), ("label", 1), ("dpo", 1), ("gen", 2), ("label", 2),
        ("dpo", 2), ("evaluate", None)]
    dpo1 = manifest(run / "round1" / "dpo")["outputs"]["model"]
    gen2 = manifest(run / "round2" / "gen")
    assert gen2["config"]["model"] == dpo1  # round 2 samples with round 1's policy
    labeler = f"reward_model:{run / 'labeler_rm'}"
    pairs = read_records(run / "round2" / "label" / "pairs.jsonl", PairRecord)
    assert pairs
    sampled = {(c.prompt_id, c.response) for c in read_records(run / "round2" / "gen" / "completions.jsonl",
                                                                CompletionRecord)}
    score = load_scorer(labeler, device="cpu")
    for p in pairs:
        assert p.policy == dpo1 and p.source == f"scorer:{labeler}"
        assert (p.id, p.chosen) in sampled and (p.id, p.rejected) in sampled  # the round-2 samples
        c, r = score([p.prompt, p.prompt], [p.chosen, p.rejected])
        assert c > r  # chosen by the named labeler
    assert manifest(run / "round2" / "dpo")["config"]["pairs"] == str(run / "round2" / "label" / "pairs.jsonl")
    assert manifest(run / "round2" / "dpo")["config"]["model"] == dpo1
