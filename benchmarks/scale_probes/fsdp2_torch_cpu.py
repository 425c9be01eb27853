"""Probe: torch's own FSDP 2 (fully_shard) on 2 CPU processes over gloo, no Accelerate.
torchrun --standalone --nproc_per_node 2 benchmarks/scale_probes/fsdp2_torch_cpu.py"""
import os, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.device_mesh import init_device_mesh
from rlhaif.models.tiny import make_tiny_causal_lm
dist.init_process_group("gloo")
r = dist.get_rank()
mesh = init_device_mesh("cpu", (2,))
model, tok = make_tiny_causal_lm("llama", seed=0)
for layer in model.model.layers: fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
ids = torch.randint(7, 50, (2, 8)) + r
out = model(input_ids=ids, labels=ids)
out.loss.backward(); opt.step()
from torch.distributed.checkpoint.state_dict import get_model_state_dict, StateDictOptions
sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
print("rank", r, type(next(model.parameters())), "loss", out.loss.item(), "sum", sum(v.double().sum().item() for v in sd.values()) if sd else None, flush=True)
dist.destroy_process_group()
