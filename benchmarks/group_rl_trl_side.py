"""TRL 1.16 side of benchmarks/bench_group_rl.py: one run of ``RLOOTrainer`` or ``GRPOTrainer`` in TRL's own venv
(.bench-venvs/trl-current), launched as ``bench_group_rl.py --worker trl --settings S.json``; prints one JSON line
(samples/s and samples per CPU-second after step 1, mean completion length, peak RSS and peak above imports).

The settings and what still differs from rlhaif's side are in bench_group_rl.py's docstring.
"""

from __future__ import annotations

import json
import statistics


def run(s: dict) -> None:
    from bench_common import checkpointing_on, current_rss_mib, memory_report, span_rates, trl_step_clock

    import peft  # noqa: F401  (imported before the baseline, as on rlhaif's side)
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    torch.set_num_threads(s["threads"])
    baseline = current_rss_mib()
    torch.manual_seed(s["seed"])
    prompts = [json.loads(line)["prompt"] for line in open(s["prompts"])]
    # conversational rows: TRL applies the chat template with the generation prompt, as rlhaif's encode_prompts
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    tok = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(s["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1, dtype=torch.float32)
    reward_tok = AutoTokenizer.from_pretrained(s["reward"])
    peft_config = None
    if s["lora_r"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    B = s["batch_size"]  # completions per optimizer step = prompts x num_generations
    common = dict(output_dir=s["out"], per_device_train_batch_size=B, gradient_accumulation_steps=1,
                  steps_per_generation=1, num_iterations=1, num_generations=s["num_generations"],
                  max_completion_length=s["max_new_tokens"], temperature=s["temperature"], top_p=1.0, top_k=0,
                  learning_rate=s["lr"], lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0,
                  beta=s["beta"], epsilon=0.2, max_steps=s["steps"], seed=s["seed"], use_cpu=True,
                  bf16=False, fp16=False,  # TRL's default bf16=True would autocast; rlhaif runs fp32 here
                  gradient_checkpointing=False,  # TRL's default is True; rlhaif's is off
                  logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
                  dataloader_num_workers=0)
    if s["estimator"] == "rloo":
        args, trainer_cls = RLOOConfig(**common, normalize_advantages=False), RLOOTrainer
    else:  # the paper's GRPO: per-response token mean, group std scaling, k3 KL loss term with coefficient beta
        args, trainer_cls = GRPOConfig(**common, loss_type="grpo", scale_rewards="group"), GRPOTrainer
    clocks: list[tuple[float, float]] = []
    trainer = trainer_cls(model=policy, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                          reward_processing_classes=reward_tok, peft_config=peft_config,
                          callbacks=[trl_step_clock(clocks)])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    print(json.dumps({"side": "trl", "trl": trl.__version__, **span_rates(clocks, B),
                      "response_length": statistics.mean(lengths) if lengths else None,
                      "activation_checkpointing": checkpointing_on(trainer.model),
                      "reference_copy": getattr(trainer, "ref_model", None) is not None,
                      **memory_report(baseline)}))
