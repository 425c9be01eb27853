"""Reward-model training speed: `rlhaif reward train` vs TRL 1.16 `RewardTrainer`, the default backbone on real pairs.

    OMP_NUM_THREADS=1 python benchmarks/bench_reward.py [--pairs 64] [--max-length 128] [--batch 16] [--reps 3]
                                                        [--grouped]

Both sides fine-tune the real all-MiniLM-L6-v2 (`minilm-l6`, 22M parameters, fresh scalar head) on the same
hh-rlhf harmless-base pairs (the first ``--pairs`` whose chosen and rejected both fit in ``--max-length`` tokens on
both sides, so nothing is cut or dropped), batch size, learning rate 5e-5, one epoch, fp32, dropout on (the
model's own 0.1), one torch thread, in separate subprocesses (TRL in .bench-venvs/trl-current), repetitions
alternating which side goes first. Token counts match: rlhaif encodes ``[CLS] prompt [SEP] response [SEP]``,
TRL ``[CLS] prompt+response[SEP] [SEP]`` (its EOS set to [SEP], as BERT has none).
Default: plain seeded shuffle on both sides (rlhaif ``--no-group-by-length``, TRL ``random``); ``--grouped``:
length-grouped batches on both (rlhaif's default ``group_by_length``, TRL ``train_sampling_strategy=
"group_by_length"``). Reported: pairs/s of the training loop, pairs per CPU-second over the whole stage (model
load -> data -> train -> save), peak RSS, and the ratios (see bench_common.py).
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


def make_inputs(d: Path, n_pairs: int, max_length: int) -> str:
    """pairs.jsonl (rlhaif) and pairs_trl.jsonl (TRL standard preference rows, + a length column); returns the
    backbone folder."""
    from rlhaif.data.records import prompt_text
    from rlhaif.models.loading import resolve_model
    from rlhaif.reward.model import build_reward_model
    from rlhaif.reward.train import load_pairs

    rm = build_reward_model("minilm-l6", max_length=10_000)
    tok = rm.tokenizer
    ours, trl = [], []
    for p in load_pairs(str(HH), (1, 1500)):
        prompt = prompt_text(p.prompt)
        lens = [len(x) for x in tok([prompt, prompt], [p.chosen, p.rejected])["input_ids"]]
        trl_lens = [len(x) for x in tok([prompt + p.chosen + "[SEP]", prompt + p.rejected + "[SEP]"])["input_ids"]]
        if max(lens + trl_lens) > max_length:
            continue
        ours.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
        trl.append({**ours[-1], "length": max(trl_lens)})
        if len(ours) == n_pairs:
            break
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ours))
    (d / "pairs_trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl))
    return str(resolve_model("minilm-l6")[0])


def worker(side: str, a) -> None:
    d, out = Path(a.dir), Path(tempfile.mkdtemp(dir=a.dir))
    clock, extra = Clock(), {}
    if side == "rlhaif":
        from rlhaif.reward.train import RewardTrainConfig, run_reward_train

        cfg = RewardTrainConfig(data=str(d / "pairs.jsonl"), backbone=a.backbone, output_dir=str(out),
                                batch_size=a.batch, max_length=a.max_length, learning_rate=5e-5, epochs=1,
                                group_by_length=a.grouped, eval_fraction=0.0, normalize=False, save_every=0,
                                activation_checkpointing=a.checkpointing)
        run_reward_train(cfg)
        loop_s = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["time"]
        n = sum(1 for _ in open(d / "pairs.jsonl"))
    else:
        from datasets import load_dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        ds = load_dataset("json", data_files=str(d / "pairs_trl.jsonl"), split="train")
        model = AutoModelForSequenceClassification.from_pretrained(a.backbone, num_labels=1)
        tok = AutoTokenizer.from_pretrained(a.backbone)
        args = RewardConfig(output_dir=str(out), per_device_train_batch_size=a.batch, max_length=a.max_length,
                            learning_rate=5e-5, num_train_epochs=1, logging_steps=1, save_strategy="no",
                            report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
                            disable_dropout=False, eos_token="[SEP]", remove_unused_columns=False,
                            train_sampling_strategy="group_by_length" if a.grouped else "random",
                            gradient_checkpointing=a.checkpointing)  # TRL's default is True; ours False
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        loop_s = trainer.train().metrics["train_runtime"]
        trainer.save_model(str(out))
        n = len(trainer.train_dataset)
        extra["activation_checkpointing"] = checkpointing_on(trainer.model)
    clock.report(side, n, loop_s, **extra)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--checkpointing", action="store_true",
                    help="activation checkpointing on both sides (TRL's default; off: neither side, the default)")
    ap.add_argument("--grouped", action="store_true", help="length-grouped batches on both sides")
    ap.add_argument("--worker", choices=["rlhaif", "trl"])
    ap.add_argument("--dir")
    ap.add_argument("--backbone")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a)
    d = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    backbone = make_inputs(d, a.pairs, a.max_length)
    common = ["--dir", str(d), "--backbone", backbone, "--batch", str(a.batch), "--max-length", str(a.max_length)]
    common += ["--grouped"] if a.grouped else []
    common += ["--checkpointing"] if a.checkpointing else []
    print(f"{a.pairs} hh-rlhf pairs, batch {a.batch}, max length {a.max_length}, "
          f"{'length-grouped' if a.grouped else 'random'} batches, fp32, 1 thread, {a.reps} reps, activation "
          f"checkpointing {'on' if a.checkpointing else 'off'} on both sides", flush=True)
    run_alternating(__file__, {"rlhaif": common, "trl": common}, a.reps, "pairs")


if __name__ == "__main__":
    main()
