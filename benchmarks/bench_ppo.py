"""`rlhaif ppo` vs TRL 1.0.0's PPOTrainer (trl.experimental.ppo, in .bench-venvs/trl-1.0.0), same run.

Both sides get the same policy (a random tiny Llama saved to a folder, word-level tokenizer), the same reward
model (a random sequence-classification Llama with the same tokenizer), the same 16 prompts, batch size,
mini-batch size, PPO epochs, response length, temperature and learning rate. TRL's value model is a full
separate sequence-classification copy of the policy (its only option); rlhaif's default is a value head on
the policy's trunk, and the ``ours-sepvalue`` row uses a separate value model like TRL's.
Each side runs in its own subprocess; samples/s is measured from the end of step 1 to the end of the last
step (set-up and first-step warm-up excluded); peak memory is the subprocess's peak RSS. Medians of --reps.

    python benchmarks/bench_ppo.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".bench-venvs" / "trl-1.0.0" / "bin" / "python"
SIZES = {"tiny": dict(hidden=128, layers=2), "7m": dict(hidden=256, layers=12)}


def our_side(settings_path: str) -> None:
    s = json.loads(Path(settings_path).read_text())
    from rlhaif.policy.ppo import PPOConfig, run_ppo

    cfg = PPOConfig(model=s["policy"], prompts=s["prompts"], output_dir=s["out"], reward_model=s["reward"],
                    value_model=s["policy"] if s.get("separate_value") else None, lora_r=s["lora_r"],
                    lora_alpha=2 * s["lora_r"], learning_rate=s["lr"], steps=s["steps"], batch_size=s["batch_size"],
                    mini_batch_size=s["mini_batch_size"], ppo_epochs=s["ppo_epochs"],
                    max_new_tokens=s["max_new_tokens"], temperature=s["temperature"], kl_coef=0.05, seed=s["seed"],
                    save_every=10_000, sample_every=0, resume=False, kl_ceiling=None, max_prompt_length=128)
    run_ppo(cfg)
    rows = [json.loads(l) for l in (Path(s["out"]) / "metrics.jsonl").read_text().splitlines()]
    # "time" is logged after each step: samples/s from the end of step 1 to the end of the last step
    sps = s["batch_size"] * (len(rows) - 1) / (rows[-1]["time"] - rows[0]["time"])
    print(json.dumps({"side": "rlhaif", "steps": len(rows), "samples_per_second": sps,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "response_length": statistics.mean(r["response/length"] for r in rows)}))


def build_models(root: Path, hidden: int, layers: int) -> tuple[str, str, int]:
    from rlhaif.models.tiny import WORDS, make_tiny_causal_lm, make_tiny_reward_model, make_tokenizer
    from rlhaif.reward.model import RewardModel

    tok = make_tokenizer()
    pol, _ = make_tiny_causal_lm("llama", seed=0, tokenizer=tok, hidden=hidden, layers=layers)
    pol.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    rm, _ = make_tiny_reward_model("llama", seed=1, tokenizer=tok, hidden=hidden, layers=layers)
    RewardModel(rm, tok, "chat", max_length=256).save(root / "reward")
    prompts = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(8)) for i in range(16)]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(root / "policy"), str(root / "reward"), sum(p.numel() for p in pol.parameters())


def run_side(python: str, script: str, settings: dict, root: Path, tag: str) -> dict:
    path = root / f"{tag}.json"
    path.write_text(json.dumps(settings))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([python, script, *(["--side", "ours"] if script == __file__ else []), str(path)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{res.stderr[-3000:]}")
    return json.loads([l for l in res.stdout.splitlines() if l.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", default=None)
    ap.add_argument("settings", nargs="?")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sizes", default="tiny,7m")
    ap.add_argument("--variants", default="full,lora,sepvalue")
    a = ap.parse_args()
    if a.side == "ours":
        return our_side(a.settings)
    if not TRL_PY.exists():
        print(f"TRL 1.0.0 venv missing at {TRL_PY}: run benchmarks/setup_peer_venvs.sh")
    root = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    base = dict(batch_size=16, mini_batch_size=4, ppo_epochs=4, max_new_tokens=32, temperature=0.7, lr=1e-4,
                seed=0, steps=a.steps)
    for size in a.sizes.split(","):
        d = root / size
        d.mkdir()
        policy, reward, n_params = build_models(d, **SIZES[size])
        base.update(policy=policy, reward=reward, prompts=str(d / "prompts.jsonl"))
        for variant in a.variants.split(","):
            lora_r = 8 if variant == "lora" else 0
            ours_s = {**base, "lora_r": lora_r, "separate_value": variant == "sepvalue"}
            results: dict[str, list[dict]] = {"rlhaif": [], "trl": []}
            for rep in range(a.reps):
                results["rlhaif"].append(run_side(sys.executable, __file__, {**ours_s, "out": str(d / f"o{variant}{rep}")},
                                                  d, f"ours-{variant}-{rep}"))
                if variant != "sepvalue" or TRL_PY.exists():  # TRL has only a separate value model: one TRL run
                    if variant == "sepvalue":
                        continue  # compared against the "full" TRL row
                    results["trl"].append(run_side(str(TRL_PY), str(ROOT / "benchmarks" / "ppo_trl_side.py"),
                                                   {**base, "lora_r": lora_r, "out": str(d / f"t{variant}{rep}")},
                                                   d, f"trl-{variant}-{rep}"))
            med = {k: {m: statistics.median(r[m] for r in v) for m in ("samples_per_second", "peak_rss_mib")}
                   for k, v in results.items() if v}
            line = (f"{size} ({n_params / 1e6:.2f}M params) {variant:8s} rlhaif {med['rlhaif']['samples_per_second']:.2f} "
                    f"samples/s, peak RSS {med['rlhaif']['peak_rss_mib']:.0f} MiB")
            if "trl" in med:
                line += (f" | TRL 1.0.0 {med['trl']['samples_per_second']:.2f} samples/s, "
                         f"{med['trl']['peak_rss_mib']:.0f} MiB | speed ratio "
                         f"{med['rlhaif']['samples_per_second'] / med['trl']['samples_per_second']:.2f}x, memory ratio "
                         f"{med['rlhaif']['peak_rss_mib'] / med['trl']['peak_rss_mib']:.2f}x")
            print(line, "| raw:", json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
