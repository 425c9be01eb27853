"""Constitution loading: the shipped default, clear errors for bad files, the random principle draw."""

import random

import pytest

from rlhaif.errors import ConfigError
from rlhaif.feedback.ai.constitution import load_constitution, load_fewshot

GOOD = """principles:
  - name: harm
    critique_request: Could it hurt anyone?
    revision_request: Rewrite it so it cannot.
    comparison_question: Which is less harmful?
"""


def test_default_constitution_has_16_distinct_principles_with_every_field():
    c = load_constitution()
    assert len(c.principles) >= 16
    assert len({p.name for p in c.principles}) == len(c.principles)
    for p in c.principles:
        assert p.critique_request.strip() and p.revision_request.strip() and p.comparison_question.strip()
    for topic in ("harm", "dangerous-advice", "illegal-acts", "assumptions-about-human", "bias", "insensitivity",
                  "baiting", "vulnerable-person", "honesty", "helpful-not-preachy"):
        c.get(topic)
    assert len(load_fewshot()) >= 1


def test_missing_field_names_file_index_and_field(tmp_path):
    bad = GOOD + """  - name: second
    critique_request: Is it rude?
    comparison_question: Which is politer?
"""
    path = tmp_path / "c.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as e:
        load_constitution(path)
    msg = str(e.value)
    assert str(path) in msg and "principles[1]" in msg and "'second'" in msg
    assert "revision_request" in msg and "missing" in msg


@pytest.mark.parametrize("text", ["principles: []\n", "principles:\n"])
def test_empty_principle_list_is_a_clear_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml.*(empty|expected a list)"):
        load_constitution(path)


def test_empty_string_field_and_unknown_key_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace("Which is less harmful?", "''"))
    with pytest.raises(ConfigError, match=r"principles\[0\].*comparison_question.*empty"):
        load_constitution(path)
    path.write_text(GOOD + "    critique_requst: typo\n")
    with pytest.raises(ConfigError, match=r"principles\[0\].*critique_requst"):
        load_constitution(path)
    with pytest.raises(ConfigError, match="not found"):
        load_constitution(tmp_path / "nope.yaml")


def test_sample_principle_draws_with_replacement_like_random_choice():
    c = load_constitution()
    rng = random.Random(7)
    drawn = [c.sample_principle(rng).name for _ in range(200)]
    ref = random.Random(7)
    assert drawn == [ref.choice(c.principles).name for _ in range(200)]
    assert len(set(drawn)) > 1 and len(set(drawn)) < len(drawn)  # repeats: with replacement
