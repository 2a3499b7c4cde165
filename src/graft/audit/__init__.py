"""Data audit: near-duplicate images across splits, near-identical images within one, class imbalance, and
likely mislabelled images.

`audit(data)` runs a pretrained backbone over every image (or reuses the cached features) and
checks the data before a model is trained on it; `audit_features` does the same from features at
hand, as a training run does for its report. Both return an `AuditResult`, which renders as JSON,
Markdown or HTML. See docs/audit.md for the method and how the thresholds were chosen.
"""

from .checks import (
    DUPLICATE_THRESHOLD,
    MISLABEL_CONFIDENCE,
    NEAR_DUPLICATE_THRESHOLD,
    check_imbalance,
    find_duplicates,
)
from .pipeline import audit, audit_features
from .result import AuditResult, DuplicatePair, Imbalance, NearDuplicateGroup, Suspect

__all__ = [
    "DUPLICATE_THRESHOLD",
    "MISLABEL_CONFIDENCE",
    "NEAR_DUPLICATE_THRESHOLD",
    "AuditResult",
    "DuplicatePair",
    "Imbalance",
    "NearDuplicateGroup",
    "Suspect",
    "audit",
    "audit_features",
    "check_imbalance",
    "find_duplicates",
]
