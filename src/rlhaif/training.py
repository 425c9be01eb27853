"""Blocks every training loop calls (SFT, reward, DPO, PPO): Accelerate set-up, optimizer and schedule,
atomic checkpoints with exact resume, and the final ``save_pretrained``.

Loops call these functions; nothing here is a base class to inherit. Every loop (SFT, reward model, DPO,
PPO) starts with ``start_run``: resume from the newest checkpoint (refused when it was made with other
settings) or start afresh, with ``metrics.jsonl`` / ``samples.jsonl`` cut back to the checkpoint's step.
Every loop draws its data order from ``micro_batches``. SFT, the reward model and DPO run their optimizer
steps through ``train_steps`` (the stage gives only its micro-batch loss) and return a ``TrainResult``.

Checkpoint layout (``<out>/checkpoints/step-000040/``):
    trainable.safetensors   the trainable parameters only (a LoRA adapter stays small)
    optimizer.pt scheduler.pt rng-<rank>.pt
    trainer_state.json      step, epoch, data position and any loop state (KL controller, ...)
A checkpoint is written into a temporary folder and renamed into place, so a kill mid-save never
leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from rlhaif.data.io import umask_mode

StageResult = TypeVar("StageResult")  # a stage's result record (finish_run returns what it is given)
CKPT_DIR = "checkpoints"
RUN_CONFIG = "train_config.json"  # the stage and settings a run started with: a resume is checked against it
LOG_FILES = ("metrics.jsonl", "samples.jsonl")  # per-step rows, cut back to the checkpoint on resume


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
    release_accelerator_state(mixed_precision)
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps,
                       mixed_precision=mixed_precision, cpu=cpu, **kwargs)


def release_accelerator_state(mixed_precision: str) -> None:
    """Let this stage choose its own precision. Accelerate keeps one ``AcceleratorState`` per process and
    refuses an Accelerator whose ``mixed_precision`` differs from the first one's, so a recipe whose stages run
    in one process (an fp32 SFT, then a bf16 PPO) stopped at the second stage. A different setting clears that
    state (not the process group: ``PartialState`` stays) before the next Accelerator is built."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


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


def micro_batches(n: int, batch_size: int, epochs: float, seed: int,
                  lengths: list[int] | None = None, group: int = 64) -> list[list[int]]:
    """Every micro-batch of the run, in order: the one data-order function of every loop. A pure function of
    its arguments, so a resumed run skips exactly the batches it consumed.

    Each epoch is a seeded permutation of ``range(n)`` cut into batches (a short last batch per epoch is
    kept); a fractional last epoch keeps its first ``ceil(fraction · batches)`` batches. Concatenated, the
    batches are the stream of epoch permutations (PPO draws its prompts from that stream, ``stream_indices``).

    With ``lengths`` (tokens per example) batches are length-grouped: each epoch's permutation is cut into
    windows of ``group`` batches, each window is sorted by length (longest first) and cut into batches, and
    the batches of the epoch are shuffled again. Examples of similar length share a batch, so padding (wasted
    compute) shrinks, while the data order stays random at the scale of a window."""
    out = []
    for epoch in range(math.ceil(epochs)):
        order = epoch_order(n, seed, epoch)
        if lengths is None:
            batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        else:
            window = batch_size * group
            grouped = []
            for w in range(0, n, window):
                chunk = sorted(order[w:w + window], key=lambda i: -lengths[i])  # stable: ties keep the random order
                grouped.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
            batches = [grouped[i] for i in epoch_order(len(grouped), seed, 10_000 + epoch)]
        share = epochs - epoch
        out.extend(batches if share >= 1 else batches[:math.ceil(share * len(batches))])
    return out


def stream_indices(start: int, count: int, n: int, seed: int) -> list[int]:
    """Items ``start .. start + count − 1`` of the endless stream of epoch permutations of ``range(n)`` (the
    concatenation of ``micro_batches``' epochs): fixed-size draws that run across epoch boundaries."""
    first = start // n
    flat = [i for b in micro_batches(n, n, first + math.ceil((start % n + count) / n), seed)[first:] for i in b]
    return flat[start % n:start % n + count]


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


def start_run(cfg, stage: str, accelerator=None) -> Path | None:
    """The start every loop shares. Returns the checkpoint to resume from, or None for a fresh start.

    Resume (``cfg.resume`` and a checkpoint in ``cfg.output_dir``): refused with a ``ConfigError`` naming the
    fields when the settings saved at the start of that run (``train_config.json``) differ in a field outside
    ``cfg.resume_may_change``, or name another stage; ``metrics.jsonl`` and ``samples.jsonl`` lose the rows
    logged after the checkpoint (``trim_logs``), so a resumed run logs each step once. Fresh start: the folder's old
    checkpoints, logs, saved settings and manifest are deleted (they belong to another run). Either way the
    settings are saved, and a stale ``manifest.json`` is removed (the stage has not finished)."""
    out = Path(cfg.output_dir)
    main = accelerator is None or accelerator.is_main_process
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        check_resumable(out, cfg, stage)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
            for name in LOG_FILES:
                (out / name).unlink(missing_ok=True)
        else:
            trim_logs(out, json.loads((ckpt / "trainer_state.json").read_text())["step"])
        (out / "manifest.json").unlink(missing_ok=True)
        from rlhaif.data.io import atomic_write

        with atomic_write(out / RUN_CONFIG) as f:  # other processes may be reading it (check_resumable)
            json.dump({"stage": stage, "config": cfg.model_dump(mode="json")}, f, indent=2)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return ckpt


def trim_logs(out_dir: str | os.PathLike, step: int) -> None:
    """Cut the logs back to what existed when the checkpoint of ``step`` was written: ``samples.jsonl`` keeps
    its rows of steps ≤ ``step``; ``metrics.jsonl`` keeps the first row of each step ≤ ``step`` (a step's
    training row comes before its checkpoint; a later row of the same step, such as DPO's held-out ``eval/*``
    row, is written again by the resumed run)."""
    from rlhaif.data.io import read_jsonl_tolerant, write_jsonl

    out = Path(out_dir)
    if (out / "samples.jsonl").exists():
        write_jsonl(out / "samples.jsonl", [r for r in read_jsonl_tolerant(out / "samples.jsonl")
                                            if r.get("step", 0) <= step])
    if (out / "metrics.jsonl").exists():
        seen: set[int] = set()
        kept = []
        for r in read_jsonl_tolerant(out / "metrics.jsonl"):
            if r.get("step", 0) <= step and r.get("step", 0) not in seen:
                seen.add(r.get("step", 0))
                kept.append(r)
        write_jsonl(out / "metrics.jsonl", kept)


def check_resumable(out_dir: str | os.PathLike, cfg, stage: str) -> None:
    """Raise a ``ConfigError`` unless the run saved in ``out_dir`` was the same stage with the same settings
    (fields in ``cfg.resume_may_change`` may differ)."""
    from rlhaif.errors import ConfigError

    path = Path(out_dir) / RUN_CONFIG
    fix = (f"use the settings of that run, another output_dir, or resume: false to start afresh "
           f"(deletes {Path(out_dir) / CKPT_DIR} and the metrics)")
    if not path.exists():
        raise ConfigError(f"{out_dir}: holds checkpoints but no {RUN_CONFIG}, so which settings made them is "
                          f"unknown; refusing to resume: {fix}")
    saved = json.loads(path.read_text())
    if saved.get("stage") != stage:
        raise ConfigError(f"{out_dir}: its checkpoints are from a '{saved.get('stage')}' run, not {stage}; "
                          f"refusing to resume: {fix}")
    now = cfg.model_dump(mode="json")
    old = saved.get("config", {})
    changed = [k for k in sorted(set(now) | set(old))
               if k not in cfg.resume_may_change and json.dumps(now.get(k)) != json.dumps(old.get(k))]
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"{out_dir}: refusing to resume: the checkpoint was made with other settings ({diff}); "
                          f"{fix}")


@dataclass(frozen=True)
class TrainResult:
    """The fields every training stage's result record starts with (``SFTResult``, ``RewardTrainResult``,
    ``DPOResult``)."""

    output_dir: str
    model: str
    """The saved model folder (policy: full model, LoRA adapter or merged; reward model: ``output_dir``)."""
    metrics: dict[str, Any]
    """The last step's metrics row; empty when no step was left to run."""
    steps: int
    """Optimizer steps the run has done (a resumed run counts those before the resume)."""


@dataclass
class TrainLoop:
    """What ``start_loop`` set up for a loop driven by a ``TrainLoopConfig``: the prepared model, optimizer
    and schedule, ``per_step`` micro-batches (all processes) per optimizer step, the run's ``total_steps``, and
    ``step``, the last finished step (where a resumed run picks up; ``train_steps`` advances it)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    per_step: int
    total_steps: int
    step: int


MicroLoss = Callable[[list[int], list[list[int]]], tuple[torch.Tensor, dict[str, float]]]
"""``(idx, step_batches) -> (loss, stats)`` of one micro-batch: ``idx`` its example indices, ``step_batches``
every micro-batch this process runs in the step (``idx`` among them). ``loss`` is backpropagated as it is,
so it carries the micro-batch's share of the step (a mean over micro-batches divides by their number);
``stats`` is the micro-batch's share of the step's statistics: ``train_steps`` sums them over micro-batches."""


def start_loop(model: torch.nn.Module, cfg, accelerator, n_micro_batches: int, stage: str,
               before_resume: Callable[[torch.nn.Module], None] | None = None) -> TrainLoop:
    """The shared start of a loop driven by a ``TrainLoopConfig`` (SFT, reward model, DPO): ``start_run``,
    size the schedule, activation checkpointing when asked, build AdamW + schedule, ``accelerator.prepare``,
    start trackers, call ``before_resume(model)`` (DPO computes its reference log-probs there, while the
    model still holds the starting weights), resume from the checkpoint ``start_run`` chose."""
    ckpt = start_run(cfg, stage, accelerator)
    per_step = cfg.gradient_accumulation_steps * accelerator.num_processes
    total_steps = math.ceil(n_micro_batches / per_step)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer, scheduler = make_optimizer(model, cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.log_with:
        accelerator.init_trackers(f"rlhaif-{stage}", config=cfg.model_dump(mode="json"))
    if before_resume is not None:
        before_resume(model)
    step = 0
    if ckpt is not None:
        step = load_checkpoint(ckpt, model, optimizer, scheduler, accelerator)["step"]
        accelerator.print(f"resumed from {ckpt} (step {step})")
    return TrainLoop(model, optimizer, scheduler, accelerator, per_step, total_steps, step)


def train_steps(loop: TrainLoop, cfg, micros: list[list[int]], n_examples: int, micro_loss: MicroLoss,
                log) -> dict[str, Any]:
    """The optimizer steps of a loop driven by a ``TrainLoopConfig`` (SFT, reward model, DPO), from
    ``loop.step`` to ``loop.total_steps``. Each step: this process's share of the step's micro-batches of
    ``micros`` (``micro_batches``), each through ``micro_loss`` and backward (gradients synchronised on the
    last one only) -> clip (``cfg.max_grad_norm``) -> optimizer and schedule step -> one row to ``log`` (a
    ``MetricsLogger``): the stats summed over micro-batches and averaged over processes, ``train/grad_norm``,
    ``train/learning_rate``, ``train/epoch`` (passes over the ``n_examples``) -> a checkpoint every
    ``cfg.save_every`` steps and after the last. Returns the last row ({} when no step was left)."""
    acc, model = loop.accelerator, loop.model
    row: dict[str, Any] = {}
    model.train()
    while loop.step < loop.total_steps:
        mine = micros[loop.step * loop.per_step:(loop.step + 1) * loop.per_step][acc.process_index::acc.num_processes]
        stats: dict[str, float] = {}
        for i, idx in enumerate(mine):
            with contextlib.nullcontext() if i == len(mine) - 1 else acc.no_sync(model):
                loss, micro_stats = micro_loss(idx, mine)
                acc.backward(loss)
            for k, v in micro_stats.items():
                stats[k] = stats.get(k, 0.0) + float(v)
        grad_norm = clip_gradients(acc, model, cfg.max_grad_norm)
        loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        loop.step += 1
        row = {**mean_over_processes(acc, stats), "train/grad_norm": grad_norm,
               "train/learning_rate": loop.scheduler.get_last_lr()[0],
               "train/epoch": round(loop.step * loop.per_step * cfg.batch_size / n_examples, 4)}
        log.log(loop.step, row)
        if (cfg.save_every and loop.step % cfg.save_every == 0) or loop.step == loop.total_steps:
            save_checkpoint(cfg.output_dir, loop.step, model, loop.optimizer, loop.scheduler,
                            {"examples": n_examples}, acc)
    return row


def mean_over_processes(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """``stats`` averaged over the processes of a multi-process run (every process must call it with the
    same keys); unchanged with one process."""
    if accelerator.num_processes == 1:
        return stats
    vals = accelerator.reduce(torch.tensor(list(stats.values()), dtype=torch.float64, device=accelerator.device),
                              "mean")
    return dict(zip(stats, vals.tolist()))


def clip_gradients(accelerator, model: torch.nn.Module, max_grad_norm: float) -> float:
    """Clip the global gradient norm to ``max_grad_norm`` (0 = no clipping); the norm before clipping."""
    return float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf")))


def finish_run(stage: str, cfg, result: StageResult, t0: float, accelerator=None) -> StageResult:
    """The end every loop shares: drop checkpoints/ unless ``cfg.keep_checkpoints``, write the stage's
    ``manifest.json`` with ``result`` as its outputs (``write_stage_manifest``, as a recipe does) and return
    ``result``: the stage's result record."""
    import time

    from rlhaif.manifest import write_stage_manifest

    if accelerator is not None:
        accelerator.wait_for_everyone()
    if accelerator is None or accelerator.is_main_process:
        if not cfg.keep_checkpoints:
            shutil.rmtree(Path(cfg.output_dir) / CKPT_DIR, ignore_errors=True)
        write_stage_manifest(stage, cfg, result, round(time.time() - t0, 2))
    return result


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
        umask_mode(tmp)  # safetensors writes 0600
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
        umask_mode(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
