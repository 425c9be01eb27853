import os, torch, sys
from rlhaif.models.tiny import make_tiny_causal_lm
from rlhaif.training import make_accelerator
acc = make_accelerator()
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
