"""Blocks every training loop calls (SFT, reward, DPO, PPO): Accelerate set-up, optimizer and schedule,
atomic checkpoints with exact resume, and the final ``save_pretrained``.

Loops call these functions; nothing here is a base class to inherit.

Checkpoint layout (``<out>/checkpoints/step-000040/``):
    trainable.safetensors   the trainable parameters only (a LoRA adapter stays small)
    optimizer.pt scheduler.pt rng-<rank>.pt
    trainer_state.json      step, epoch, data position and any loop state (KL controller, ...)
A checkpoint is written into a temporary folder and renamed into place, so a kill mid-save never
leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_DIR = "checkpoints"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_accelerator(gradient_accumulation_steps: int = 1, mixed_precision: str = "no",
                     log_with: str | None = None, project_dir: str | os.PathLike | None = None,
                     cpu: bool = False):
    """An Accelerator for one CPU, one or many GPUs, or ``accelerate launch`` multi-process runs."""
    from accelerate import Accelerator

    if mixed_precision == "bf16" and not bf16_supported():
        mixed_precision = "no"
    kwargs: dict[str, Any] = {}
    if log_with and log_with != "none":
        kwargs["log_with"] = log_with
        kwargs["project_dir"] = str(project_dir) if project_dir else None
    # Several processes (accelerate launch / torchrun) and no GPU: without cpu=True Accelerate 1.x leaves each
    # process alone (DistributedType.NO) and they race on the same files; with it they join one gloo group.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        refuse_sharding_without_gpu()
        cpu = True
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps,
                       mixed_precision=mixed_precision, cpu=cpu, **kwargs)


def refuse_sharding_without_gpu() -> None:
    """Stop an FSDP or DeepSpeed launch on a machine without a GPU, which Accelerate 1.x would not shard:
    it turns an FSDP config into plain DDP over gloo (MULTI_CPU) when ``cpu=True`` and leaves every process
    alone (DistributedType.NO) without it, and under DeepSpeed it reports ``num_processes=1`` and rank 0 to
    every process (docs/scale-out.md, "FSDP and DeepSpeed on CPU")."""
    for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(env, "false").lower() == "true":
            from rlhaif.errors import ConfigError

            raise ConfigError(f"{name} needs GPUs: Accelerate does not shard over CPU processes (it would run "
                              f"unsharded copies). On CPU use DDP (recipes/accelerate/multi-cpu.yaml, "
                              f"`accelerate launch --multi_gpu --num_processes N`); use {name} on GPUs")


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:  # CPUs with AVX-512 BF16 / AMX run bf16 autocast fast; others emulate it slowly.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of epoch ``epoch``: the same on every run and after a resume."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(n: int, batch_size: int, epochs: int, seed: int,
                  lengths: list[int] | None = None, group: int = 64) -> list[list[int]]:
    """Every micro-batch of the run, in order (a short last batch per epoch is kept); a pure function of its
    arguments, so a resumed run skips exactly the batches it consumed.

    With ``lengths`` (tokens per example) batches are length-grouped: each epoch's permutation is cut into
    windows of ``group`` batches, each window is sorted by length (longest first) and cut into batches, and
    the batches of the epoch are shuffled again. Examples of similar length share a batch, so padding (wasted
    compute) shrinks, while the data order stays random at the scale of a window."""
    out = []
    for epoch in range(epochs):
        order = epoch_order(n, seed, epoch)
        if lengths is None:
            out.extend(order[i:i + batch_size] for i in range(0, n, batch_size))
            continue
        window = batch_size * group
        batches = []
        for w in range(0, n, window):
            chunk = sorted(order[w:w + window], key=lambda i: -lengths[i])  # stable: ties keep the random order
            batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
        shuffle = epoch_order(len(batches), seed, 10_000 + epoch)
        out.extend(batches[i] for i in shuffle)
    return out


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Turn on transformers' activation checkpointing (non-reentrant) on ``model`` or, through a PEFT wrapper,
    its base model. It acts only in training mode (``model.train()``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        from rlhaif.errors import ConfigError

        raise ConfigError(f"activation_checkpointing: {type(base).__name__} does not support it; set it to false")
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def _fused_adamw_ok(params: list[torch.Tensor]) -> bool:
    """True when every parameter is a floating-point tensor on one device that torch's fused AdamW serves."""
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.0,
                   warmup_steps: int = 0, total_steps: int | None = None):
    """AdamW over the trainable parameters and a linear warm-up then linear decay (or constant).

    The fused AdamW kernel where torch has one for the parameters' device (CPU and CUDA): without it torch
    falls back on the CPU to a Python loop over the tensors, which took 0.59 s of each 1.9 s PPO update of a
    32M-parameter model here (TRL's Trainer defaults to the fused kernel too)."""
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, "the model has no trainable parameters"
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=_fused_adamw_ok(params))

    def lr_lambda(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps:
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def start_loop(model: torch.nn.Module, cfg, accelerator, n_micro_batches: int, out_dir: str | os.PathLike,
               project: str):
    """The shared start of a loop driven by a ``TrainLoopConfig`` (SFT, reward model): size the schedule,
    activation checkpointing when asked, build AdamW + schedule, ``accelerator.prepare``, start trackers,
    resume from the newest checkpoint.

    Returns ``(model, optimizer, scheduler, per_step, total_steps, step)``: ``per_step`` micro-batches (all
    processes) make one optimizer step; ``step`` is where a resumed run picks up (0 for a fresh one)."""
    per_step = cfg.gradient_accumulation_steps * accelerator.num_processes
    total_steps = math.ceil(n_micro_batches / per_step)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer, scheduler = make_optimizer(model, cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.log_with:
        accelerator.init_trackers(project, config=cfg.model_dump())
    step = 0
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is not None:
        step = load_checkpoint(ckpt, model, optimizer, scheduler, accelerator)["step"]
        accelerator.print(f"resumed from {ckpt} (step {step})")
    return model, optimizer, scheduler, per_step, total_steps, step


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(out_dir: str | os.PathLike, step: int, model: torch.nn.Module, optimizer, scheduler,
                    state: dict[str, Any], accelerator=None, keep: int = 2,
                    extra_modules: dict[str, torch.nn.Module] | None = None) -> Path | None:
    """Write ``<out_dir>/checkpoints/step-NNNNNN`` atomically; keep the newest ``keep`` checkpoints.

    ``state`` is JSON-serialisable loop state (epoch, data position, KL coefficient...).
    ``extra_modules`` are other trained modules (a separate value model) saved beside the policy."""
    from safetensors.torch import save_file

    root = Path(out_dir) / CKPT_DIR
    rank = accelerator.process_index if accelerator is not None else 0
    main = accelerator is None or accelerator.is_main_process
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    unwrap = accelerator.unwrap_model if accelerator is not None else (lambda m: m)
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    if main:
        save_file(trainable_state_dict(unwrap(model)), str(tmp / "trainable.safetensors"))
        for name, mod in (extra_modules or {}).items():
            save_file(trainable_state_dict(unwrap(mod)), str(tmp / f"{name}.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    root = Path(out_dir) / CKPT_DIR
    done = sorted(p for p in root.glob("step-*") if (p / "trainer_state.json").exists())
    return done[-1] if done else None


def load_checkpoint(ckpt: str | os.PathLike, model: torch.nn.Module, optimizer, scheduler,
                    accelerator=None, extra_modules: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from ``ckpt``; return the loop state it stored."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    unwrap = accelerator.unwrap_model if accelerator is not None else (lambda m: m)

    def load_into(mod: torch.nn.Module, file: Path) -> None:
        sd = load_file(str(file))
        params = dict(unwrap(mod).named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in sd]
        assert not missing, f"checkpoint {file} lacks trainable parameters {missing[:3]}"
        with torch.no_grad():
            for n, t in sd.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))

    load_into(model, ckpt / "trainable.safetensors")
    for name, mod in (extra_modules or {}).items():
        load_into(mod, ckpt / f"{name}.safetensors")
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    if scheduler is not None and (ckpt / "scheduler.pt").exists():
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    rank = accelerator.process_index if accelerator is not None else 0
    rng = ckpt / f"rng-{rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((ckpt / "trainer_state.json").read_text())


def save_pretrained_atomic(model, tokenizer, out_dir: str | os.PathLike, merge_lora: bool = False,
                           accelerator=None) -> Path:
    """``save_pretrained`` the model (adapter, or LoRA merged into the base) and tokenizer into a temp
    folder, then rename it to ``out_dir``: transformers, PEFT and vLLM load the result unchanged."""
    out_dir = Path(out_dir)
    if accelerator is not None:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return out_dir
        model = accelerator.unwrap_model(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        to_save = model
        if merge_lora and hasattr(model, "merge_and_unload"):
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        to_save.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
