"""TRL 1.0.0 side of benchmarks/bench_ppo.py: runs trl.experimental.ppo.PPOTrainer in its own venv
(.bench-venvs/trl-1.0.0) and prints one JSON line: samples/s and samples per CPU-second after the first
step, peak RSS (total and above the RSS after imports) and, on CUDA, the peak allocated GPU memory.

Usage (launched by bench_ppo.py): python ppo_trl_side.py SETTINGS.json
"""

import json
import sys


def main() -> None:
    # this folder is on sys.path: the script runs from it
    from bench_common import checkpointing_on, current_rss_mib, memory_report, span_rates, trl_step_clock

    s = json.loads(open(sys.argv[1]).read())
    import peft  # noqa: F401
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if s.get("threads"):
        torch.set_num_threads(s["threads"])
    baseline = current_rss_mib()
    torch.manual_seed(s["seed"])
    tok = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in open(s["prompts"])]
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
           for p in prompts]
    ids = [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]
    ds = Dataset.from_dict({"input_ids": ids})
    policy = AutoModelForCausalLM.from_pretrained(s["policy"])
    ref = None if s["lora_r"] else AutoModelForCausalLM.from_pretrained(s["policy"])
    value = AutoModelForSequenceClassification.from_pretrained(s["policy"], num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1)
    peft_config = None
    if s["lora_r"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    args = PPOConfig(output_dir=s["out"], per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=1,
                     num_mini_batches=s["batch_size"] // s["mini_batch_size"], num_ppo_epochs=s["ppo_epochs"],
                     response_length=s["max_new_tokens"], temperature=s["temperature"], learning_rate=s["lr"],
                     kl_coef=s["kl_coef"], total_episodes=s["batch_size"] * s["steps"], stop_token="eos",
                     local_rollout_forward_batch_size=s["batch_size"], num_sample_generations=0, report_to=[],
                     save_strategy="no", logging_steps=1, seed=s["seed"], use_cpu=s.get("device", "cpu") == "cpu",
                     dataloader_num_workers=0)

    clocks = []  # (wall, CPU) at the end of every step
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=ds, value_model=value, peft_config=peft_config, callbacks=[trl_step_clock(clocks)])
    trainer.train()
    out = {"side": "trl-1.0.0", **span_rates(clocks, s["batch_size"]), **memory_report(baseline),
           # TRL's configs default gradient_checkpointing to True; PPOTrainer does not apply it (it skips
           # Trainer.__init__), which this records so that the comparison stays checkable
           "activation_checkpointing": checkpointing_on(trainer.model)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
