#!/usr/bin/env bash
# Reproduces the tables in docs/results.md: the strategies side by side on
# ../shared/datasets/cifar10-dev (train 5,000 -> 4,500 train + 500 val, test 1,000), default backbone
# (EfficientNet-Lite0, offline ImageNet weights), 224 px, 3 epochs of each strategy's main phase, seed 0.
# About 30 minutes on 2 CPU cores (AMX); features are cached, so a second run skips extraction.
#   usage: benchmarks/calibration/cifar10_strategies.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10-dev}
OUT=${2:-runs/cifar10}
GRAFT=${GRAFT:-graft}
rm -rf "$OUT/compare"  # this script's own output folder: start clean
$GRAFT compare "$DATA" --strategies linear-probe,feature-extract,finetune,scratch --epochs 3 --val-split 0.1 \
    --out "$OUT" --name compare
cat "$OUT/compare/compare.md"
