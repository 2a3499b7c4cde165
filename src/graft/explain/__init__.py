"""Where a model looks (class activation maps, CAM and Grad-CAM, drawn over the images), and what its
layers are and respond to (the layer table, feature maps per stage, top images per channel)."""

from .cam import CAM, GRAD_CAM, METHODS, ActivationMaps, activation_maps, feature_grid
from .channels import StageChannels, channels_figure, rank_channels, receptive_field, run_top_channels, top_channels
from .explain import Explanation, explain, find_class, imagenet_classifier
from .feature_maps import (
    FeatureMaps,
    Stage,
    StageMaps,
    backbone_stages,
    feature_maps,
    feature_maps_figure,
    stage_outputs,
)
from .figures import MapPair, map_pairs_figure
from .layers import LayerRow, LayerTable, layer_table
from .overlay import model_inputs, model_view, overlay

__all__ = [
    "CAM",
    "GRAD_CAM",
    "METHODS",
    "ActivationMaps",
    "Explanation",
    "FeatureMaps",
    "LayerRow",
    "LayerTable",
    "MapPair",
    "Stage",
    "StageChannels",
    "StageMaps",
    "activation_maps",
    "backbone_stages",
    "channels_figure",
    "explain",
    "feature_grid",
    "feature_maps",
    "feature_maps_figure",
    "find_class",
    "imagenet_classifier",
    "layer_table",
    "map_pairs_figure",
    "model_inputs",
    "model_view",
    "overlay",
    "rank_channels",
    "receptive_field",
    "run_top_channels",
    "stage_outputs",
    "top_channels",
]
