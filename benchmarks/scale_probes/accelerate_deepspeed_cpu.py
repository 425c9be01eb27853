"""Probe: DeepSpeed ZeRO-2/3 under accelerate launch on 2 CPU processes (needs deepspeed: .bench-venvs/ds).
Prints Accelerate's rank/size beside torch.distributed's (Accelerate 1.15 says 0 of 1 on both).
.bench-venvs/ds/bin/python -m accelerate.commands.launch --config_file benchmarks/scale_probes/ds2-cpu.yaml \
    benchmarks/scale_probes/accelerate_deepspeed_cpu.py"""
import os, torch
from accelerate import Accelerator
from rlhaif.models.tiny import make_tiny_causal_lm
acc = Accelerator()
import torch.distributed as dist
print("rank", acc.process_index, acc.num_processes, acc.distributed_type, acc.device, "dist", dist.is_initialized() and (dist.get_rank(), dist.get_world_size(), dist.get_backend()), os.environ.get("RANK"), flush=True)
if acc.state.deepspeed_plugin is not None: acc.state.deepspeed_plugin.deepspeed_config.update(train_micro_batch_size_per_gpu=2, train_batch_size=4)
model, tok = make_tiny_causal_lm("llama", seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, opt = acc.prepare(model, opt)
print(type(model), flush=True)
ids = torch.randint(7, 50, (2, 8)) + int(os.environ["RANK"])
out = model(input_ids=ids.to(acc.device), labels=ids.to(acc.device))
acc.backward(out.loss); opt.step(); opt.zero_grad()
sd = acc.get_state_dict(model)
if acc.is_main_process:
    print("loss", out.loss.item(), "sum", sum(v.double().sum().item() for v in sd.values()), len(sd))
