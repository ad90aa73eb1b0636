#!/usr/bin/env bash
# Sets up everything the bench needs on a fresh Debian machine with Python 3.10+:
# a virtual environment in .venv with pinned dependencies, and Debian's chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: a standard build that runs on the CPU (see README, "Install").
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[reports,dashboard,dev]"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing; install Debian's 'chromium' package for the browser test" >&2
  fi
fi
echo "setup: done ($(.venv/bin/python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)'))"
