"""One scorer syntax: parse every form (and refuse malformed ones clearly), load reward models, Python
functions, and any sequence classifier by a label's logit or log-probability."""

import pytest
import torch

from rlhaif.data.records import Message
from rlhaif.errors import ConfigError
from rlhaif.scorers import ScorerSpec, load_scorer, parse_scorer
from test_ai_judge import GoodWordBackend  # a judge with known log-probabilities

RESPONSES = ["you are kind", "i hate this", "the sun is good and kind"]
PROMPTS = ["say", "say", [Message(role="user", content="say")]]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny random Llama sequence classifier with two named labels, built from a config."""
    from transformers import AutoModelForSequenceClassification

    from rlhaif.models.tiny import make_config, make_tokenizer

    tok = make_tokenizer()
    cfg = make_config("llama", len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    cfg.num_labels, cfg.id2label, cfg.label2id = 2, {0: "hate", 1: "nothate"}, {"hate": 0, "nothate": 1}
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg)
    d = tmp_path_factory.mktemp("clf")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _logits(d):
    from transformers import AutoModelForSequenceClassification

    from rlhaif.models.loading import _auto_tokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(d).eval(), _auto_tokenizer(str(d))
    with torch.no_grad():
        return model(**tok(RESPONSES, padding=True, return_tensors="pt")).logits


def test_parse_every_form(tmp_path):
    assert parse_scorer("reward_model:runs/rm/model") == ScorerSpec("reward_model", "reward_model:runs/rm/model",
                                                                   path="runs/rm/model")
    assert parse_scorer(str(tmp_path)).kind == "reward_model"  # a bare folder
    assert parse_scorer("runs/rm/model").path == "runs/rm/model"  # a bare name: folder or built-in
    c = parse_scorer("classifier:models/tox:nothate")
    assert (c.kind, c.path, c.label, c.output) == ("classifier", "models/tox", "nothate", "logit")
    c = parse_scorer("classifier:models/tox:nothate:logprob")
    assert (c.path, c.label, c.output) == ("models/tox", "nothate", "logprob")
    assert parse_scorer("classifier:C:/m:1").path == "C:/m"  # a path with a colon keeps it
    assert parse_scorer("python:my_rewards.py:score") == ScorerSpec("python", "python:my_rewards.py:score",
                                                                   path="my_rewards.py", function="score")
    assert parse_scorer("python:pkg.mod:fn").module == "pkg.mod"
    assert parse_scorer("pkg.mod:fn") == ScorerSpec("python", "pkg.mod:fn", module="pkg.mod", function="fn")
    assert parse_scorer("my_rewards.py:score").path == "my_rewards.py"
    assert parse_scorer("length").kind == "length"


@pytest.mark.parametrize("spec, why", [
    ("", "empty"), ("reward_model:", "no reward-model folder"), ("classifier:models/tox", "a folder and a label"),
    ("classifier::nothate", "a folder and a label"), ("python:my_rewards.py", "FILE.py:FUNCTION"),
    ("python:a b:fn", "not a module name"), ("pkg.mod:not-a-name", "MODULE:FUNCTION")])
def test_malformed_specs_say_what_and_list_the_forms(spec, why):
    with pytest.raises(ConfigError, match=why) as e:
        parse_scorer(spec)
    assert "classifier:PATH:LABEL" in str(e.value) and "python:FILE.py:FUNCTION" in str(e.value)


def test_classifier_reward_is_the_named_labels_logit_or_logprob(classifier_dir):
    logits = _logits(classifier_dir)
    by_name = load_scorer(f"classifier:{classifier_dir}:nothate", device="cpu")(PROMPTS, RESPONSES)
    assert by_name == pytest.approx(logits[:, 1].tolist(), abs=1e-5)
    assert load_scorer(f"classifier:{classifier_dir}:0", device="cpu")(PROMPTS, RESPONSES) == pytest.approx(
        logits[:, 0].tolist(), abs=1e-5)
    lp = load_scorer(f"classifier:{classifier_dir}:hate:logprob", device="cpu")(PROMPTS, RESPONSES)
    assert lp == pytest.approx(torch.log_softmax(logits, -1)[:, 0].tolist(), abs=1e-5)
    assert all(v < 0 for v in lp)


def test_classifier_with_an_unknown_label_lists_the_labels(classifier_dir):
    with pytest.raises(ConfigError, match=r"label 'toxic' is not one of the classifier's labels \(0=hate, 1=nothate\)"):
        load_scorer(f"classifier:{classifier_dir}:toxic", device="cpu")


def test_reward_model_forms_agree(tmp_path):
    from rlhaif.models.tiny import save_tiny
    from rlhaif.reward.model import load_reward_model

    d = save_tiny(tmp_path / "rm", "llama", reward=True)
    want = load_reward_model(d, device="cpu").score(PROMPTS, RESPONSES)
    for spec in (str(d), f"reward_model:{d}"):
        assert load_scorer(spec, device="cpu")(PROMPTS, RESPONSES) == pytest.approx(want, abs=1e-6)


def test_python_scorers_from_a_file_and_a_module(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text("def score(prompts, responses):\n    return [float(len(p)) + r.count('kind') for p, r in zip(prompts, responses)]\n")
    want = [3.0 + 1, 3.0, len("User: say") + 1.0]  # message prompts arrive as plain text
    for spec in (f"python:{f}:score", f"{f}:score"):
        assert load_scorer(spec)(PROMPTS, RESPONSES) == want
    assert load_scorer("python:rlhaif.scorers:length_scorer")(PROMPTS, RESPONSES) == [0.3, 0.3, 0.6]
    with pytest.raises(ConfigError, match="not found"):
        load_scorer(f"python:{tmp_path}/nope.py:score")
    with pytest.raises(ConfigError, match="'missing' is not a function"):
        load_scorer(f"{f}:missing")
    with pytest.raises(ConfigError, match="cannot import module"):
        load_scorer("no_such_module_xyz:fn")


# ----------------------------------------------------------------------------------------------- ensembles, judge


def test_ensemble_spec_parses_rule_alpha_and_a_bare_manifest_folder(tmp_path):
    from rlhaif.scorers import parse_scorer

    s = parse_scorer("ensemble:runs/ens:mean_minus_std:0.5")
    assert (s.kind, s.path, s.rule, s.alpha) == ("ensemble", "runs/ens", "mean_minus_std", 0.5)
    assert parse_scorer("ensemble:runs/ens").rule == "mean"
    assert parse_scorer("ensemble:runs/ens:min").rule == "min"
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text('{"members": ["member-0"]}')
    assert parse_scorer(str(tmp_path / "ens")).kind == "ensemble"
    with pytest.raises(ConfigError, match="unknown ensemble rule 'median'"):
        parse_scorer("ensemble:runs/ens:median")


def test_an_ensemble_of_tiny_reward_models_combines_its_members(tmp_path):
    import json

    from rlhaif.models.tiny import save_tiny
    from rlhaif.scorers import load_scorer

    for m in range(3):
        save_tiny(tmp_path / "ens" / f"member-{m}", "llama", seed=m, reward=True)
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({"members": [f"member-{m}" for m in range(3)]}))
    prompts, responses = ["the cat", "a dog"], ["is good", "was there"]
    each = [load_scorer(f"reward_model:{tmp_path / 'ens' / f'member-{m}'}")(prompts, responses) for m in range(3)]
    assert each[0] != each[1]  # different members: an ensemble with a spread
    lowest = load_scorer(f"ensemble:{tmp_path / 'ens'}:min")(prompts, responses)
    assert lowest == pytest.approx([min(e[i] for e in each) for i in range(2)], abs=1e-5)
    mean = load_scorer(str(tmp_path / "ens"))(prompts, responses)
    assert mean == pytest.approx([sum(e[i] for e in each) / 3 for i in range(2)], abs=1e-5)
    with pytest.raises(ConfigError, match="ensemble.json not found"):
        load_scorer(f"ensemble:{tmp_path / 'ens' / 'member-0'}")


def test_judge_scorer_is_the_debiased_probability_over_the_reference(tmp_path):
    import json
    import math

    from rlhaif.feedback.ai.constitution import load_constitution
    from rlhaif.scorers import JudgeScorer, parse_scorer, reference_lookup

    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"prompt": "q1", "response": "a poor answer"}) + "\n"
                    + json.dumps({"prompt": "q2", "response": "a good answer"}) + "\n")
    spec = parse_scorer(f"judge:some-judge?references={refs}")
    assert spec.kind == "judge" and spec.path == "some-judge"
    scorer = JudgeScorer(GoodWordBackend(), reference_lookup(spec, dict(spec.options)), load_constitution())
    s = 1 / (1 + math.exp(-2))  # σ(2)
    # q1: good vs poor: P(A) = σ(2) shown first, σ(−2) shown second → p = ½(σ(2) + 1 − σ(−2)) = σ(2)
    # q2: poor vs good: p = 1 − σ(2); q1 with 'poor' vs 'poor': ½
    got = scorer(["q1", "q2", "q1"], ["good one", "poor one", "poor one"])
    assert got == pytest.approx([s, 1 - s, 0.5], abs=1e-9)
    fixed = parse_scorer("judge:j?baseline=a+good+answer&principle=helpful")
    assert dict(fixed.options) == {"baseline": "a good answer", "principle": "helpful"}
    with pytest.raises(ConfigError, match="holds no reference response for the prompt 'q3'"):
        scorer(["q3"], ["good"])


@pytest.mark.parametrize("spec, message", [
    ("judge:j", "the judge needs one reference"),
    ("judge:j?baseline=x&references=y", "the judge needs one reference"),
    ("judge:j?baseline=x&temperature=1", "unknown judge option 'temperature'"),
    ("judge:?baseline=x", "no judge model"),
])
def test_bad_judge_specs_get_one_message(spec, message):
    from rlhaif.scorers import parse_scorer

    with pytest.raises(ConfigError, match=message):
        parse_scorer(spec)
