#!/usr/bin/env bash
# Trains the whole toy world from scratch on the CPU, in dependency order, then measures the quality
# gates. Every stage has fixed seeds and step counts. Outputs: toyworld/weights/*.safetensors,
# toyworld/weights/training.jsonl (the log), toyworld/weights/gates.json, datasets/toy/loras/*.safetensors,
# datasets/toy/cones2/*.pt.
# Stages: vae; base (3,800 steps from scratch); base-continue (2,000 more steps warm-started from the
# weights of `base`, peak learning rate 5e-4); base-captions (1,500 more steps warm-started from those, with
# 30 % of the captions naming their objects by shape alone, as a layout's global prompt does); lora; cones2
# (each concept's residual, upstream's settings); classifier; clip; gates.
# Usage: bash scripts/train_toyworld.sh [stage ...]   (default: every stage, in the order above)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(vae base base-continue base-captions lora cones2 classifier clip gates)
for stage in "${stages[@]}"; do
  echo "== $stage ($(date +%T))"
  case "$stage" in
    gates) "$PY" -m toytrain.gates ;;
    base-continue) "$PY" -m toytrain base --init-from toyworld/weights --steps 2000 --peak-lr 5e-4 ;;
    base-captions)
      "$PY" -m toytrain base --init-from toyworld/weights --steps 1500 --peak-lr 5e-4 --shape-only-share 0.3 ;;
    cones2)
      for concept in $("$PY" -c "from toyworld.concepts import CONCEPTS; print(*CONCEPTS)"); do
        .venv/bin/bench cones2-train --dataset toy --concept "$concept" --out "datasets/toy/cones2/$concept.pt"
      done ;;
    *) "$PY" -m toytrain "$stage" ;;
  esac
done
