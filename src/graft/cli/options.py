"""Options that several commands share, declared once so their help reads the same everywhere."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Strategy = Annotated[str, typer.Option("--strategy", "-s", help="linear-probe, feature-extract, finetune, partial, truncate, scratch, or auto (measure the data and follow `graft advise`; see `graft strategies`).")]
Backbone = Annotated[str, typer.Option("--backbone", "-b", help="Any timm model name (see `graft backbones`).")]
Weights = Annotated[str, typer.Option(help="imagenet, none (random init), or the path of a .safetensors/.pth file.")]
PretrainedWeights = Annotated[str, typer.Option(help="imagenet, or the path of a .safetensors/.pth file (pretrained weights only).")]
Precision = Annotated[str, typer.Option(help="auto, 32 or bf16.")]
Workers = Annotated[Optional[int], typer.Option(help="Data-loading processes (default: cores - 1, up to 8; none on 2 cores or fewer).")]
ImgSize = Annotated[Optional[int], typer.Option(help="Input size in pixels (default: the backbone's own).")]
ValSplit = Annotated[float, typer.Option(help="Validation fraction when DATA has no val/ folder.")]
