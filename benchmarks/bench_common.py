"""Shared runner of the rlhaif-vs-TRL training benchmarks (bench_reward.py, bench_sft.py, bench_kto.py,
bench_group_rl.py), and the models, memory and per-step clocks of the online-RL ones (bench_ppo.py,
bench_group_rl.py).

Each side runs in its own subprocess (TRL in .bench-venvs/trl-current, rlhaif in this interpreter), one torch
thread each, repetitions alternating which side goes first. A worker prints one JSON line with ``wall_s`` and
``cpu_s`` (the same span on both sides: model load -> data preparation -> training -> save), ``loop_s`` (the
training loop alone, as each library reports it), ``items`` and ``peak_rss_mb``. CPU seconds are the steadier
figure on a loaded machine: wall time grows with other people's load, CPU time much less.

Activation checkpointing: TRL's SFT, reward and DPO configs turn it on by default (recompute activations in the
backward: less memory, more compute); rlhaif's default is off. The benchmarks set it on both sides
(``--checkpointing``) or on neither, so that both do the same work, and the TRL worker reports
``activation_checkpointing`` as seen on its trained model.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".bench-venvs" / "trl-current" / "bin" / "python"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1"}


SIZES = {"tiny": dict(hidden=128, layers=2), "7m": dict(hidden=256, layers=12),
         "0.6b": dict(hidden=2048, layers=16, heads=16, max_pos=1024)}
"""Random Llama sizes of the online-RL benchmarks (0.32M, 7.1M and ~0.6B parameters with the words vocabulary)."""


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_report(baseline_mib: float) -> dict:
    """Peak RSS of this process, the peak above ``baseline_mib`` (the RSS after imports), and on CUDA the peak
    allocated GPU memory, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mib": peak, "peak_rss_above_imports_mib": peak - baseline_mib}
    import torch

    if torch.cuda.is_available():
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def span_rates(clocks: list[tuple[float, float]], per_step: int) -> dict:
    """Samples/s and samples per CPU-second from (wall, CPU) clocks taken at the end of every step, over the
    span from the end of step 1 to the end of the last (set-up and the first step's warm-up excluded)."""
    n = per_step * (len(clocks) - 1)
    return {"steps": len(clocks), "samples_per_second": n / (clocks[-1][0] - clocks[0][0]),
            "samples_per_cpu_second": n / (clocks[-1][1] - clocks[0][1]), "timed_s": clocks[-1][0] - clocks[0][0]}


def clock_rlhaif_steps() -> list[tuple[float, float]]:
    """The list that (wall, CPU) gets appended to whenever an rlhaif training loop logs a step (metrics.jsonl)."""
    from rlhaif import metrics

    clocks: list[tuple[float, float]] = []
    log = metrics.MetricsLogger.log

    def timed_log(self, step, row, **kw):
        clocks.append((time.perf_counter(), time.process_time()))
        return log(self, step, row, **kw)

    metrics.MetricsLogger.log = timed_log
    return clocks


def trl_step_clock(clocks: list):
    """A transformers TrainerCallback appending (wall, CPU) to ``clocks`` at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clocks.append((time.perf_counter(), time.process_time()))

    return StepClock()


def build_models(root: Path, hidden: int, layers: int, tokenizer: str = "words", policy: str | None = None,
                 **kw) -> tuple[str, str, int]:
    """(policy folder, reward folder, policy parameters) under ``root``, and ``root/prompts.jsonl`` (16 prompts
    of 8 words). Policy: a random Llama of ``hidden`` x ``layers``, or the model ``policy`` names (loaded with
    rlhaif's loader, saved with save_pretrained), whose tokenizer then serves both. Reward model: a random
    sequence-classification Llama of ``hidden`` x ``layers`` with the same tokenizer. ``tokenizer``: words (the
    99-token test vocabulary) or smollm2 (SmolLM2's 49,152 tokens and chat template)."""
    from rlhaif.models.tiny import WORDS, make_tiny_causal_lm, make_tiny_reward_model, make_tokenizer
    from rlhaif.reward.model import RewardModel

    if policy is not None:
        from rlhaif.models.loading import load_causal_lm

        pol, tok = load_causal_lm(policy)
    else:
        if tokenizer == "smollm2":  # a real 49,152-token vocabulary and chat template (the embedded default's)
            from rlhaif.models.loading import load_tokenizer

            tok = load_tokenizer("smollm2-135m-instruct")
        else:
            tok = make_tokenizer()
        pol, _ = make_tiny_causal_lm("llama", seed=0, tokenizer=tok, hidden=hidden, layers=layers, **kw)
    pol.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    rm, _ = make_tiny_reward_model("llama", seed=1, tokenizer=tok, hidden=hidden, layers=layers, **kw)
    RewardModel(rm, tok, "chat", max_length=256).save(root / "reward")
    prompts = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(8)) for i in range(16)]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(root / "policy"), str(root / "reward"), sum(p.numel() for p in pol.parameters())


def checkpointing_on(model) -> bool:
    """True when any module of ``model`` recomputes its activations in the backward (transformers' flag)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class Clock:
    """Wall and CPU seconds since creation, and the worker's JSON line."""

    def __init__(self):
        import torch

        torch.set_num_threads(1)
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def report(self, side: str, items: int, loop_s: float, **extra) -> None:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        print(json.dumps({"side": side, "items": items, "wall_s": wall, "cpu_s": cpu, "loop_s": loop_s,
                          "items_per_s": items / loop_s, "items_per_cpu_s": items / cpu,
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))


def run_alternating(script: str, worker_args: dict[str, list[str]], reps: int, unit: str, *,
                    keys: tuple[str, ...] | None = None, threads: int = 1) -> dict:
    """Run each side ``reps`` times (rep r: rlhaif first when r is even, TRL first when odd); print every run,
    the medians and the rlhaif/TRL ratios. ``worker_args[side]`` are the worker's command-line arguments.
    ``keys``: the worker's JSON fields to take medians of and return, printing no summary line of its own
    (default: the Clock.report fields, and the summary); ``threads``: OMP/MKL threads of each worker."""
    env = {**ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pys = {"rlhaif": sys.executable, "trl": str(TRL_PY)}
    results: dict[str, list[dict]] = {"rlhaif": [], "trl": []}
    for rep in range(reps):
        order = ("rlhaif", "trl") if rep % 2 == 0 else ("trl", "rlhaif")
        for side in order:
            res = subprocess.run([pys[side], script, "--worker", side, *worker_args[side]], capture_output=True,
                                 text=True, cwd=ROOT, env=env)
            if res.returncode:
                sys.exit(f"{side} failed:\n{res.stderr[-4000:]}")
            results[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(side, rep, json.dumps(results[side][-1]), flush=True)
    summary = keys is None
    keys = keys or ("items_per_s", "items_per_cpu_s", "wall_s", "cpu_s", "loop_s", "peak_rss_mb")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in keys} for s, rs in results.items()}
    if not summary:
        return med
    print(json.dumps(med, indent=2))
    r, t = med["rlhaif"], med["trl"]
    print(f"median of {reps}: rlhaif {r['items_per_s']:.2f} {unit}/s (loop), {r['items_per_cpu_s']:.2f} {unit}/CPU-s "
          f"(end to end), peak RSS {r['peak_rss_mb']:.0f} MB | TRL {t['items_per_s']:.2f} {unit}/s, "
          f"{t['items_per_cpu_s']:.2f} {unit}/CPU-s, {t['peak_rss_mb']:.0f} MB")
    print(f"ratio rlhaif/TRL: loop speed {r['items_per_s'] / t['items_per_s']:.2f}x, "
          f"end-to-end CPU efficiency {r['items_per_cpu_s'] / t['items_per_cpu_s']:.2f}x, "
          f"wall {r['wall_s'] / t['wall_s']:.2f}x, peak RSS {r['peak_rss_mb'] / t['peak_rss_mb']:.2f}x")
    return med
