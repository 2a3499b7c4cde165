"""The one training loop, as a LightningModule: cross-entropy (or, for several labels per image,
binary cross-entropy on each class's sigmoid), AdamW, reduce-LR-on-plateau.

It trains whatever `net` it is given: the bare head on cached features in the head phase, or the
whole grafted model on images in the image phase. Which parameters train, and at which learning
rate, arrives as explicit parameter groups, so this file knows nothing about strategies.

Its validation figure is what early stopping and the best epoch follow (`monitor`): accuracy
(`val_acc`) for one class per image; for multi-label data the mean average precision over the
classes (`val_map`: thresholds are chosen after training, and AP needs none).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import GraftError


class TrainingDiverged(GraftError):
    """The loss stopped being a finite number: the weights would be garbage from here on."""


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        param_groups: list[dict],
        *,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.1,
        class_weights: list[float] | None = None,
        plateau_patience: int = 2,
        plateau_factor: float = 0.2,
        classes: int | None = None,
        multilabel: bool = False,
    ):
        """`multilabel`: targets are N x `classes` multi-hot rows, the loss is binary cross-entropy,
        and `class_weights` are each class's positive weight (BCE's pos_weight)."""
        super().__init__()
        self.net = net
        self.param_groups = param_groups
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.plateau_patience = plateau_patience
        self.plateau_factor = plateau_factor
        self.multilabel = multilabel
        if multilabel:
            from torchmetrics.classification import MultilabelAveragePrecision

            # macro over the classes, across processes under DDP; a class with no positive in val is left out
            self.val_map = MultilabelAveragePrecision(num_labels=int(classes or 0), average="macro", thresholds=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # images: channels_last is faster for convolutions on CPU and GPU
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def on_fit_start(self) -> None:
        self.net.to(memory_format=torch.channels_last)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        # Label smoothing and class weights only while training; validation loss stays the plain, comparable one.
        training = stage == "train"
        weight = self.class_weights.to(logits.device) if training and self.class_weights is not None else None
        if self.multilabel:
            target = y.float()
            if training and self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=weight)
        else:
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=self.label_smoothing if training else 0.0)
        if stage == "train" and not torch.isfinite(loss):
            # Diverged: stop now, before a non-finite step reaches the weights that would be kept.
            rates = ", ".join(f"{group['lr']:g}" for group in self.param_groups)
            raise TrainingDiverged(
                f"Training diverged: the loss became {loss.item()} in epoch {self.current_epoch + 1}. "
                f"The learning rate is too high for this data (learning rates: {rates}); lower --lr "
                "(e.g. ten times) and train again. No model was saved."
            )
        options: dict = dict(on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log(f"{stage}_loss", loss, **options)
        if self.multilabel:  # exact match at 0.5 as the accuracy figure; mAP decides (thresholds come later)
            accuracy = ((logits > 0) == (y > 0.5)).all(dim=-1).float().mean()
            if stage == "val":
                self.val_map.update(logits.float().sigmoid(), y.long())
                self.log("val_map", self.val_map, on_step=False, on_epoch=True, prog_bar=True)
        else:
            accuracy = (logits.argmax(dim=-1) == y).float().mean()
        self.log(f"{stage}_acc", accuracy, **options)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
