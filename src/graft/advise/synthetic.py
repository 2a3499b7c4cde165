"""Small generated datasets unlike ImageNet, to see `graft advise` tell cases apart.

ImageNet is photographs of objects. These are not: grey procedural textures whose class is the
pattern (stripes in three orientations, checkerboards, dots, rings, fine or coarse noise), and
white digits drawn on black. Each image has a random frequency, phase, contrast or position, so
no two are the same. Both write `root/<class>/NNNN.png`, a folder of class folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXTURES = ("stripes-horizontal", "stripes-vertical", "stripes-diagonal", "checkerboard",
            "dots", "rings", "noise-fine", "noise-coarse")


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One `size` x `size` grey texture in [0, 1] of the given kind, with random frequency and phase."""
    y, x = np.mgrid[0:size, 0:size] / size
    cycles = rng.uniform(3, 7)  # pattern repeats across the image
    phase = rng.uniform(0, 2 * np.pi)
    wave = lambda t: 0.5 + 0.5 * np.sin(2 * np.pi * cycles * t + phase)
    if kind == "stripes-horizontal":
        return wave(y)
    if kind == "stripes-vertical":
        return wave(x)
    if kind == "stripes-diagonal":
        return wave((x + y) / np.sqrt(2))
    if kind == "checkerboard":
        return ((np.floor(cycles * x + phase) + np.floor(cycles * y + phase)) % 2).astype(float)
    if kind == "dots":
        return (wave(x) * wave(y) > 0.6).astype(float)
    if kind == "rings":
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        return wave(np.hypot(x - cx, y - cy))
    if kind in ("noise-fine", "noise-coarse"):
        cells = size // (2 if kind == "noise-fine" else 8)
        noise = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        return np.asarray(noise.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    raise ValueError(f"unknown texture {kind!r}; one of {', '.join(TEXTURES)}")


def make_textures(root: str | Path, *, per_class: int = 20, size: int = 32, seed: int = 0,
                  classes: tuple[str, ...] = TEXTURES) -> Path:
    """Write `per_class` textures of each kind in `classes` as grey PNGs with random contrast."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            low, high = sorted(rng.uniform(0, 1, size=2))
            pixels = low + (high - low + 0.2) * texture(kind, size, rng)
            Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB").save(root / kind / f"{index:04d}.png")
    return root


def make_digits(root: str | Path, *, per_class: int = 20, size: int = 32, seed: int = 0) -> Path:
    """Write `per_class` images of each digit 0-9: white, random size, position and tilt, on black."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            font = ImageFont.load_default(size=int(size * rng.uniform(0.5, 0.8)))
            image = Image.new("L", (size, size))
            left, top, right, bottom = font.getbbox(str(digit))
            x = rng.uniform(0, max(1, size - (right - left))) - left
            y = rng.uniform(0, max(1, size - (bottom - top))) - top
            ImageDraw.Draw(image).text((x, y), str(digit), fill=int(rng.integers(180, 256)), font=font)
            image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
            image.convert("RGB").save(root / str(digit) / f"{index:04d}.png")
    return root
