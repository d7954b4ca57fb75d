#!/usr/bin/env bash
# Install (if needed) and run the whole test suite. Extra arguments go to pytest
# (e.g. `-m "not slow"` for the fast unit tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
