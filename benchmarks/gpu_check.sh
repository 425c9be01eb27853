#!/usr/bin/env bash
# One prepared GPU check (< 10 minutes, no downloads): a random-weight ~0.5B Llama built from a config.
#   1. DDP code path on the lent GPU (torchrun, one process per GPU): full fine-tuning tokens/s and MFU
#   2. decode tokens/s of HF generate and of vLLM (where it imports) at batch 1/8/32, share of the HBM bound
#   3. an RLOO-style online RL step with vLLM rollouts + weight sync + truncated IS vs HF rollouts (steps/s)
# NOT RUN YET: no GPU was lent to the task that wrote it (docs/scale-out.md says so). Figures go to $OUT
# (or ./runs/gpu_check) as JSON lines; record them in BENCHMARKS.md with the machine.
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
# The lent H200 image (2026-11) has torch 2.11, transformers 5.17, accelerate 1.15, peft, but no vLLM and
# possibly no pydantic; vLLM's CUDA wheel is far over the 64 MiB a call may carry, so without a vLLM there the
# vLLM rows print "skipped". pydantic (rlhaif's configs) can travel as wheels (.whl, see the device README).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 VLLM_ENABLE_V1_MULTIPROCESSING=0
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$py -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee "$out/versions.txt"
$py -c "import vllm; print('vllm', vllm.__version__)" >>"$out/versions.txt" 2>&1 || echo "vllm: not importable" >>"$out/versions.txt"
$py -c "import pydantic" || { echo "pydantic missing: carry its wheels (device README) and set PYTHONPATH"; exit 3; }
ngpu=$(nvidia-smi -L | wc -l)
# 1. training through make_accelerator under torchrun (DDP when ngpu > 1; one process on one GPU)
timeout 200 $py -m torch.distributed.run --standalone --nproc_per_node "$ngpu" benchmarks/gpu_check.py \
    --parts train --train-steps 8 --train-batch 8 --seq 1024 2>&1 | tee "$out/train.log"
# 2 + 3. generation and the RL step in one process (the engine is colocated with the trainer)
timeout 330 $py benchmarks/gpu_check.py --parts generate,rl --new-tokens 128 --batches 1,8,32 \
    --rl-steps 3 --rl-prompts 16 --k 4 2>&1 | tee "$out/generate_rl.log"
grep -h '^{' "$out"/*.log > "$out/figures.jsonl"
cat "$out/figures.jsonl"
