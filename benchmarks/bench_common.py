"""Shared runner of the rlhaif-vs-TRL training benchmarks (bench_reward.py, bench_sft.py).

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


def run_alternating(script: str, worker_args: dict[str, list[str]], reps: int, unit: str) -> dict:
    """Run each side ``reps`` times (rep r: rlhaif first when r is even, TRL first when odd); print every run,
    the medians and the rlhaif/TRL ratios. ``worker_args[side]`` are the worker's command-line arguments."""
    pys = {"rlhaif": sys.executable, "trl": str(TRL_PY)}
    results: dict[str, list[dict]] = {"rlhaif": [], "trl": []}
    for rep in range(reps):
        order = ("rlhaif", "trl") if rep % 2 == 0 else ("trl", "rlhaif")
        for side in order:
            res = subprocess.run([pys[side], script, "--worker", side, *worker_args[side]], capture_output=True,
                                 text=True, cwd=ROOT, env=ENV)
            if res.returncode:
                sys.exit(f"{side} failed:\n{res.stderr[-4000:]}")
            results[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(side, rep, json.dumps(results[side][-1]), flush=True)
    keys = ("items_per_s", "items_per_cpu_s", "wall_s", "cpu_s", "loop_s", "peak_rss_mb")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in keys} for s, rs in results.items()}
    print(json.dumps(med, indent=2))
    r, t = med["rlhaif"], med["trl"]
    print(f"median of {reps}: rlhaif {r['items_per_s']:.2f} {unit}/s (loop), {r['items_per_cpu_s']:.2f} {unit}/CPU-s "
          f"(end to end), peak RSS {r['peak_rss_mb']:.0f} MB | TRL {t['items_per_s']:.2f} {unit}/s, "
          f"{t['items_per_cpu_s']:.2f} {unit}/CPU-s, {t['peak_rss_mb']:.0f} MB")
    print(f"ratio rlhaif/TRL: loop speed {r['items_per_s'] / t['items_per_s']:.2f}x, "
          f"end-to-end CPU efficiency {r['items_per_cpu_s'] / t['items_per_cpu_s']:.2f}x, "
          f"wall {r['wall_s'] / t['wall_s']:.2f}x, peak RSS {r['peak_rss_mb'] / t['peak_rss_mb']:.2f}x")
    return med
