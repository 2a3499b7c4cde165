"""Reading one image file into an 8-bit RGB picture, the way a camera or an editor shows it.

Backbones expect 8-bit RGB, but users' folders hold grayscale scans, transparent PNGs and GIFs,
CMYK JPEGs from print workflows, 16-bit microscopy PNGs and phone photos stored sideways with an
EXIF rotation flag. `load_image` turns all of them into what the user sees in an image viewer, and
turns every file it cannot read (corrupt, truncated, not an image, a decompression bomb) into a
`BadImageError` that names the file, so one bad download never ends a run in a traceback.
"""

from __future__ import annotations

import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
"""Lower-case suffixes of the files graft treats as images (all of them readable by Pillow)."""

# What Pillow raises for damaged files: its decoders report bad data in several ways.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

# Integer and float modes whose values do not fit in 8 bits, and the value each one maps to white.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_HIGH_BIT_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255, 255)
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height

# `warnings.catch_warnings` swaps the process-wide filter list, so two threads inside it at once can
# leave each other's filters behind. Opening reads only the header, so serialising it costs little.
_OPEN_LOCK = threading.Lock()


def draft_size_for(image_size: int, augmented: bool) -> int:
    """How small a big JPEG may be decoded (`load_image`'s draft_size, each side): enough pixels for
    the crop the transform will take. One rule for training's features and every prediction, so a
    photo is prepared the same way in both."""
    return int(image_size * (1.75 if augmented else 1.15))


def eval_draft_size(image_size: int) -> tuple[int, int]:
    """`load_image`'s draft_size for a prediction or evaluation at `image_size` px."""
    side = draft_size_for(image_size, augmented=False)
    return side, side


def load_image(path: str | Path, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` completely and return it as an 8-bit RGB image, upright.

    `draft_size` lets JPEGs decode at a reduced scale (1/2, 1/4 or 1/8) that is still at least
    `draft_size` on both sides: a 12-megapixel photo for a 224 px network then decodes several
    times faster. Other formats ignore it. Raises `BadImageError` for any file that cannot be used.
    """
    path = Path(path)
    image = _open(path)
    with image:  # closes the file once decoded; the pixels stay in memory
        try:
            _refuse_bomb(path, image.size)
            if draft_size is not None:
                _apply_draft(image, draft_size)
            image.load()  # decode everything now: truncated files fail here, not mid-training
        except Image.DecompressionBombError:
            raise BadImageError(path, _too_large_reason(None)) from None
        except _DECODE_ERRORS as error:
            raise BadImageError(path, f"truncated or corrupt image data ({error}); "
                                      "re-export or re-download the file, or delete it") from None
    _apply_exif_orientation(image)
    return _to_rgb(path, image)


def _open(path: Path) -> Image.Image:
    """Read only the header: format, mode and size. Pixels stay on disk until `load`."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow warns (rather than raises) for images between its limit and twice it;
            # `_refuse_bomb` refuses those with their dimensions, so the warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise BadImageError(path, "file not found; check the path") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise BadImageError(path, "permission denied; make the file readable") from None
    except UnidentifiedImageError:
        raise BadImageError(path, _empty_reason(path) or "not an image file Pillow can read; convert it "
                                  "to JPEG or PNG, or remove it") from None
    except Image.DecompressionBombError:
        raise BadImageError(path, _too_large_reason(None)) from None
    except _DECODE_ERRORS as error:
        raise BadImageError(path, _empty_reason(path) or f"cannot read the image header ({error}); the "
                                  "file may be corrupt: re-export or re-download it") from None


def _empty_reason(path: Path) -> str | None:
    """Say so when a file that failed to open has no bytes at all (an interrupted download or copy):
    checked only after a failure, so reading good images costs no extra `stat`."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return None
    return "empty file (0 bytes); re-download or re-export it, or delete it" if empty else None


def _refuse_bomb(path: Path, size: tuple[int, int]) -> None:
    """Refuse images with more pixels than Pillow's `MAX_IMAGE_PIXELS`, as Pillow's own warning does.

    A few hundred bytes of PNG can declare a 50,000 x 50,000 image that needs gigabytes of memory.
    Checking here, before decoding, gives a message with the actual dimensions.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise BadImageError(path, _too_large_reason(size))


def _too_large_reason(size: tuple[int, int] | None) -> str:
    limit = Image.MAX_IMAGE_PIXELS or 0
    pixels = f"{size[0]} x {size[1]} pixels" if size else f"more than {2 * limit:,} pixels"
    return (f"image is too large ({pixels}, Pillow's limit is {limit:,}); refusing a possible "
            "decompression bomb; resize it to fewer pixels, or if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS in your own script")


def _apply_draft(image: Image.Image, draft_size: tuple[int, int]) -> None:
    """Ask the JPEG decoder for the smallest power-of-two reduction still covering `draft_size`.

    `draft_size` is meant for the upright image, so it is swapped for photos stored sideways.
    """
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = draft_size
    if _orientation(image) in _ROTATED_ORIENTATIONS:
        width, height = height, width
    image.draft("RGB", (width, height))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); 1 too when the EXIF block is unreadable."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except _DECODE_ERRORS:
        return 1


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate/flip as the EXIF Orientation tag says, like every photo viewer does.

    A damaged EXIF block is metadata, not pixels: the image is then used as stored.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS:
        return


def _to_rgb(path: Path, image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing what the user sees."""
    if image.mode in _HIGH_BIT_MODES:
        return _to_eight_bit(image).convert("RGB")
    if _has_alpha(image):
        return _composite_on_white(image)
    if image.mode == "RGB":
        return image.copy() if image.readonly else image  # readonly: still backed by the file's mmap
    try:
        return image.convert("RGB")
    except ValueError:
        raise BadImageError(path, f"unsupported colour mode {image.mode}; save it as RGB JPEG or "
                                  "PNG") from None


def _has_alpha(image: Image.Image) -> bool:
    """True for an alpha channel, a transparent colour key, or a palette with alpha."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Show transparent pixels as white, as a browser does; dropping alpha would reveal the hidden
    (often black or garbage) colour values underneath."""
    background = Image.new("RGBA", image.size, _WHITE)
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float grayscale image to 8 bits by its bit range, not by clipping.

    Clipping (what a plain `convert("L")` does) turns every 16-bit value above 255 white.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    scaled = np.clip(values, 0, None) * (255.0 / _full_scale(image.mode, values))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _full_scale(mode: str, values: np.ndarray) -> float:
    """The value that means white for this mode.

    16-bit modes: 65535, so 32768 -> 128. `I` (32-bit int) is how Pillow stores 16-bit PGMs
    (rescaled to 0-65535) and 32-bit TIFFs: 65535 unless larger values occur. `F` (float) is
    0-1 when it fits, else the smallest of 8/16 bits that holds it, else its maximum.
    """
    if mode in _SIXTEEN_BIT_MODES:
        return 65535.0
    peak = float(values.max()) if values.size else 0.0
    if mode == "I":
        return 65535.0 if peak <= 65535 else float(2**32 - 1)
    for full in (1.0, 255.0, 65535.0):
        if peak <= full:
            return full
    return peak
