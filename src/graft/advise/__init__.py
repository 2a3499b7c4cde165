"""`graft advise`: which of the course's four transfer-learning cases a dataset is in, measured.

`advice` holds the thresholds, the judgement and the recommendation; `measure` the measurements
(BatchNorm drift, per-stage linear probes); `synthetic` the generated data the calibration uses.
"""

from .advice import (
    BACKBONE_LR_RATIO_DIFFERENT,
    BACKBONE_LR_RATIO_SIMILAR,
    CASES,
    DRIFT_DIFFERENT,
    HEAD_LR,
    LARGE_PER_CLASS,
    PROBE_ALPHAS,
    PROBE_MARGIN,
    SAMPLE_PER_CLASS,
    Advice,
    StageEvidence,
    advise,
    advise_splits,
    best_stage,
    cut_search,
    judge_similarity,
    recommend,
)

__all__ = [
    "BACKBONE_LR_RATIO_DIFFERENT", "BACKBONE_LR_RATIO_SIMILAR", "CASES", "DRIFT_DIFFERENT", "HEAD_LR",
    "LARGE_PER_CLASS", "PROBE_ALPHAS", "PROBE_MARGIN", "SAMPLE_PER_CLASS", "Advice", "StageEvidence", "advise",
    "advise_splits", "best_stage", "cut_search", "judge_similarity", "recommend",
]
