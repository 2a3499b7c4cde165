"""Pretrained networks with their top cut off, where their weights come from, and what they expect."""

from ..data.config import DataConfig
from .backbone import Backbone, create_backbone, stage_infos
from .imagenet import predict_imagenet
from .registry import DEFAULT_BACKBONE, BackboneEntry, list_backbones
from .weights import offline_available

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneEntry",
    "DataConfig",
    "create_backbone",
    "list_backbones",
    "offline_available",
    "predict_imagenet",
    "stage_infos",
]
