"""What users hand to prediction: paths, folders and globs on the command line; paths, PIL images,
numpy arrays and encoded bytes in Python. Everything becomes an 8-bit RGB picture, or a
`BadImageError` that names the input, exactly as `load_image` does for files.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import BadImageError
from .discover import _is_graft_output, _is_ignored
from .images import _DECODE_ERRORS, IMAGE_EXTENSIONS, _apply_draft, _refuse_bomb, _to_rgb, load_image

ImageInput = Union[str, Path, Image.Image, np.ndarray, bytes, bytearray, memoryview]
"""One image for `Classifier.predict`: a file path, a PIL image, an H x W x 3 (or H x W grey) uint8
array, or the bytes of an encoded image file (JPEG, PNG, ...)."""

SINGLE_TYPES = (str, Path, Image.Image, np.ndarray, bytes, bytearray, memoryview)


def as_input_list(images: ImageInput | Iterable[ImageInput]) -> tuple[list[ImageInput], bool]:
    """The items to predict, and whether the caller gave one item rather than a collection.

    A 4-D array (N x H x W x 3) is a batch of N pictures; a 2-D or 3-D array is one picture.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    if isinstance(images, SINGLE_TYPES):
        return [images], True
    return list(images), False


def input_name(item: ImageInput, index: int) -> str:
    """How a prediction names its input: the path for files, else `<kind #index>`."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, Image.Image):
        return str(getattr(item, "filename", "") or f"<PIL image #{index}>")
    if isinstance(item, np.ndarray):
        return f"<array #{index}>"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes #{index}>"
    return f"<{type(item).__name__} #{index}>"


def to_rgb_image(item: ImageInput, name: str, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """`item` as an upright 8-bit RGB PIL image; `BadImageError(name, reason)` when it cannot be one.
    `draft_size`: a JPEG file or JPEG bytes may decode at a reduced scale still covering it
    (`load_image`); images already decoded are taken as they are."""
    if isinstance(item, (str, Path)):
        return load_image(item, draft_size=draft_size)
    if isinstance(item, Image.Image):
        return _from_pil(item, name)
    if isinstance(item, np.ndarray):
        return _from_array(item, name)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(item), name, draft_size)
    raise BadImageError(name, f"unsupported input {type(item).__name__}; give a path, a PIL image, a uint8 "
                              "numpy array (H x W x 3 or H x W) or the bytes of an image file")


def _from_pil(image: Image.Image, name: str) -> Image.Image:
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)  # a copy: the caller's image is never changed
    except _DECODE_ERRORS as error:
        raise BadImageError(name, f"the image cannot be decoded ({error})") from None
    return _to_rgb(Path(name), upright if upright is not None else image)


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise BadImageError(name, f"array of {array.dtype}: give uint8 pixels (0-255), e.g. "
                                  "(array * 255).round().astype(numpy.uint8) for values in 0-1")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L").convert("RGB")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB" if array.shape[-1] == 3 else "RGBA")
        return _to_rgb(Path(name), image)
    raise BadImageError(name, f"array of shape {array.shape}: give H x W x 3 (RGB), H x W x 4 (RGBA) or "
                              "H x W (grey) pixels")


def _from_bytes(data: bytes, name: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    if not data:
        raise BadImageError(name, "no bytes (empty input)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        _refuse_bomb(Path(name), image.size)
        if draft_size is not None:
            _apply_draft(image, draft_size)
        image.load()
    except Image.DecompressionBombError as error:
        raise BadImageError(name, f"image is too large ({error})") from None
    except BadImageError:
        raise
    except _DECODE_ERRORS as error:
        raise BadImageError(name, f"not an image Pillow can read, or corrupt data ({error})") from None
    return _from_pil(image, name)


# -- Command-line inputs ---------------------------------------------------------------------------


def expand_inputs(arguments: Sequence[str | Path]) -> tuple[list[Path], list[BadImageError]]:
    """Image files from files, folders (recursive) and glob patterns, in order, each file once.

    A file named explicitly is always tried (whatever its suffix); folders and globs contribute
    image files by extension. Hidden and junk entries and graft's own run folders are skipped in
    folders. An argument that matches nothing becomes a `BadImageError` naming it.
    """
    found: list[Path] = []
    failed: list[BadImageError] = []
    seen: set[Path] = set()
    skipped_folders: dict[Path, bool] = {}

    matched = 0

    def add(path: Path) -> None:
        nonlocal matched
        matched += 1
        if path not in seen:
            seen.add(path)
            found.append(path)

    for argument in arguments:
        text = str(argument)
        path = Path(text)
        if path.is_dir():
            before = matched
            for image in _walk(path):
                add(image)
            if matched == before:
                failed.append(BadImageError(path, "no image files in this folder (looked for "
                                                  f"{', '.join(sorted(IMAGE_EXTENSIONS))})"))
        elif path.exists() or os.path.lexists(path) or not glob.has_magic(text):
            add(path)  # a missing plain path is reported when it is read: "file not found"
        else:
            matches = sorted(glob.glob(text, recursive=True))
            before = matched
            fixed = _fixed_depth(text)
            for match in map(Path, matches):
                if _inside_output(match, fixed, skipped_folders):
                    continue
                if match.is_dir():
                    for image in _walk(match):
                        add(image)
                elif match.suffix.lower() in IMAGE_EXTENSIONS and not _is_ignored(match.name):
                    add(match)
            if matched == before:
                failed.append(BadImageError(text, "no image file matches this pattern"))
    return found, failed


def _fixed_depth(pattern: str) -> int:
    """How many leading parts of a glob pattern hold no wildcard (the folder the user named)."""
    parts = Path(pattern).parts
    return next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))


def _inside_output(match: Path, fixed: int, cache: dict[Path, bool]) -> bool:
    """Whether a glob match lies in a hidden folder or one of graft's output folders below the
    pattern's fixed part, as a folder walk would have skipped it."""
    parents = list(match.parents)[::-1][fixed:]  # outermost first, below the fixed part
    for folder in parents:
        if folder not in cache:
            cache[folder] = _is_ignored(folder.name) or _is_graft_output(folder)
        if cache[folder]:
            return True
    return False


def _walk(root: Path) -> Iterable[Path]:
    """Image files under `root`, sorted, skipping hidden/junk entries and graft output folders;
    folder links are followed once each (never in a loop)."""
    visited = {os.path.realpath(root)}
    for folder, folders, files in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(folders):
            child = os.path.join(folder, name)
            real = os.path.realpath(child)
            if _is_ignored(name) or real in visited or _is_graft_output(Path(child)):
                continue
            visited.add(real)
            kept.append(name)
        folders[:] = kept
        for name in sorted(files):
            if not _is_ignored(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(folder) / name
