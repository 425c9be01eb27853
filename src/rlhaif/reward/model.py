"""The reward model ("the coach"): a backbone with a scalar head that scores (prompt, response) text.

Saved folder (what PPO, evaluation and the simulated annotators load with ``load_reward_model``):

    config.json, model.safetensors, tokenizer files   ``save_pretrained`` of AutoModelForSequenceClassification
                                                      (num_labels=1): transformers loads it unchanged
    reward_config.json          how text becomes tokens: {"text_format", "max_length", "truncation_side", "backbone"}
    reward_normalization.json   {"mean", "std", "n"} of raw scores over a reference set (absent: mean 0, std 1)
    eval.json                   held-out accuracy, mean margin, calibration (written by training / eval)

Text formats. ``"pair"`` (encoders such as BERT / MiniLM): ``[CLS] prompt_text [SEP] response [SEP]``, cut
longest-first; 'left' truncation drops the prompt's oldest tokens and the response's end (``_fit_pairs``).
``"chat"`` (causal LMs): the chat template via ``encode_prompt_response`` (prompt cut from the left first),
right-padded; the head reads the last non-pad token.
Scores are always computed from text with the reward model's own tokenizer, so a policy with another
tokenizer can be scored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from rlhaif.data.io import umask_mode
from rlhaif.data.records import Prompt, prompt_text
from rlhaif.errors import RlhaifError

CONFIG_FILE = "reward_config.json"
NORM_FILE = "reward_normalization.json"
TEXT_FORMATS = ("pair", "chat")


def default_text_format(model) -> str:
    """Encoders (model types with a masked-LM head: BERT, RoBERTa, DeBERTa...) read a sentence pair;
    everything else is treated as a causal LM and reads the chat template."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return "pair" if model.config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "chat"


class RewardModel:
    """A sequence-classification model (one output) + its tokenizer + how text is encoded + normalization.

    ``score`` returns normalized scores ``(raw - mean) / std``; ``raw_scores`` returns the head's output.
    ``forward_scores(batch)`` is the differentiable forward used by training: raw scores (N,) for an encoded
    batch of N texts. (A reward model's outputs are "scores" everywhere: PPO's ``objective/score`` is the same
    number, normalized.)
    """

    def __init__(self, model, tokenizer, text_format: str = "pair", max_length: int = 512,
                 truncation_side: str = "left", mean: float = 0.0, std: float = 1.0, backbone: str = ""):
        if text_format not in TEXT_FORMATS:
            raise RlhaifError(f"unknown reward text_format '{text_format}'; use one of {', '.join(TEXT_FORMATS)}")
        if truncation_side not in ("left", "right"):
            raise RlhaifError(f"truncation_side must be 'left' or 'right', got '{truncation_side}'")
        self.model, self.tokenizer = model, tokenizer
        self.text_format, self.max_length, self.truncation_side = text_format, max_length, truncation_side
        self.mean, self.std, self.backbone = float(mean), float(std), backbone
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize N (prompt, response) texts into one padded batch (tensors of shape (N, T))."""
        assert len(prompts) == len(responses), (len(prompts), len(responses))
        tok = self.tokenizer
        if self.text_format == "pair":
            texts, resps = self._fit_pairs(prompts, responses)
            return dict(tok(texts, resps, truncation="longest_first", max_length=self.max_length, padding=True,
                            return_tensors="pt"))
        from rlhaif.data.collate import encode_prompt_response, pad_batch

        enc = [encode_prompt_response(tok, p, r, self.max_length) for p, r in zip(prompts, responses)]
        batch = pad_batch(enc, tok.pad_token_id, side="right")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def _fit_pairs(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> tuple[list[str], list[str]]:
        """Prompt and response texts cut to fit ``max_length`` tokens together ("pair" format).

        Longest part first, as ``truncation="longest_first"``: the response keeps at least half the budget (or
        all of itself), the prompt the rest. 'left' cuts the prompt's oldest tokens and the response's end
        (the latest turns and the start of the reply stay); 'right' cuts the end of both. Texts are cut at token
        offsets, so tokenizing the result gives the kept tokens (the caller still truncates as a safety net)."""
        tok = self.tokenizer
        texts, resps = [prompt_text(p) for p in prompts], list(responses)
        tok.truncation_side = self.truncation_side  # for the safety-net truncation of the caller
        budget = self.max_length - tok.num_special_tokens_to_add(pair=True)
        enc_p = tok(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        enc_r = tok(resps, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for i, (po, ro) in enumerate(zip(enc_p, enc_r)):
            if len(po) + len(ro) <= budget:
                continue
            r_keep = min(len(ro), max(budget // 2, budget - len(po)))
            p_keep = min(len(po), budget - r_keep)
            resps[i] = resps[i][:ro[r_keep - 1][1]] if r_keep else ""
            if self.truncation_side == "left":
                texts[i] = texts[i][po[len(po) - p_keep][0]:] if p_keep else ""
            else:
                texts[i] = texts[i][:po[p_keep - 1][1]] if p_keep else ""
        return texts, resps

    def token_lengths(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[int]:
        """Tokens each (prompt, response) takes once encoded (after truncation), without padding."""
        if self.text_format == "pair":
            enc = self.tokenizer(*self._fit_pairs(prompts, responses), truncation="longest_first",
                                 max_length=self.max_length)
            return [len(ids) for ids in enc["input_ids"]]
        from rlhaif.data.collate import encode_prompt_response

        return [len(encode_prompt_response(self.tokenizer, p, r, self.max_length).input_ids)
                for p, r in zip(prompts, responses)]

    def forward_scores(self, batch: dict[str, torch.Tensor], model=None) -> torch.Tensor:
        """Raw scores (N,) of an encoded batch, with gradients. ``model`` overrides ``self.model``
        (training passes the Accelerate-wrapped module)."""
        model = model if model is not None else self.model
        return model(**batch).logits[:, 0].float()

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 16) -> list[float]:
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        for i in range(0, len(responses), batch_size):
            batch = self.encode(prompts[i:i + batch_size], responses[i:i + batch_size])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out.extend(self.forward_scores(batch).tolist())
        self.model.train(was_training)
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 16) -> list[float]:
        """Normalized scores ``(raw - mean) / std`` of each (prompt, response); mean/std from the model folder."""
        return [(s - self.mean) / self.std for s in self.raw_scores(prompts, responses, batch_size)]

    def config_dict(self) -> dict:
        return {"text_format": self.text_format, "max_length": self.max_length,
                "truncation_side": self.truncation_side, "backbone": self.backbone}

    def save(self, out_dir: str | os.PathLike, accelerator=None, model=None) -> Path:
        """``save_pretrained`` model + tokenizer, reward_config.json and reward_normalization.json into
        ``out_dir``. Files are written in a temporary folder and renamed into place one by one (other files
        of the run folder, such as metrics.jsonl and eval.json, stay)."""
        import shutil
        import tempfile

        out_dir = Path(out_dir)
        model = model if model is not None else self.model
        if accelerator is not None:
            accelerator.wait_for_everyone()
            if not accelerator.is_main_process:
                return out_dir
            model = accelerator.unwrap_model(model)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out_dir))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / NORM_FILE).write_text(json.dumps({"mean": self.mean, "std": self.std}, indent=2))
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2))
            umask_mode(tmp)
            # reward_config.json goes last: its presence marks a complete save.
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == CONFIG_FILE):
                os.replace(f, out_dir / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out_dir


def build_reward_model(backbone: str, max_length: int = 512, truncation_side: str = "left",
                       text_format: str | None = None, dtype: str = "float32") -> RewardModel:
    """A fresh scalar head on ``backbone`` (built-in name, folder, or a saved reward model to fine-tune)."""
    from rlhaif.models.loading import load_reward_backbone

    model, tok = load_reward_backbone(backbone, dtype=dtype)
    fmt = text_format or default_text_format(model)
    return RewardModel(model, tok, fmt, max_length, truncation_side, backbone=backbone)


def load_reward_model(path_or_name: str | os.PathLike, device: str | torch.device | None = None,
                      dtype: str = "float32") -> RewardModel:
    """Load a saved reward model folder (reads reward_config.json and reward_normalization.json).

    A plain sequence-classification folder without reward_config.json also loads: its text format is
    guessed from the architecture, max length 512, left truncation, no normalization."""
    from rlhaif.models.loading import load_reward_backbone

    path = Path(path_or_name)
    model, tok = load_reward_backbone(str(path_or_name), dtype=dtype)
    cfg = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).exists() else {}
    norm = json.loads((path / NORM_FILE).read_text()) if (path / NORM_FILE).exists() else {}
    std = float(norm.get("std", 1.0)) or 1.0
    rm = RewardModel(model, tok, cfg.get("text_format") or default_text_format(model),
                     int(cfg.get("max_length", 512)), cfg.get("truncation_side", "left"),
                     float(norm.get("mean", 0.0)), std, cfg.get("backbone", str(path_or_name)))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    return rm
