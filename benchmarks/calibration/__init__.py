"""Calibration: the measurements behind graft's defaults and thresholds, each a script run by hand.

    python -m benchmarks.calibration.auto_calibrate        # --strategy auto's rules (docs/advise.md)
    python -m benchmarks.calibration.audit_calibrate DATA  # the audit's thresholds (docs/audit.md)
    python -m benchmarks.calibration.class_weight          # --class-weight and --sampler (docs/benchmarks.md)
    python -m benchmarks.calibration.tta                   # test-time augmentation (docs/benchmarks.md)
    python -m benchmarks.calibration.finetune_batchnorm    # BatchNorm statistics in fine-tuning (docs/results.md)
    benchmarks/calibration/cifar10_strategies.sh           # the strategies on CIFAR-10 (docs/results.md)

Run them from the repository's root. Unlike the suite (`python -m benchmarks`) they measure
accuracy and decisions rather than speed; those that store results write them into
benchmarks/results.json with the machine and commit beside them (benchmarks/_results.py).
"""
