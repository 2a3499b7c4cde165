#!/usr/bin/env bash
# Reproduces the accuracy table in docs/results.md: linear-probe, finetune and scratch on
# ../shared/datasets/cifar10-dev (train 5,000 -> 4,500 train + 500 val, test 1,000), default
# backbone (EfficientNet-Lite0, offline ImageNet weights), 224 px. About 45 minutes on 2 CPU cores.
#   usage: benchmarks/cifar10_strategies.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10-dev}
OUT=${2:-runs/cifar10}
GRAFT=${GRAFT:-graft}
$GRAFT train "$DATA" --strategy linear-probe --val-split 0.1 --out "$OUT" --name linear-probe
$GRAFT train "$DATA" --strategy finetune --val-split 0.1 --epochs 3 --views 1 --out "$OUT" --name finetune
$GRAFT train "$DATA" --strategy scratch --val-split 0.1 --epochs 3 --out "$OUT" --name scratch
python3 - "$OUT" <<'PY'
import json, sys, pathlib
print("| strategy | val acc | test acc | trained params | features (s) | training (s) | total (s) |")
print("|---|---|---|---|---|---|---|")
for name in ("linear-probe", "finetune", "scratch"):
    m = json.loads((pathlib.Path(sys.argv[1]) / name / "metrics.json").read_text())
    t = m["timings"]
    print(f"| {name} | {m['val_accuracy']:.1%} | {m['test_accuracy']:.1%} | {m['params']['trainable_in_training']:,} | "
          f"{t.get('features_s', 0):.0f} | {t.get('head_s', 0) + t.get('images_s', 0):.0f} | {t['total_s']:.0f} |")
PY
