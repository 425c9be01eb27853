"""SFT training speed: `rlhaif sft` vs TRL 1.16 `SFTTrainer` (completion-only loss), same model, data and settings.

    OMP_NUM_THREADS=1 python benchmarks/bench_sft.py [--epochs 2] [--batch 8] [--max-length 256] [--reps 3]

Model: a random Llama (hidden 256, 4 layers, 8 heads, untied embeddings) with SmolLM2-135M-Instruct's real
tokenizer and chat template (vocabulary 49,152, so the output layer and the cross-entropy weigh as much as in
a real small model), saved once with save_pretrained and loaded by both sides. Data: the demonstrations of
src/rlhaif/assets/demos/demo_sft.jsonl (82 on 2026-11-23; rlhaif: prompt/response rows; TRL: the same as
conversational prompt/completion rows, so both apply the chat template and learn the assistant reply only). Same batch size,
max length (no example is cut), learning rate 2e-5, epochs, fp32, one torch thread, separate subprocesses (TRL in
.bench-venvs/trl-current), repetitions alternating which side goes first. Each worker also reports the tokens
it trained on (they match to within the end-of-turn newline TRL's template adds to each completion).
Reported: examples/s of the training loop, examples per CPU-second over the whole stage (model load -> data ->
train -> save), peak RSS, and the ratios (see bench_common.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Clock, checkpointing_on, run_alternating  # noqa: E402

DEMOS = Path(__file__).resolve().parents[1] / "src" / "rlhaif" / "assets" / "demos" / "demo_sft.jsonl"


def make_inputs(d: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhaif.models.loading import resolve_model
    from rlhaif.models.tiny import make_config

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct")[0])
    cfg = make_config("llama", len(tok), hidden=256, layers=4, heads=8, max_pos=1024, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    rows = [json.loads(line) for line in DEMOS.read_text().splitlines() if line.strip()]
    (d / "trl.jsonl").write_text("".join(json.dumps({"prompt": [{"role": "user", "content": r["prompt"]}],
                                                     "completion": [{"role": "assistant", "content": r["response"]}]})
                                         + "\n" for r in rows))


def worker(side: str, a) -> None:
    d, out = Path(a.dir), Path(tempfile.mkdtemp(dir=a.dir))
    clock, extra = Clock(), {}
    if side == "rlhaif":
        from rlhaif.policy.sft import SFTConfig, run_sft

        res = run_sft(SFTConfig(model=str(d / "model"), data=str(DEMOS), output_dir=str(out), batch_size=a.batch,
                                max_length=a.max_length, learning_rate=2e-5, epochs=a.epochs, save_every=0,
                                activation_checkpointing=a.checkpointing))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        loop_s, n = rows[-1]["time"], res.examples
        tokens = sum(r["sft/tokens"] for r in rows) // a.epochs  # response tokens learned per epoch
    else:
        from datasets import load_dataset
        from trl import SFTConfig, SFTTrainer

        ds = load_dataset("json", data_files=str(d / "trl.jsonl"), split="train")
        args = SFTConfig(output_dir=str(out), per_device_train_batch_size=a.batch, max_length=a.max_length,
                         learning_rate=2e-5, num_train_epochs=a.epochs, logging_steps=1, save_strategy="no",
                         report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
                         completion_only_loss=True, model_init_kwargs={"dtype": "float32"},
                         gradient_checkpointing=a.checkpointing)  # TRL's default is True; ours False
        trainer = SFTTrainer(model=str(d / "model"), args=args, train_dataset=ds)
        loop_s = trainer.train().metrics["train_runtime"]
        trainer.save_model(str(out))
        n = len(trainer.train_dataset)
        extra["activation_checkpointing"] = checkpointing_on(trainer.model)
        tok = trainer.processing_class  # completion tokens learned: prompt+completion minus the prompt
        rows = [json.loads(line) for line in (d / "trl.jsonl").read_text().splitlines()]
        tokens = sum(len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"])
                     - len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]) for r in rows)
    clock.report(side, n * a.epochs, loop_s, examples=n, response_tokens_per_epoch=tokens, **extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--checkpointing", action="store_true",
                    help="activation checkpointing on both sides (TRL's default; off: neither side, the default)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", choices=["rlhaif", "trl"])
    ap.add_argument("--dir")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a)
    d = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    make_inputs(d)
    common = ["--dir", str(d), "--epochs", str(a.epochs), "--batch", str(a.batch), "--max-length", str(a.max_length)]
    common += ["--checkpointing"] if a.checkpointing else []
    n_demos = sum(1 for line in DEMOS.read_text().splitlines() if line.strip())
    print(f"{n_demos} demos x {a.epochs} epochs, batch {a.batch}, max length {a.max_length}, fp32, 1 thread, "
          f"{a.reps} reps, activation checkpointing {'on' if a.checkpointing else 'off'} on both sides", flush=True)
    run_alternating(__file__, {"rlhaif": common, "trl": common}, a.reps, "examples")


if __name__ == "__main__":
    main()
