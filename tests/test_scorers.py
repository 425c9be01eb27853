"""One scorer syntax: parse every form (and refuse malformed ones clearly), load reward models, Python
functions, and any sequence classifier by a label's logit or log-probability."""

import pytest
import torch

from rlhaif.data.records import Message
from rlhaif.errors import ConfigError
from rlhaif.scorers import ScorerSpec, load_scorer, parse_scorer

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
