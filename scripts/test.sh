#!/usr/bin/env bash
# Install (if needed) and run the test suite. With no arguments: every test not marked slow (the
# default suite, ~12.5 min on 2 cores), plus the one marked readme: tests/test_readme.py runs every
# command in README.md (about 2.5 min), so the README cannot drift from the code. Arguments go to
# pytest instead: `-m slow` runs the slow ones (packaged SmolLM2, llama.cpp, SIGTERM under load ...),
# `-m "not slow"` leaves the README run out, `tests` with no -m runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# The web UI tests drive Debian's chromium with Playwright (never `playwright install`); they skip
# without it. Install it when we are root (or have sudo) and apt is there.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y chromium >/dev/null || echo "note: apt-get install chromium failed; UI tests will skip" >&2
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get install -y chromium >/dev/null || echo "note: apt-get install chromium failed; UI tests will skip" >&2
  else
    echo "note: chromium is not installed (apt-get install -y chromium); the UI tests will skip" >&2
  fi
fi
if [ "$#" -eq 0 ]; then
  set -- -m "not slow or readme"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
