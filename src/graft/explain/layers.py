"""Every layer of a grafted model: its output shape, its parameters and where they come from.

Like Keras' `model.summary()` or torchinfo: one forward pass of a blank image at the model's input
size, with a forward hook on every module, records each layer's output shape. Parameters are
counted where they are registered (each module's own, not its children's), so the rows add up to the
whole model exactly, and so to `graft summary`'s per-stage table. For convolutions the count is
written out as the course derives it: k x k x in / groups x out, plus one bias per output channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model import GraftModel

BODY = "backbone.body."  # the timm model inside the backbone: its layers are shown by their timm names


@dataclass
class LayerRow:
    name: str  # timm's module name in the backbone ("blocks.1.0.conv_pw"), "head.0" for the head
    kind: str  # the module's class
    output: tuple[int, ...] | None  # output shape without the batch dimension; None when it did not run
    parameters: int
    trainable: int
    stage: str  # the backbone stage its parameters belong to ("0", "1", ..., "head"; "0-1" for a group across two)
    formula: str = ""  # how the count follows from the layer's shape (convolutions, linear layers, BatchNorm)
    members: int = 1  # modules it stands for (more than 1 with `depth`)

    @property
    def shape(self) -> str:
        if self.output is None:
            return "-"
        return " x ".join(str(size) for size in self.output) if self.output else "scalar"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "output": None if self.output is None else list(self.output),
                "parameters": self.parameters, "trainable": self.trainable, "stage": self.stage,
                "formula": self.formula, "members": self.members}


@dataclass
class LayerTable:
    rows: list[LayerRow]
    input_size: tuple[int, int, int]
    depth: int | None
    stage_totals: list[int] = field(default_factory=list)  # parameters per stage, as `graft summary` counts them

    @property
    def parameters(self) -> int:
        return sum(row.parameters for row in self.rows)

    @property
    def trainable(self) -> int:
        return sum(row.trainable for row in self.rows)


def layer_table(model: GraftModel, *, input_size: Sequence[int] | None = None, depth: int | None = None) -> LayerTable:
    """The layers of `model` (one row per module that has parameters or no children), in order.

    `input_size` (C, H, W) defaults to the backbone's; `depth` N groups the rows by the first N parts
    of their names (depth 1: `conv_stem`, `blocks`, `head`; depth 2: each block), like torchinfo's
    depth. "trainable" counts the parameters that require gradients now (see `freeze_backbone`).
    """
    size = tuple(input_size or model.backbone.data_config.input_size)
    channels, height, width = (int(s) for s in size)
    shapes = _output_shapes(model, torch.zeros(1, channels, height, width))
    stage_of = {f"backbone.{name}": str(index) for index, names in enumerate(model.backbone.stage_params) for name in names}
    rows: list[LayerRow] = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if name in ("", "backbone", "backbone.body") and not own:
            continue
        if own or (not list(module.children()) and not isinstance(module, nn.Identity)):  # Identity: a removed layer
            stages = {stage_of.get(f"{name}.{p}", "") for p, _ in own}
            if name == "head" or name.startswith("head."):
                stage = "head"
            else:  # a layer without parameters (ReLU, pooling) goes with the layer before it
                stage = "/".join(sorted(stages)) if stages else (rows[-1].stage if rows else "")
            rows.append(LayerRow(
                name=_display(name), kind=type(module).__name__, output=shapes.get(name),
                parameters=sum(p.numel() for _, p in own), trainable=sum(p.numel() for _, p in own if p.requires_grad),
                stage=stage, formula=formula(module) if own else "",
            ))
    table = LayerTable(rows=rows, input_size=(channels, height, width), depth=depth,
                       stage_totals=[sum(dict(model.backbone.named_parameters())[n].numel() for n in names)
                                     for names in model.backbone.stage_params])
    if depth is not None:
        table.rows = _grouped(model, rows, shapes, depth)
    return table


def formula(module: nn.Module) -> str:
    """The parameter count of a convolution, linear or BatchNorm layer written out from its shape."""
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        inputs = f"{module.in_channels}/{module.groups}" if module.groups > 1 else str(module.in_channels)
        text = f"{k_h}x{k_w} x {inputs} x {module.out_channels}"
        if module.bias is not None:
            text += f" + {module.out_channels}"
        return f"{text} = {_count(module):,}"
    if isinstance(module, nn.Linear):
        text = f"{module.in_features} x {module.out_features}" + (f" + {module.out_features}" if module.bias is not None else "")
        return f"{text} = {_count(module):,}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        return f"2 x {module.num_features} = {_count(module):,} (scale, shift)"
    return ""


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _display(name: str) -> str:
    if name.startswith(BODY):
        return name[len(BODY):]
    return "(backbone)" if name == "backbone.body" else name


def _output_shapes(model: GraftModel, image: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Module name -> its output shape (batch dimension dropped) in one pass of `image`, eval mode."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, inputs, output):
            if name in shapes:
                return  # a module called twice keeps its first shape
            while isinstance(output, (list, tuple)) and output:  # feature lists: the last map is the one used
                output = output[-1]
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape[1:])
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        with torch.no_grad():
            model(image.to(device=parameter.device) if parameter is not None else image)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes


def _grouped(model: GraftModel, rows: list[LayerRow], shapes: dict[str, tuple[int, ...]], depth: int) -> list[LayerRow]:
    """Rows merged by the first `depth` parts of their names; a group shows its own module's output."""
    if depth < 1:
        raise ValueError("depth counts name parts: 1 or more")
    groups: dict[tuple[bool, str], list[LayerRow]] = {}
    for row in rows:  # keyed apart: the new head, and a timm model's own layers named head.* (ConvNeXt)
        groups.setdefault((row.stage == "head", ".".join(row.name.split(".")[:depth])), []).append(row)
    merged = []
    modules = dict(model.named_modules())
    for (is_head, prefix), members in groups.items():
        full = prefix if is_head or prefix.startswith("(") else BODY + prefix
        module = modules.get(full)
        if len(members) == 1:
            merged.append(members[0])
            continue
        stages = [m.stage for m in members if m.parameters]
        stage = stages[0] if stages and stages[0] == stages[-1] else (f"{stages[0]}-{stages[-1]}" if stages else members[0].stage)
        output = shapes.get(full) if full in shapes else next((m.output for m in reversed(members) if m.output), None)
        merged.append(LayerRow(name=prefix, kind=type(module).__name__ if module is not None else members[0].kind,
                               output=output, parameters=sum(m.parameters for m in members),
                               trainable=sum(m.trainable for m in members), stage=stage, members=len(members)))
    return merged
