"""Data audit: near-duplicate images across splits, class imbalance, and likely mislabelled images.

`audit(data)` runs a pretrained backbone over every image (or reuses the cached features) and
checks the data before a model is trained on it; `audit_features` does the same from features at
hand, as a training run does for its report. Both return an `AuditResult`, which renders as JSON,
Markdown or HTML. See docs/audit.md for the method and how the thresholds were chosen.
"""

from .checks import (
    DUPLICATE_THRESHOLD,
    MISLABEL_CONFIDENCE,
    check_imbalance,
    find_duplicates,
)
from .pipeline import audit, audit_features
from .result import AuditResult, DuplicatePair, Imbalance, Suspect

__all__ = [
    "DUPLICATE_THRESHOLD",
    "MISLABEL_CONFIDENCE",
    "AuditResult",
    "DuplicatePair",
    "Imbalance",
    "Suspect",
    "audit",
    "audit_features",
    "check_imbalance",
    "find_duplicates",
]
