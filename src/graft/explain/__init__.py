"""Where a model looks: class activation maps (CAM, Grad-CAM) drawn over the images."""

from .cam import CAM, GRAD_CAM, METHODS, ActivationMaps, activation_maps, feature_grid
from .explain import Explanation, explain, find_class, imagenet_classifier
from .figures import MapPair, map_pairs_figure
from .overlay import model_inputs, model_view, overlay

__all__ = [
    "CAM",
    "GRAD_CAM",
    "METHODS",
    "ActivationMaps",
    "Explanation",
    "MapPair",
    "activation_maps",
    "explain",
    "feature_grid",
    "find_class",
    "imagenet_classifier",
    "map_pairs_figure",
    "model_inputs",
    "model_view",
    "overlay",
]
