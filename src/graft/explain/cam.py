"""Class activation maps: where in the image the evidence for a class lies.

CAM (Zhou et al., 2016). With global average pooling and a linear head, a class logit is the
average over positions of W_c . F(x, y) (plus the bias), so W_c . F(x, y) is what position (x, y)
adds to class c: one weighted sum of the last feature map, no gradients needed.

Grad-CAM (Selvaraju et al., 2017) works for any head (a hidden layer, a transformer's token
pooling): channel k is weighted by the spatial mean of d logit_c / d F_k. For a GAP + linear head
that gradient is W_c / (h w), so Grad-CAM gives back CAM (the tests check it).

Both maps keep only positive evidence (ReLU) and are scaled so that each image's peak is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import Backbone
from ..errors import GraftError
from ..heads import final_linear
from ..model import GraftModel

CAM = "CAM"
GRAD_CAM = "Grad-CAM"
METHODS = {"auto": None, "cam": CAM, "grad-cam": GRAD_CAM}  # what users type -> the method

# Layers that leave a linear head linear in eval mode (dropout is the identity then).
_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten)


@dataclass
class ActivationMaps:
    """Maps for a batch of images, one class each."""

    maps: torch.Tensor  # B x h x w (the feature map's grid), each scaled to [0, 1]
    classes: torch.Tensor  # B: the class index each map explains
    probabilities: torch.Tensor  # B x classes: the model's softmax output
    method: str  # CAM or GRAD_CAM
    logits: torch.Tensor | None = None  # B x classes (a multi-label model's probabilities are their sigmoids)
    rows: torch.Tensor | None = None  # B: the image (its row in the batch given) each map explains

    @property
    def predicted(self) -> torch.Tensor:
        return self.probabilities.argmax(dim=1)


def activation_maps(
    model: GraftModel,
    images: torch.Tensor,
    *,
    classes: torch.Tensor | None = None,
    method: str = "auto",
    choose: Callable[[torch.Tensor], tuple[Sequence[int], Sequence[int]]] | None = None,
) -> ActivationMaps:
    """Activation maps of `images` (B x 3 x H x W, normalised as the backbone expects).

    `classes` (B class indices) picks the class each map explains; by default the predicted one.
    `choose`, in place of `classes`, picks the maps from the model's answers: given the batch's
    logits (B x classes, on the CPU), it returns (rows, classes), a map for each pair, an image any
    number of times (a multi-label model's labels); every map comes from the one backbone pass, and
    the answer's `rows` say each map's image. `method`: "cam", "grad-cam", or "auto" (CAM where it is
    exact, Grad-CAM otherwise). Runs in fp32 and eval mode, computes gradients only for the feature
    map (never for parameters), and leaves the model's mode and parameters exactly as they were, so
    it can be trained afterwards.
    """
    if method not in METHODS:
        raise GraftError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    backbone = model.backbone
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        images = images.to(device=parameter.device, dtype=torch.float32)
        with torch.no_grad():
            features = backbone.forward_features(images).float()
        rows = torch.arange(len(features))
        if choose is not None:
            rows, classes = _chosen(model, features, choose)
            features = features[rows.to(features.device)]
        linear = _cam_layer(model, features)
        chosen = METHODS[method] or (CAM if linear is not None else GRAD_CAM)
        if chosen == CAM and linear is None:
            raise GraftError("CAM needs a head that is one linear layer over global average pooling, and this model's "
                             "is not; use --method grad-cam (or auto).")
        if chosen == CAM:
            with torch.no_grad():
                logits = model.head(backbone.pool(features))
            targets = _targets(logits, classes)
            assert linear is not None  # checked above: CAM was refused without a linear head
            raw = torch.einsum("bc,bchw->bhw", linear.weight[targets].float(), feature_grid(backbone, features))
        else:
            logits, targets, raw = _grad_cam(model, features, classes)
    finally:
        model.train(was_training)
    return ActivationMaps(
        maps=_scale(raw.detach().cpu()),
        classes=targets.cpu(),
        probabilities=logits.detach().float().softmax(dim=1).cpu(),
        method=chosen,
        logits=logits.detach().float().cpu(),
        rows=rows,
    )


def _chosen(model: GraftModel, features: torch.Tensor, choose) -> tuple[torch.Tensor, torch.Tensor]:
    """`choose`'s (rows, classes) for the logits of `features`, as tensors."""
    with torch.no_grad():
        logits = model.head(model.backbone.pool(features)).float().cpu()
    rows, classes = choose(logits)
    return torch.as_tensor(rows, dtype=torch.long).reshape(-1), torch.as_tensor(classes, dtype=torch.long).reshape(-1)


def _grad_cam(model: GraftModel, features: torch.Tensor, classes: torch.Tensor | None):
    """Grad-CAM: the gradient of each image's class logit with respect to the feature map only."""
    features = features.detach().requires_grad_(True)  # a leaf of its own: parameters get no .grad
    with torch.enable_grad():
        logits = model.head(model.backbone.pool(features))
        targets = _targets(logits, classes)
        (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), features)
    grid, gradient = feature_grid(model.backbone, features.detach()), feature_grid(model.backbone, gradient)
    weights = gradient.mean(dim=(2, 3))  # B x C: how much each channel matters for the class
    return logits, targets, torch.einsum("bc,bchw->bhw", weights, grid)


def _targets(logits: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    if classes is None:
        return logits.argmax(dim=1)
    classes = torch.as_tensor(classes, device=logits.device, dtype=torch.long).reshape(-1)
    if len(classes) != len(logits):
        raise ValueError(f"{len(classes)} classes for {len(logits)} images")
    return classes


def _scale(raw: torch.Tensor) -> torch.Tensor:
    """Positive evidence only, each map divided by its peak (an all-negative map stays 0)."""
    positive = raw.clamp(min=0)
    peak = positive.amax(dim=(1, 2), keepdim=True)
    return positive / peak.clamp(min=torch.finfo(positive.dtype).tiny)


def _cam_layer(model: GraftModel, features: torch.Tensor) -> nn.Linear | None:
    """The head's Linear layer when CAM is exact for this model, else None.

    CAM is exact when the head is a single Linear (dropout aside) and the backbone's pooling is a
    plain spatial average. Pooling is checked on the actual features rather than by model name:
    ConvNeXt normalises after pooling and ViTs pool a class token, and CAM would be wrong for both.
    """
    layers = [m for m in model.head.modules() if not list(m.children())]
    if not all(isinstance(m, (nn.Linear, *_PASS_THROUGH)) for m in layers):
        return None
    if sum(isinstance(m, nn.Linear) for m in layers) != 1:
        return None
    try:
        grid = feature_grid(model.backbone, features)
    except GraftError:
        return None
    with torch.no_grad():
        pooled = model.backbone.pool(features).float()
    average = grid.mean(dim=(2, 3))
    if pooled.shape != average.shape or not torch.allclose(pooled, average, rtol=1e-3, atol=1e-5):
        return None
    return final_linear(model.head)


def feature_grid(backbone: Backbone, features: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map as B x C x h x w, whatever layout the model produces.

    CNNs give that already (Swin-like models channels-last); ViT-like models give tokens B x N x C:
    the prefix tokens (class, distillation, registers) are dropped and the patch tokens laid back
    on their grid.
    """
    body = backbone.body
    if features.ndim == 4:
        return features.permute(0, 3, 1, 2) if getattr(body, "output_fmt", "NCHW") == "NHWC" else features
    if features.ndim == 3:
        patches = features[:, int(getattr(body, "num_prefix_tokens", 0) or 0):]
        count = patches.shape[1]
        height, width = getattr(getattr(body, "patch_embed", None), "grid_size", None) or (0, 0)
        if height * width != count:  # e.g. another input size than the patch embedding's default
            height = width = math.isqrt(count)
        if height * width == count and count > 0:
            return patches.transpose(1, 2).reshape(len(features), -1, height, width)
    raise GraftError(
        f"Backbone {backbone.name!r} gives features of shape {tuple(features.shape)}, which cannot be laid on a "
        "square grid of image positions, so graft cannot draw activation maps for it."
    )
