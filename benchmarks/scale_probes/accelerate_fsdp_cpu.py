"""Probe (docs/scale-out.md, "FSDP and DeepSpeed on CPU"): an FSDP config under accelerate launch on CPU
processes. Prints the distributed type and the wrapper: on Accelerate 1.15 MULTI_CPU + DistributedDataParallel.
accelerate launch --config_file benchmarks/scale_probes/fsdp-cpu.yaml benchmarks/scale_probes/accelerate_fsdp_cpu.py"""
import os, torch, sys
from rlhaif.models.tiny import make_tiny_causal_lm
from accelerate import Accelerator
acc = Accelerator(cpu=True)  # what rlhaif's make_accelerator asked for on CPU before it refused FSDP
print("rank", acc.process_index, "type", acc.distributed_type, "device", acc.device, flush=True)
model, tok = make_tiny_causal_lm("llama", seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, opt = acc.prepare(model, opt)
print(type(model), flush=True)
ids = torch.randint(7, 50, (2, 8)) + acc.process_index
out = model(input_ids=ids, labels=ids)
acc.backward(out.loss); opt.step(); opt.zero_grad()
sd = acc.get_state_dict(model)
if acc.is_main_process:
    print("loss", out.loss.item(), "sum", sum(v.double().sum().item() for v in sd.values()), len(sd))
