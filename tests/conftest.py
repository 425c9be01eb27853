import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
HH_RLHF = os.path.abspath(os.path.join(SHARED, "data", "hh-rlhf", "harmless-base-test-first1800.jsonl.gz"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def hh_path():
    if not os.path.exists(HH_RLHF):
        pytest.fail(f"shared hh-rlhf data not found at {HH_RLHF} (expected ../shared beside the checkout)")
    return HH_RLHF


@pytest.fixture
def tiny_lm():
    from rlhaif.models.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm("llama")
