"""The demo's log carries no transformers noise rlhaif expects (the LOAD REPORT of a reward head it is about to
train, the tokenizer's too-long warning for inputs it cuts itself), and real loading problems still warn."""

import contextlib
import io
import logging
import warnings

import pytest
from safetensors.torch import load_file, save_file

from rlhaif.models.loading import load_reward_backbone, load_tokenizer, warn_unexpected_load
from rlhaif.models.tiny import save_tiny


@contextlib.contextmanager
def transformers_log():
    """What transformers logs, read from a handler of our own: its default handler keeps the stderr of the first
    test that used it, which pytest may have replaced, so capfd alone can miss a warning later in the suite."""
    buf, handler = io.StringIO(), logging.StreamHandler()
    handler.stream = buf
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield buf
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("backbone", ["causal-lm", "minilm-l6"])
def test_new_reward_head_prints_no_load_report(tmp_path, capfd, backbone):
    name = str(save_tiny(tmp_path / "lm", "llama")) if backbone == "causal-lm" else backbone
    capfd.readouterr()
    with warnings.catch_warnings(), transformers_log() as log:
        warnings.simplefilter("error")  # no warning of rlhaif's either: the head is expected to be new
        model, tok = load_reward_backbone(name)
        tok.model_max_length = min(tok.model_max_length, 64)
        tok("word " * (tok.model_max_length + 10))  # longer than the model: RewardModel cuts it itself
    err = capfd.readouterr().err + log.getvalue()
    assert "LOAD REPORT" not in err and "MISSING" not in err and "Token indices sequence length" not in err, err
    assert not logging.getLogger("transformers.modeling_utils").filters  # the filter is gone after the load
    with transformers_log() as log:
        other = load_tokenizer(name)  # a tokenizer rlhaif does not cut for keeps the warning (the check can fail)
        other.model_max_length = 64
        other("word " * 80)
    assert "Token indices sequence length" in capfd.readouterr().err + log.getvalue()


def test_a_base_weight_missing_from_the_checkpoint_still_warns(tmp_path):
    folder = save_tiny(tmp_path / "lm", "llama")
    weights = load_file(folder / "model.safetensors")
    lost = "model.layers.0.mlp.up_proj.weight"
    save_file({k: v for k, v in weights.items() if k != lost}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=rf"weights of the base model did not load as saved: missing \(newly "
                                         rf"initialised\): {lost}$"):
        load_reward_backbone(str(folder))


def test_only_the_new_head_is_expected():
    class M:
        base_model_prefix = "model"

    info = {"missing_keys": {"score.weight", "model.norm.weight"}, "unexpected_keys": {"lm_head.weight"},
            "mismatched_keys": [("model.embed_tokens.weight", (3, 2), (4, 2))]}
    with pytest.warns(UserWarning) as got:
        lines = warn_unexpected_load(M(), info, "x")
    assert lines == ["missing (newly initialised): model.norm.weight", "size mismatch: model.embed_tokens.weight"]
    assert len(got) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_unexpected_load(M(), {"missing_keys": {"score.weight"}, "unexpected_keys": {"lm_head.weight"}},
                                    "x") == []


def test_adding_or_loading_lora_warns_nothing(tmp_path):
    # PEFT reads `model.is_gradient_checkpointing`, deprecated by transformers 5.24 with a FutureWarning that
    # landed in every LoRA stage's log (new adapters and saved ones loaded alike). In a fresh interpreter: pytest's
    # own settings ignore FutureWarning, a user's Python does not.
    import subprocess
    import sys

    lm = save_tiny(tmp_path / "lm", "llama")
    code = ("from rlhaif.models.loading import add_lora, load_causal_lm\n"
            f"m, _ = load_causal_lm({str(lm)!r})\n"
            f"add_lora(m, r=4).save_pretrained({str(tmp_path / 'adapter')!r})\n"
            f"load_causal_lm({str(tmp_path / 'adapter')!r}, merge_adapter=True)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "is_gradient_checkpointing" not in err, err
