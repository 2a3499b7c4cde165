"""The new top grafted onto a backbone: a linear layer, or one hidden layer with dropout."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from ..errors import GraftError


@dataclass(frozen=True)
class HeadConfig:
    """`hidden=None` gives Linear(features, classes), Keras' Dense(n, 'softmax') without the softmax."""

    hidden: int | None = None
    dropout: float = 0.0

    def __post_init__(self):
        if self.hidden is not None and self.hidden < 1:
            raise GraftError(f"--hidden {self.hidden}: the hidden layer needs at least 1 unit (or leave it out).")
        if not 0.0 <= self.dropout < 1.0:
            raise GraftError(f"--dropout {self.dropout}: use a value from 0 (none) up to, not including, 1.")

    @property
    def is_linear(self) -> bool:
        return self.hidden is None

    def to_dict(self) -> dict:
        return asdict(self)


def create_head(in_features: int, num_classes: int, config: HeadConfig = HeadConfig()) -> nn.Module:
    """A fresh, randomly initialised head mapping pooled backbone features to class logits."""
    layers: list[nn.Module] = []
    if config.dropout:
        layers.append(nn.Dropout(config.dropout))
    if config.hidden is None:
        layers.append(nn.Linear(in_features, num_classes))
    else:
        layers += [nn.Linear(in_features, config.hidden), nn.ReLU(inplace=True)]
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
        layers.append(nn.Linear(config.hidden, num_classes))
    return nn.Sequential(*layers)


def final_linear(head: nn.Module) -> nn.Linear:
    """The layer producing the logits (its weights are the class weights CAM needs)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1]
