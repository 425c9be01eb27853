"""Stage configs: YAML + flags, typos with suggestions, YAML syntax errors with their line."""

from typing import Optional

import pytest
from pydantic import BaseModel, ConfigDict

from rlhaif.config import StageConfig, dump_yaml, load_yaml
from rlhaif.errors import ConfigError


class Optim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = 1e-5
    """Step size."""


class ToyConfig(StageConfig):
    output_dir: str = "out"
    """Where the stage writes."""
    learning_rate: float = 1e-5
    """Step size."""
    batch_size: int = 8
    """Pairs per step."""
    beta: Optional[float] = None
    """KL strength."""
    optim: Optim = Optim()
    """Nested settings."""


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_then_flags_override_and_none_flags_do_not(tmp_path):
    path = _yaml(tmp_path, "learning_rate: 0.001\nbatch_size: 4\n")
    cfg = ToyConfig.from_sources(path, {"batch_size": 2, "beta": None})
    assert (cfg.learning_rate, cfg.batch_size, cfg.beta, cfg.output_dir) == (0.001, 2, None, "out")
    assert ToyConfig.from_sources(None, {"beta": 0.1}).beta == 0.1


def test_sub_mapping_of_a_recipe(tmp_path):
    path = _yaml(tmp_path, "dpo:\n  beta: 0.2\nppo:\n  batch_size: 3\n")
    assert ToyConfig.from_sources(path, where="dpo").beta == 0.2
    assert ToyConfig.from_sources(path, where="absent").batch_size == 8


def test_typo_names_the_key_and_suggests(tmp_path):
    path = _yaml(tmp_path, "lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        ToyConfig.from_sources(path)
    assert str(e.value) == f"{path}: unknown key 'lerning_rate' for ToyConfig; did you mean 'learning_rate'?"
    with pytest.raises(ConfigError, match=r"^<flags>: unknown key 'bach_size' for ToyConfig; did you mean 'batch_size'"):
        ToyConfig.from_sources(None, {"bach_size": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'optim.learnin_rate' for Optim; did you mean "
                                          r"'optim.learning_rate'\?"):
        ToyConfig.validate_dict({"optim": {"learnin_rate": 1}}, "r.yaml")


def test_unknown_key_without_a_near_match_lists_known_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' for ToyConfig; known keys: batch_size, beta, "
                                          r"learning_rate, optim, output_dir$"):
        ToyConfig.validate_dict({"zzz": 1})


def test_bad_value_names_key(tmp_path):
    path = _yaml(tmp_path, "batch_size: many\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'batch_size': Input should be a valid integer"):
        ToyConfig.from_sources(path)


def test_yaml_syntax_error_names_line(tmp_path):
    path = _yaml(tmp_path, "learning_rate: 0.1\nbatch_size: 4\nbeta: [0.1, 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"{path}:4: not valid YAML (")  # the unclosed list runs off the end
    path = _yaml(tmp_path, "a: 1\n  b: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML \(mapping values are not allowed here\)"):
        load_yaml(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        ToyConfig.from_sources(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"expected a mapping of keys to values at the top level"):
        load_yaml(_yaml(tmp_path, "- a\n- b\n"))


def test_dump_and_reload_round_trip(tmp_path):
    cfg = ToyConfig(learning_rate=0.5, beta=0.1, optim=Optim(learning_rate=2.0))
    dump_yaml(cfg, tmp_path / "dump.yaml")
    assert ToyConfig.from_sources(tmp_path / "dump.yaml") == cfg


def test_required_field_and_assignment_validation():
    from rlhaif.cli import GenerateConfig

    with pytest.raises(ConfigError, match=r"^<config>: key 'prompts': is required$"):
        GenerateConfig.validate_dict({})
    cfg = ToyConfig()
    with pytest.raises(Exception):
        cfg.batch_size = "x"


def test_renamed_keys_fail_and_suggest_the_new_name():
    from rlhaif.policy.dpo import DPOConfig
    from rlhaif.policy.ppo import PPOConfig
    from rlhaif.policy.sft import SFTConfig
    from rlhaif.reward.train import RewardTrainConfig

    for cls, data in ((SFTConfig, {"data": "d"}), (RewardTrainConfig, {"data": "d"}), (DPOConfig, {"pairs": "p"})):
        with pytest.raises(ConfigError, match=r"r\.yaml: unknown key 'save_steps' .*did you mean 'save_every'\?"):
            cls.validate_dict({**data, "save_steps": 5}, "r.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'lora' for DPOConfig; did you mean 'lora_r'\? \(lora: false is lora_r: 0"):
        DPOConfig.validate_dict({"pairs": "p", "lora": False}, "r.yaml")
    assert PPOConfig.validate_dict({"prompts": "p", "save_every": 5}).save_every == 5


def test_every_trainer_is_built_on_one_base_without_retyped_fields():
    from rlhaif.config import TrainConfig, TrainLoopConfig
    from rlhaif.policy.dpo import DPOConfig
    from rlhaif.policy.ppo import PPOConfig
    from rlhaif.policy.sft import SFTConfig
    from rlhaif.reward.train import RewardTrainConfig

    for cls in (SFTConfig, RewardTrainConfig, DPOConfig, PPOConfig):
        assert issubclass(cls, TrainConfig)
        base = TrainLoopConfig if issubclass(cls, TrainLoopConfig) else TrainConfig
        for name, field in base.model_fields.items():
            assert cls.model_fields[name].annotation == field.annotation, (cls.__name__, name)
    for cls in (SFTConfig, DPOConfig, PPOConfig):  # one LoRA vocabulary: lora_r (0 = full) + lora_alpha
        assert {"lora_r", "lora_alpha", "merge_lora"} <= set(cls.model_fields) and "lora" not in cls.model_fields
