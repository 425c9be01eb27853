"""Numeric precision of a stage: bf16 where the CPU does bf16 natively and it measured faster, fp32 elsewhere.

``choose_precision("auto")`` picks bfloat16 on a CPU only when both hold:

1. the CPU has native bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``; without them
   oneDNN emulates bf16 through fp32 and gains nothing), and
2. a 512² matrix product in bf16 measured faster than in fp32 on this machine, now (best of a few runs,
   a few milliseconds, done once per process).

Anything else, and every non-CPU device under ``auto``, gets float32 (ask for ``bf16`` explicitly on a GPU).
The choice, with its reason and the measured speed-up, goes into the stage manifest (``as_manifest``).

Two ways to use it, for two kinds of work:

- **Updates, reward scoring, full-sequence log-probs** (compute-bound: many tokens per weight read): run the
  fp32 model under ``autocast(choice)``. Matrix products run in bf16, norms, softmax and losses in fp32, and the
  trainable parameters and AdamW state stay fp32 (master weights).
- **Sampling** (memory-bound: one token per weight read at batch 1): autocast would read the fp32 weights and
  cast them at every step, which costs more than it saves; ``sampling_copy(model, choice)`` gives a bf16 copy
  of the weights instead (half the bytes per decode step), refreshed from the fp32 master after each update.

Measured on the project's 2-core CPU (AMX; BENCHMARKS.md, under load): the bf16 copy made sampling 2–3.4×
faster at batch 1–8 and 1.5× at batch 32; autocast made PPO/DPO update passes only 1.2–1.5× faster. The 512²
product this module times is a proxy for "bf16 pays here", not a measurement of each stage.

Numerics: the rollout's old log-probabilities and the update's new ones must come from the same precision
(``autocast`` on both, or on neither) for PPO's first ratio to be 1; the sampler's bf16 copy only decides which
tokens are drawn.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rlhaif.errors import ConfigError

REQUESTS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: str  # "float32" or "bfloat16"
    requested: str  # "auto", "fp32" or "bf16"
    device: str
    reason: str
    native_bf16: bool | None = None  # CPU only
    measured_speedup: float | None = None  # bf16 / fp32 matmul speed, when measured

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32

    @property
    def is_bf16(self) -> bool:
        return self.dtype == "bfloat16"

    def as_manifest(self) -> dict:
        return asdict(self)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (empty where /proc/cpuinfo is absent, e.g. macOS)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def _best_matmul_seconds(dtype: torch.dtype, n: int, reps: int) -> float:
    g = torch.Generator().manual_seed(0)  # its own stream: the first stage of a process must not draw other
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))  # tokens than the later ones
    a @ b  # warm-up (oneDNN picks its kernel on the first call)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=1)
def measured_bf16_speedup(n: int = 512, reps: int = 5) -> float:
    """fp32 time / bf16 time of an n×n matrix product on the CPU (best of ``reps``; > 1: bf16 is faster)."""
    return _best_matmul_seconds(torch.float32, n, reps) / _best_matmul_seconds(torch.bfloat16, n, reps)


def choose_precision(requested: str = "auto", device: str | torch.device = "cpu", *,
                     flags: set[str] | None = None, speedup: float | None = None,
                     min_speedup: float = 1.2) -> PrecisionChoice:
    """Decide float32 or bfloat16 for ``device``. ``flags`` and ``speedup`` replace the machine's CPU flags and
    the measured bf16/fp32 matmul speed-up (tests); ``min_speedup`` is what "measured faster" means."""
    if requested not in REQUESTS:
        raise ConfigError(f"precision: '{requested}' is not one of {', '.join(REQUESTS)}")
    dev = torch.device(device).type
    if requested == "fp32":
        return PrecisionChoice("float32", requested, dev, "asked for fp32")
    if requested == "bf16":
        return PrecisionChoice("bfloat16", requested, dev, "asked for bf16")
    if dev != "cpu":
        return PrecisionChoice("float32", requested, dev, f"auto picks bf16 on the CPU only (device {dev})")
    native = cpu_has_native_bf16(flags)
    if not native:
        return PrecisionChoice("float32", requested, dev, "no native bf16 on this CPU (avx512_bf16 / amx_bf16)",
                               native_bf16=False)
    s = measured_bf16_speedup() if speedup is None else speedup
    if s < min_speedup:
        return PrecisionChoice("float32", requested, dev, f"bf16 matmul measured {s:.2f}x fp32 (< {min_speedup}x)",
                               native_bf16=True, measured_speedup=round(s, 2))
    return PrecisionChoice("bfloat16", requested, dev, f"native bf16, matmul measured {s:.2f}x fp32",
                           native_bf16=True, measured_speedup=round(s, 2))


def autocast(choice: PrecisionChoice):
    """Context for compute-bound work (updates, reward scoring, full-sequence log-probs): bf16 matrix products
    on fp32 weights when the choice is bf16, a no-op otherwise."""
    if not choice.is_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=choice.device, dtype=torch.bfloat16)


def sampling_copy(model: torch.nn.Module, choice: PrecisionChoice, into: torch.nn.Module | None = None):
    """The model to sample from: ``model`` itself under fp32; under bf16 a frozen bf16 copy of it (``into``, when
    given, is an earlier copy refreshed in place from ``model``'s current weights, so no new memory). A LoRA
    model's copy keeps its adapters (the sampler adds their product to the base product, as PEFT does)."""
    if not choice.is_bf16:
        return model
    if into is None:
        into = copy.deepcopy(model).to(torch.bfloat16).eval()
        into.requires_grad_(False)
        return into
    with torch.no_grad():
        for dst, src in zip(into.state_dict().values(), model.state_dict().values()):
            dst.copy_(src)
    return into


__all__ = ["PrecisionChoice", "choose_precision", "cpu_flags", "cpu_has_native_bf16", "measured_bf16_speedup",
           "autocast", "sampling_copy", "REQUESTS"]
