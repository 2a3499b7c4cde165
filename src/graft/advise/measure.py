"""Measuring how a dataset looks to a pretrained backbone: BatchNorm drift and linear probes per stage.

One forward pass of the whole pretrained network over a small stratified sample records two things:

- BatchNorm drift. Every BatchNorm layer remembers the variance of its input over ImageNet
  (`running_var`). A forward hook measures the same variance on the new data; how far the spread
  moves from ImageNet's (as a log ratio) says how unfamiliar the data is to that layer. It needs no
  ImageNet images: the statistics are stored in the weights.
- Per-stage features. The output of each stage (timm's `feature_info` modules, the same points
  `truncate --cut K` cuts at), global-average-pooled, feeds a leave-one-out linear probe. Where
  the probe is most accurate is where the network's features suit the new classes best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..backbones import Backbone, stage_infos
from ..data.dataset import ImageDataset
from ..data.discover import Sample
from ..data.images import draft_size_for
from ..data.transforms import eval_transform
from ..errors import GraftError
from ..memory import give_back
from ..progress import image_progress
from ..runtime import Runtime


@dataclass
class Activations:
    """What one pass over the sample saw: pooled features per stage and BatchNorm drift per layer."""

    stage_features: list[np.ndarray]  # per stage: N x channels, global-average-pooled
    labels: np.ndarray  # N
    layer_drift: dict[str, float]  # BatchNorm module name -> drift (see `batchnorm_drift`)
    layer_stage: dict[str, int]  # BatchNorm module name -> stage index


def stratified_sample(samples: Sequence[Sample], per_class: int, *, seed: int = 0) -> list[Sample]:
    """At most `per_class` samples of each label, drawn at random (seeded), in a stable order."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    chosen = []
    for label in sorted(by_label):
        group = by_label[label]
        picks = rng.choice(len(group), size=min(per_class, len(group)), replace=False)
        chosen += [group[i] for i in sorted(picks)]
    return chosen


class _MomentRecorder:
    """Accumulates per-channel sums of x and x^2 over batch and space, batch by batch."""

    def __init__(self):
        self.count = 0
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        # Sums of one batch in float32 (a cascade sum: accurate enough, several times faster than
        # converting whole activations to float64), accumulated over batches in float64.
        x = inputs[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]  # channels are dimension 1 for BatchNorm
        total, squares = x.sum(dim=dims).double(), x.square().sum(dim=dims).double()
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += x.numel() // x.shape[1]

    def variance(self) -> torch.Tensor:
        mean = self.total / self.count
        return (self.squares / self.count - mean * mean).clamp_min(0.0)


def batchnorm_drift(var: torch.Tensor, layer: nn.modules.batchnorm._BatchNorm) -> float:
    """How far the spread of a layer's input on the data sits from its spread on ImageNet.

    Mean over channels of |ln(std on the data / running std)|: 0 is exactly ImageNet's spread,
    0.4 means channels fire about 1.5 times more or less widely. Only the spread counts, not the
    mean: measured on CIFAR-10, the mean shift at the last stage moved with the input size as
    much as with the data (0.55 at 64 px, 0.24 at 224 px; generated textures 0.58 and 0.33), while
    the spread kept natural images and generated ones apart at every size (docs/advise.md).
    """
    if layer.running_var is None:
        raise ValueError(f"{layer}: a BatchNorm layer without running statistics has no drift to measure")
    running_var = layer.running_var.double().cpu() + layer.eps
    return float((0.5 * ((var.cpu() + layer.eps) / running_var).log().abs()).mean())


# On a CPU the activation pass runs in batches of at most this many images: with a hook on every
# BatchNorm layer, Lite0 at 224 px over advise's 300 images peaked 1.05-1.15 GB above the loaded
# model in batches of 32, 0.82-0.87 GB in 16, 0.40-0.47 GB in 8, for about 20% more time (40-45 s
# against 48-55 s on a loaded 2-core EPYC): the default run on 10,000 images peaked here (issue 24).
ACTIVATION_BATCH_CPU = 8


def measure_activations(
    backbone: Backbone,
    samples: Sequence[Sample],
    *,
    runtime: Runtime,
) -> Activations:
    """Run the whole (uncut) pretrained `backbone` over `samples` once, in eval mode, with hooks.

    Batches of `runtime.batch_size` images (on a CPU at most ACTIVATION_BATCH_CPU), in its precision,
    with its workers and progress.
    """
    if backbone.cut is not None:
        raise ValueError("measure_activations needs the whole network (cut=None)")
    body = backbone.body
    stages = stage_infos(backbone)
    stage_modules = [_stage_module(backbone, stage.module) for stage in stages]
    layer_stage = _batchnorm_stages(backbone)
    recorders = {name: _MomentRecorder() for name in layer_stage}
    pooled: list[list[torch.Tensor]] = [[] for _ in stages]

    def keep_pooled(index: int):
        def hook(module, inputs, output):
            output = output[-1] if isinstance(output, (list, tuple)) else output
            spatial = tuple(range(2, output.dim())) if output.dim() == 4 else (1,)  # maps, or tokens
            pooled[index].append(output.detach().float().mean(dim=spatial).cpu())
        return hook

    modules = dict(body.named_modules())
    handles = [modules[name].register_forward_pre_hook(recorder) for name, recorder in recorders.items()]
    handles += [module.register_forward_hook(keep_pooled(i)) for i, module in enumerate(stage_modules)]
    device = runtime.device
    config = backbone.data_config
    size = draft_size_for(config.image_size, augmented=False)
    dataset = ImageDataset(samples, eval_transform(config), draft_size=(size, size))
    batch_size = runtime.batch_size if device.type != "cpu" else min(runtime.batch_size, ACTIVATION_BATCH_CPU)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=runtime.workers)
    was_training = backbone.training
    backbone.eval().to(device=device)
    labels = []
    try:
        with torch.inference_mode(), image_progress(len(dataset), "advise", enabled=runtime.progress) as update:
            for images, batch_labels in loader:
                with runtime.autocast(device):
                    body.forward_features(images.to(device))
                labels.append(batch_labels)
                update(len(images))
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)
        give_back()  # the activations' memory, to the system rather than kept by the C library
    drift = {name: batchnorm_drift(recorder.variance(), modules[name]) for name, recorder in recorders.items()}
    return Activations(
        stage_features=[torch.cat(chunks).numpy() for chunks in pooled],
        labels=torch.cat(labels).numpy(),
        layer_drift=drift,
        layer_stage=layer_stage,
    )


def _stage_module(backbone: Backbone, name: str) -> nn.Module:
    try:
        return backbone.body.get_submodule(name)
    except AttributeError:
        raise GraftError(
            f"Backbone {backbone.name!r} does not expose its stages (no module {name!r}), so advise cannot "
            "probe them; use a CNN such as tf_efficientnet_lite0 or resnet50."
        ) from None


def _batchnorm_stages(backbone: Backbone) -> dict[str, int]:
    """BatchNorm layers with running statistics (module names in `body`) -> their stage index.

    A layer belongs to the stage that holds its weight, as `Backbone.stage_params` groups them.
    """
    stage_of = {param: index for index, names in enumerate(backbone.stage_params) for param in names}
    layers = {}
    for name, module in backbone.body.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            stage = stage_of.get(f"body.{name}.weight")
            if stage is not None:
                layers[name] = stage
    return layers


def probe_accuracy(features: np.ndarray, labels: np.ndarray, *, alphas: Sequence[float]) -> float | None:
    """Leave-one-out accuracy of a linear probe on standardised features (best ridge penalty of `alphas`).

    The probe is a ridge classifier (least squares onto one-hot labels): scikit-learn computes its
    leave-one-out predictions for every penalty in closed form from one decomposition. On 300
    images, probing five stages took 0.2 s this way and 2-4 s with 5-fold cross-validated logistic
    regression, which ranked the stages the same (docs/advise.md). None when some class has fewer
    than 2 images.
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    counts = np.bincount(labels)
    if len(counts[counts > 0]) < 2 or counts[counts > 0].min() < 2:
        return None
    x = StandardScaler().fit_transform(features)
    # One BLAS thread: beside torch's threads, multi-threaded BLAS made these fits 10 times slower.
    with threadpool_limits(limits=1):
        return float(RidgeClassifierCV(alphas=list(alphas), scoring="accuracy").fit(x, labels).best_score_)
