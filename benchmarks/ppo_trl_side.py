"""TRL 1.0.0 side of benchmarks/bench_ppo.py: runs trl.experimental.ppo.PPOTrainer in its own venv
(.bench-venvs/trl-1.0.0) and prints one JSON line: samples/s after the first step and peak RSS.

Usage (launched by bench_ppo.py): python ppo_trl_side.py SETTINGS.json
"""

import json
import resource
import sys
import time


def main() -> None:
    s = json.loads(open(sys.argv[1]).read())
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(s["seed"])
    tok = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    prompts = [json.loads(l)["prompt"] for l in open(s["prompts"])]
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
                     kl_coef=0.05, total_episodes=s["batch_size"] * s["steps"], stop_token="eos",
                     local_rollout_forward_batch_size=s["batch_size"], num_sample_generations=0, report_to=[],
                     save_strategy="no", logging_steps=1, seed=s["seed"], use_cpu=True, dataloader_num_workers=0)

    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=ds, value_model=value, peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    n = len(stamps) - 1
    print(json.dumps({"side": "trl-1.0.0", "steps": len(stamps),
                      "samples_per_second": s["batch_size"] * n / (stamps[-1] - stamps[0]),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
