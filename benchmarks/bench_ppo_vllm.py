"""`rlhaif ppo` steps/s with vLLM rollouts (``rollout_backend: vllm``) vs HF rollouts, equal settings.

Each backend runs `run_ppo` in its own subprocess (vLLM's CPU worker pins the process's OpenMP threads, so
the HF run must not share its process). Timed span: from the end of step 1 to the end of the last step, read
from metrics.jsonl's ``time`` column (engine start, model load and step 1's warm-up excluded); the vLLM
side's steps include the weight reload after every update. Needs the vLLM venv
(benchmarks/setup_vllm_venv.sh); both sides run with that venv's python so the libraries match.

    OMP_NUM_THREADS=2 PYTHONPATH=src .bench-venvs/vllm/bin/python benchmarks/bench_ppo_vllm.py --model tiny
    OMP_NUM_THREADS=2 PYTHONPATH=src .bench-venvs/vllm/bin/python benchmarks/bench_ppo_vllm.py \
        --model ~/.cache/rlhaif/models/smollm2-135m-instruct --lora-r 8 --steps 3 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REWARD = '''
TARGET = {"cat", "dog", "sun", "moon", "tree", "book", "car", "house", "food", "music", "the", "a"}
def score(prompts, responses):
    return [sum(w in TARGET for w in r.lower().split()) / max(1, len(r.split())) for r in responses]
'''


def one_run(args, backend: str, root: Path) -> dict:
    from rlhaif.policy.ppo import PPOConfig, run_ppo

    out = root / backend
    cfg = PPOConfig(model=args.model, prompts=str(root / "prompts.jsonl"), output_dir=str(out),
                    reward_fn=f"{root / 'reward.py'}:score", lora_r=args.lora_r, learning_rate=args.lr,
                    steps=args.steps, batch_size=args.batch_size, mini_batch_size=args.batch_size // 2, ppo_epochs=2,
                    max_new_tokens=args.max_new_tokens, temperature=1.0, save_every=10_000, sample_every=0,
                    advantage_estimator="rloo", num_generations=2, rollout_backend=backend, keep_checkpoints=False)
    run_ppo(cfg)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    span = rows[-1]["time"] - rows[0]["time"]
    steps = len(rows) - 1
    res = {"backend": backend, "timed_steps": steps, "seconds": round(span, 2),
           "steps_per_s": round(steps / span, 4) if span > 0 else None,
           "generate_s_per_step": round(sum(r["time/generate"] for r in rows[1:]) / steps, 3),
           "tokens_per_step": round(sum(r["response/length"] for r in rows[1:]) / steps * args.batch_size, 1)}
    if backend == "vllm":
        res["weight_sync_s_per_step"] = round(sum(r["time/weight_sync"] for r in rows[1:]) / steps, 3)
        res["logprob_diff_max"] = max(r["rollout/logprob_diff"] for r in rows)
        res["is_clip_share_max"] = max(r["rollout/is_clip_share"] for r in rows)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", help="a model folder, or 'tiny' (random Llama, hidden 128, 4 heads)")
    ap.add_argument("--lora-r", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backend in this process
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(args, args.one, Path(args.root))), flush=True)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-ppo-vllm-"))
    if args.model == "tiny":
        from rlhaif.models.tiny import save_tiny

        args.model = str(save_tiny(root / "tiny", "llama", hidden=128, heads=4))
    from rlhaif.models.tiny import WORDS

    (root / "reward.py").write_text(REWARD)
    prompts = [" ".join(WORDS[(7 * i + j) % 60] for j in range(6)) for i in range(32)]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    passthrough = [f"--model={args.model}", f"--lora-r={args.lora_r}", f"--lr={args.lr}", f"--steps={args.steps}",
                   f"--batch-size={args.batch_size}", f"--max-new-tokens={args.max_new_tokens}", f"--root={root}"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    for backend in args.backends.split(","):
        load = os.getloadavg()[0]
        p = subprocess.run([sys.executable, __file__, f"--one={backend}", *passthrough], env=env,
                           capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode or not line:
            print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{backend} run failed (exit {p.returncode})")
        res = json.loads(line[0][7:])
        res["load_1min_at_start"], res["load_1min_at_end"] = round(load, 1), round(os.getloadavg()[0], 1)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
