#!/usr/bin/env bash
# Trains the whole toy world from scratch on the CPU, in dependency order, then measures the quality
# gates. Every stage has fixed seeds and step counts. Outputs: toyworld/weights/*.safetensors,
# toyworld/weights/training.jsonl (the log), toyworld/weights/gates.json, datasets/toy/loras/*.safetensors.
# Usage: bash scripts/train_toyworld.sh [stage ...]   (default: vae base lora classifier clip gates)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(vae base lora classifier clip gates)
for stage in "${stages[@]}"; do
  echo "== $stage ($(date +%T))"
  if [ "$stage" = gates ]; then
    "$PY" -m toytrain.gates
  else
    "$PY" -m toytrain "$stage"
  fi
done
