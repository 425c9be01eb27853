#!/usr/bin/env bash
# Build the peers' environments for the benchmarks, each with its own pinned versions:
#   .bench-venvs/trl-current : TRL 1.16.0 (RewardTrainer, SFTTrainer, DPOTrainer)
#   .bench-venvs/trl-1.0.0   : TRL 1.0.0, the last release with PPO (trl.experimental.ppo)
#   .bench-venvs/llama-cpp   : llama-cpp-python 0.3.16 (compiles llama.cpp from source, ~6 min on 2 cores),
#                              the CPU-inference anchor of bench_generate.py and bench_hw.py; no torch
# Name venvs as arguments to build only those (default: all three).
# Both use torch 2.13.0 (the CPU build on our machines) and install rlhaif itself without deps, so the
# benchmark harness can build the same tiny models in both environments.
set -euo pipefail
cd "$(dirname "$0")/.."
mk() {
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ]; then python3 -m venv "$dir"; fi
  "$dir/bin/pip" install -q torch==2.13.0
  "$dir/bin/pip" install -q "$@"
  "$dir/bin/pip" install -q --no-deps -e .
}
mk_llama() {
  local dir=.bench-venvs/llama-cpp
  if [ ! -x "$dir/bin/python" ]; then python3 -m venv "$dir"; fi
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$dir/bin/pip" install -q "llama-cpp-python==0.3.16"
}
wanted=${*:-trl-current trl-1.0.0 llama-cpp}
for name in $wanted; do
  case $name in
    trl-current) mk .bench-venvs/trl-current "trl==1.16.0" peft pydantic pyyaml typer rich scipy ;;
    trl-1.0.0) mk .bench-venvs/trl-1.0.0 "trl==1.0.0" peft pydantic pyyaml typer rich scipy ;;
    llama-cpp) mk_llama ;;
    *) echo "setup_peer_venvs.sh: unknown venv '$name' (trl-current, trl-1.0.0, llama-cpp)" >&2; exit 2 ;;
  esac
done
