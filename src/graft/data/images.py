"""Reading one image safely: any mode to RGB, EXIF orientation applied, bombs and corrupt files refused.

Users' folders hold everything: phone photos rotated by EXIF, scans in CMYK, 16-bit PNGs from
microscopes, palette GIFs with transparency, truncated downloads. Each comes back as a fully decoded
RGB image, or as a BadImageError that says what is wrong with that file. Files are only read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def load_image(path: str | Path, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """A fully loaded RGB image. `draft_size` lets big JPEGs decode at a reduced scale (never below it)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if draft_size is not None and image.format == "JPEG":
                    image.draft("RGB", draft_size)
                image.load()  # decode now: truncated data fails here, not later in a worker
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(
            path,
            f"image is too large ({exc}); refusing a possible decompression bomb. Resize it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file.",
        ) from None
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"truncated or corrupt image data ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or dropping information wrongly."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit images scaled to 8 bits by their bit depth (Pillow's convert would clip at 255)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scaled = values / 257.0  # 65535 -> 255, 32768 -> 127.5
    elif image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    else:  # "I": 32-bit integers, usually 16-bit data stored wide (Pillow opens 16-bit PNGs so)
        high = float(values.max()) if values.size else 0.0
        if high <= 255:
            scaled = values
        elif high <= 65535:
            scaled = values / 257.0
        else:
            scaled = values / high * 255.0
    gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")
