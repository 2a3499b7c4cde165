"""Uploaded bytes -> RGB pictures, and each way they can fail -> an HTTP status with a message.

Decoding is graft's own (`graft.data.inputs.to_rgb_image`): the same EXIF rotation, colour modes
and decompression-bomb limit as `graft predict`. This module only sorts the failures:

- 400: no file at all, or an empty one;
- 413: more bytes than `--max-mb`, or more images than `--max-images`;
- 415: bytes Pillow does not recognise as any image format;
- 422: an image format Pillow knows, but the data is truncated or corrupt, or it declares more
  pixels than Pillow's limit (a decompression bomb).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..data.images import _DECODE_ERRORS, _OPEN_LOCK, _too_large_reason
from ..data.inputs import to_rgb_image
from ..errors import BadImageError, GraftError


class RequestError(GraftError):
    """A request the server refuses: `status` (4xx) and a message that names the file and the fix."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def decode(data: bytes, name: str, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """`data` as an upright 8-bit RGB image, or a RequestError (400, 415 or 422) naming `name`;
    a JPEG decoded at a reduced scale still covering `draft_size` (graft.data.images.load_image)."""
    if not data:
        raise RequestError(400, f"{name}: the file is empty (0 bytes); choose an image file.")
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data)).close()  # the header only: is this an image format at all?
    except UnidentifiedImageError:
        raise RequestError(415, f"{name}: not an image Pillow can read ({len(data):,} bytes); send a JPEG, PNG, "
                                "WebP, GIF, BMP or TIFF file.") from None
    except Image.DecompressionBombError:
        raise RequestError(422, f"{name}: {_too_large_reason(None)}.") from None
    except _DECODE_ERRORS as error:
        raise RequestError(422, f"{name}: cannot read the image header ({error}); the file may be corrupt.") from None
    try:
        return to_rgb_image(data, name, draft_size=draft_size)
    except BadImageError as error:
        raise RequestError(422, f"{name}: {error.reason}; re-export the image or send another one.") from None
