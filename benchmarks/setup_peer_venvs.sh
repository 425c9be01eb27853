#!/usr/bin/env bash
# Build the peers' environments for the benchmarks, each with its own pinned versions:
#   .bench-venvs/trl-current : TRL 1.16.0 (RewardTrainer, SFTTrainer, DPOTrainer)
#   .bench-venvs/trl-1.0.0   : TRL 1.0.0, the last release with PPO (trl.experimental.ppo)
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
mk .bench-venvs/trl-current "trl==1.16.0" peft pydantic pyyaml typer rich scipy
mk .bench-venvs/trl-1.0.0 "trl==1.0.0" peft pydantic pyyaml typer rich scipy
