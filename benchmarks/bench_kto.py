"""KTO training speed: `rlhaif dpo --loss kto` vs TRL 1.16 `KTOTrainer`, same model, data and settings.

    OMP_NUM_THREADS=1 python benchmarks/bench_kto.py [--model 7m] [--steps 4] [--batch 8] [--max-length 256]
                                                    [--lora] [--reps 3]

Model: a random Llama with SmolLM2-135M-Instruct's real tokenizer and chat template (vocabulary 49,152), `tiny`
(hidden 64, 2 layers) or `7m` (hidden 128, 4 layers), saved once with save_pretrained and loaded by both sides.
Data: the first hh-rlhf pairs of ../shared, each split into a desirable (chosen) and an undesirable
(rejected) row (`rlhaif.data.formats.pair_to_unpaired`), steps × batch rows: rlhaif reads its unpaired rows,
TRL the same as conversational prompt / completion / label rows. Same β, λ_D = λ_U = 1, batch, max length,
learning rate, fp32, one torch thread, activation checkpointing off on both sides. Reference like with like:
full fine-tuning precomputes the reference log-probabilities once on both sides (rlhaif's `reference:
precompute`, TRL's `precompute_ref_log_probs`); --lora (r 16) uses the adapter-disabled model on both sides.
Both estimate the KL reference point from mismatched pairs of the batch (TRL builds its own KL rows). Reported
(bench_common.py): rows/s of the training loop, rows per CPU-second end to end, peak RSS, the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Clock, checkpointing_on, run_alternating  # noqa: E402

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test-first1800.jsonl.gz"
SIZES = {"tiny": (64, 2), "7m": (128, 4)}
LORA_R, LORA_ALPHA = 16, 32


def make_inputs(d: Path, size: str, rows: int) -> int:
    """Model folder and the two data files in ``d``; returns the model's parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhaif.data.formats import pair_to_unpaired, read_hh_rlhf, write_trl_unpaired
    from rlhaif.data.io import write_records
    from rlhaif.models.loading import resolve_model
    from rlhaif.models.tiny import make_config

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct")[0])
    hidden, layers = SIZES[size]
    cfg = make_config("llama", len(tok), hidden=hidden, layers=layers, heads=4, max_pos=2048,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    unpaired = [r for p in read_hh_rlhf(HH, limit=rows, skip_invalid=True) for r in pair_to_unpaired(p)][:rows]
    write_records(d / "kto.jsonl", unpaired)
    write_trl_unpaired(d / "trl.jsonl", unpaired, conversational=True)
    return sum(p.numel() for p in model.parameters())


def worker(side: str, a) -> None:
    d, out = Path(a.dir), Path(tempfile.mkdtemp(dir=a.dir))
    clock, extra = Clock(), {}
    n = a.steps * a.batch
    if side == "rlhaif":
        from rlhaif.policy.dpo import DPOConfig, run_dpo

        run_dpo(DPOConfig(model=str(d / "model"), pairs=str(d / "kto.jsonl"), loss="kto", eval_fraction=0.0,
                          output_dir=str(out), lora_r=LORA_R if a.lora else 0, lora_alpha=LORA_ALPHA,
                          reference="adapter" if a.lora else "precompute", max_length=a.max_length,
                          batch_size=a.batch, max_steps=a.steps, learning_rate=a.lr, beta=a.beta,
                          save_every=10**6, activation_checkpointing=False, seed=0))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "dpo/loss" in r]
        loop_s = rows[-1]["time"]  # from the start of the loop (after the reference pass) to the last step
        extra["mean_loss"] = sum(r["dpo/loss"] for r in rows) / len(rows)
    else:
        import torch
        from datasets import load_dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import KTOConfig, KTOTrainer

        model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(d / "model")
        peft_config = None
        if a.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                     task_type="CAUSAL_LM")
        ds = load_dataset("json", data_files=str(d / "trl.jsonl"), split="train")
        args = KTOConfig(output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.steps,
                         learning_rate=a.lr, beta=a.beta, max_length=a.max_length, desirable_weight=1.0,
                         undesirable_weight=1.0, precompute_ref_log_probs=not a.lora, gradient_checkpointing=False,
                         report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, bf16=False, seed=0,
                         lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
                         dataloader_num_workers=0, disable_tqdm=True)
        trainer = KTOTrainer(model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
        result = trainer.train()  # with precompute_ref_log_probs the reference pass ran in KTOTrainer.__init__
        loop_s = result.metrics["train_runtime"]
        extra["mean_loss"] = result.training_loss
        extra["activation_checkpointing"] = checkpointing_on(trainer.model)
    clock.report(side, n, loop_s, **extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SIZES), default="7m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 on both sides, reference = adapter disabled")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", choices=["rlhaif", "trl"])
    ap.add_argument("--dir")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a)
    d = Path(tempfile.mkdtemp(prefix="bench-kto-"))
    n_params = make_inputs(d, a.model, a.steps * a.batch)
    common = ["--dir", str(d), "--steps", str(a.steps), "--batch", str(a.batch), "--max-length", str(a.max_length),
              "--beta", str(a.beta), "--lr", str(a.lr)] + (["--lora"] if a.lora else [])
    print(f"model {a.model} ({n_params / 1e6:.1f}M parameters), {a.steps * a.batch} unpaired hh-rlhf rows, batch "
          f"{a.batch}, max length {a.max_length}, {'LoRA r 16' if a.lora else 'full fine-tuning'}, fp32, 1 thread, "
          f"{a.reps} reps", flush=True)
    run_alternating(__file__, {"rlhaif": common, "trl": common}, a.reps, "rows")


if __name__ == "__main__":
    main()
