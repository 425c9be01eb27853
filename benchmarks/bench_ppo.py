"""`rlhaif ppo` vs TRL 1.0.0's PPOTrainer (trl.experimental.ppo, in .bench-venvs/trl-1.0.0), same run.

Both sides get the same policy (a random Llama saved to a folder, word-level tokenizer), the same reward
model (a random sequence-classification Llama with the same tokenizer), the same 16 prompts, batch size,
mini-batch size, PPO epochs, response length, temperature, KL coefficient and learning rate.

Rows per model size:
  full      full fine-tuning. rlhaif: value head on the policy's trunk (its default); TRL: a separate value
            model (its only option). ``full-sepvalue`` is rlhaif with a separate value model like TRL's, the
            strictly equal setting.
  lora      LoRA r=8 on the policy; the reference is the policy with the adapter disabled on both sides. TRL's
            value model stays a separate fully trained copy (its design); rlhaif uses its value head.

Each side runs in its own subprocess; every repetition alternates which side goes first. Timed span: from the
end of step 1 to the end of the last step (set-up and first-step warm-up excluded), as wall time (samples/s)
and as the process's CPU time (samples per CPU-second, less sensitive to other load on the machine).
Memory: peak RSS of the subprocess, and the peak above the RSS measured after imports, before any model is
loaded (what the run itself adds; the libraries each side imports differ). On CUDA also the peak
``torch.cuda.max_memory_allocated``. Medians of --reps.

    OMP_NUM_THREADS=1 python benchmarks/bench_ppo.py --reps 3                       # CPU, tiny + ~7M
    OMP_NUM_THREADS=1 python benchmarks/bench_ppo.py --sizes 7m --tokenizer smollm2  # a real 49k vocabulary
    python benchmarks/bench_ppo.py --device cuda --sizes 0.6b --reps 3 --steps 5    # GPU, ~0.6B Llama
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import SIZES, build_models, clock_rlhaif_steps, current_rss_mib, memory_report, span_rates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".bench-venvs" / "trl-1.0.0" / "bin" / "python"
TRL_SIDE = ROOT / "benchmarks" / "ppo_trl_side.py"


def our_side(settings_path: str) -> None:
    s = json.loads(Path(settings_path).read_text())
    import accelerate  # noqa: F401  (imported before the baseline, as TRL's side imports its libraries)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from rlhaif.policy.ppo import PPOConfig, run_ppo

    if s.get("threads"):
        torch.set_num_threads(s["threads"])
    baseline = current_rss_mib()
    clocks = clock_rlhaif_steps()  # (wall, CPU) at the end of every step
    cfg = PPOConfig(model=s["policy"], prompts=s["prompts"], output_dir=s["out"], reward_model=s["reward"],
                    value_model=s["policy"] if s.get("separate_value") else None, lora_r=s["lora_r"],
                    lora_alpha=2 * s["lora_r"], learning_rate=s["lr"], steps=s["steps"], batch_size=s["batch_size"],
                    mini_batch_size=s["mini_batch_size"], ppo_epochs=s["ppo_epochs"],
                    max_new_tokens=s["max_new_tokens"], temperature=s["temperature"], kl_coef=s["kl_coef"],
                    seed=s["seed"], save_every=10_000, sample_every=0, resume=False, kl_ceiling=None,
                    score_clip=None, max_prompt_length=128)
    run_ppo(cfg)
    rows = [json.loads(line) for line in (Path(s["out"]) / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({"side": "rlhaif", **span_rates(clocks, s["batch_size"]),
                      "response_length": statistics.mean(r["response/length"] for r in rows),
                      **memory_report(baseline)}))


def run_side(cmd: list[str], settings: dict, path: Path, device: str) -> dict:
    path.write_text(json.dumps(settings))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both sides on the CPU even on a GPU machine
    res = subprocess.run([*cmd, str(path)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{path.stem} failed:\n{res.stderr[-3000:]}")
    return json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])


METRICS = ("samples_per_second", "samples_per_cpu_second", "peak_rss_mib", "peak_rss_above_imports_mib",
           "cuda_peak_mib")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("settings", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="PPO steps per run (the first is not timed)")
    ap.add_argument("--sizes", default="tiny,7m", help=f"comma-separated, of {list(SIZES)}")
    ap.add_argument("--variants", default="full,lora", help="full (with full-sepvalue), lora")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (0 = torch's default)")
    ap.add_argument("--tokenizer", default="words", choices=["words", "smollm2"],
                    help="words: the 99-token test vocabulary; smollm2: SmolLM2's 49,152-token tokenizer (the random "
                         "models then get that vocabulary: embeddings and LM head grow accordingly)")
    a = ap.parse_args()
    if a.side == "ours":
        return our_side(a.settings)
    if not TRL_PY.exists():
        sys.exit(f"TRL 1.0.0 venv missing at {TRL_PY}: run benchmarks/setup_peer_venvs.sh")
    root = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    base = dict(batch_size=a.batch_size, mini_batch_size=a.mini_batch_size, ppo_epochs=a.ppo_epochs,
                max_new_tokens=a.max_new_tokens, temperature=0.7, lr=1e-4, kl_coef=0.05, seed=0, steps=a.steps,
                device=a.device, threads=a.threads)
    ours_cmd, trl_cmd = [sys.executable, __file__, "--side", "ours"], [str(TRL_PY), str(TRL_SIDE)]
    print(f"settings: {json.dumps(base)}, tokenizer {a.tokenizer}", flush=True)
    for size in a.sizes.split(","):
        d = root / size
        d.mkdir()
        policy, reward, n_params = build_models(d, tokenizer=a.tokenizer, **SIZES[size])
        models = dict(policy=policy, reward=reward, prompts=str(d / "prompts.jsonl"))
        for variant in a.variants.split(","):
            lora_r = 8 if variant == "lora" else 0
            s = {**base, **models, "lora_r": lora_r}
            sides = {"rlhaif": (ours_cmd, s), "trl-1.0.0": (trl_cmd, s)}
            if variant == "full":
                sides["rlhaif-sepvalue"] = (ours_cmd, {**s, "separate_value": True})
            results: dict[str, list[dict]] = {k: [] for k in sides}
            for rep in range(a.reps):
                names = list(sides) if rep % 2 == 0 else list(reversed(sides))  # alternate who goes first
                for name in names:
                    cmd, settings = sides[name]
                    tag = f"{variant}-{name}-{rep}"
                    r = run_side(cmd, {**settings, "out": str(d / tag)}, d / f"{tag}.json", a.device)
                    results[name].append(r)
                    print(f"  {size} {variant} rep {rep + 1} {name:16s} " + json.dumps(r), flush=True)
            med = {k: {m: statistics.median(r[m] for r in v) for m in METRICS if m in v[0]} for k, v in results.items()}
            print(f"{size} ({n_params / 1e6:.2f}M params) {variant}, medians of {a.reps}:", flush=True)
            for name, m in med.items():
                print(f"  {name:16s} {m['samples_per_second']:7.2f} samples/s  {m['samples_per_cpu_second']:7.2f} "
                      f"samples/CPU-s  peak RSS {m['peak_rss_mib']:6.0f} MiB ({m['peak_rss_above_imports_mib']:6.0f} "
                      f"above imports)" + (f"  CUDA peak {m['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in m else ""))
            t = med["trl-1.0.0"]
            for name in (n for n in med if n.startswith("rlhaif")):
                m = med[name]
                print(f"  {name} / TRL: {m['samples_per_second'] / t['samples_per_second']:.2f}x samples/s, "
                      f"{m['samples_per_cpu_second'] / t['samples_per_cpu_second']:.2f}x samples/CPU-s, "
                      f"{m['peak_rss_mib'] / t['peak_rss_mib']:.2f}x peak RSS, "
                      f"{m['peak_rss_above_imports_mib'] / t['peak_rss_above_imports_mib']:.2f}x peak above imports"
                      + (f", {m['cuda_peak_mib'] / t['cuda_peak_mib']:.2f}x CUDA peak" if "cuda_peak_mib" in m else ""),
                      flush=True)


if __name__ == "__main__":
    main()
