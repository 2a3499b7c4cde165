"""Bottleneck features: a frozen backbone run once per image and view, cached on disk."""

from .cache import FeatureCache, default_cache_dir
from .entry import FeatureSet
from .extract import backbone_features, extract_into

__all__ = ["FeatureCache", "FeatureSet", "backbone_features", "default_cache_dir", "extract_into"]
