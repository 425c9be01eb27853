"""TRL side of benchmarks/bench_dpo.py: run inside .bench-venvs/trl-current (TRL 1.16). Prints one JSON line.

Times model load + dataset preparation + trainer.train(), the same span as the rlhaif side."""

import argparse
import json
import resource
import tempfile
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True, help="TRL conversational preference JSONL")
ap.add_argument("--steps", type=int, required=True)
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--max-length", type=int, required=True)
ap.add_argument("--beta", type=float, default=0.1)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--lora", action="store_true")
ap.add_argument("--precompute", action="store_true", help="precompute_ref_log_probs=True")
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

rows = [json.loads(line) for line in open(a.data)]
t0, c0 = time.perf_counter(), time.process_time()
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(a.model)
peft_config = None
if a.lora:
    from peft import LoraConfig

    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
with tempfile.TemporaryDirectory() as out:
    cfg = DPOConfig(output_dir=out, per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=a.lr,
                    beta=a.beta, max_length=a.max_length, gradient_checkpointing=False,
                    precompute_ref_log_probs=a.precompute, report_to="none", save_strategy="no",
                    logging_steps=a.steps, use_cpu=True, bf16=False, seed=0, lr_scheduler_type="linear",
                    warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, disable_tqdm=True)
    trainer = DPOTrainer(model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    result = trainer.train()
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"side": "trl", "seconds": seconds, "pairs": a.steps * a.batch,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cpu_seconds": cpu_seconds,
                  "train_loss": result.training_loss}))
