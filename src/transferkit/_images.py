"""Opening one image item (a path, a PIL image or a uint8 array) as RGB: no torch, so that an ONNX predict can use
it too."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError


def _rgb(im: Any) -> Any:
    """RGB of any PIL mode: 16-bit and 32-bit grayscale (``I;16``, ``I``, ``F``) scaled to 8 bits by the image's own
    range first (PIL's own conversion clips them, so a 16-bit photo becomes black and white)."""
    from PIL import Image

    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def load_image(item: Any) -> Any:
    """Open one image item (path, PIL image or uint8 array) as an RGB PIL image, or raise DataError. Images larger
    than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused before they are decoded."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        return _rgb(item)
    if isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8:
            raise DataError(f"Image arrays must be uint8 (0-255), got dtype {arr.dtype}.")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise DataError(f"Image arrays must be HxW or HxWx3, got shape {arr.shape}.")
        return Image.fromarray(arr).convert("RGB")
    path = Path(item)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # PIL warns above the limit; such an image is refused below anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if limit is not None and w * h > limit:
                raise Image.DecompressionBombError(f"{w}x{h} pixels")
            im.load()
            return _rgb(im)
    except FileNotFoundError:
        raise DataError(f"Image file {path} does not exist.") from None
    except Image.DecompressionBombError as e:
        raise DataError(
            f"Image {path} is too large to decode safely ({e}; the limit is {limit or 0:,} pixels): downscale it or "
            "remove it."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"Cannot read image {path}: it is not a readable image file ({type(e).__name__}: {e}). "
            "Remove or replace it."
        ) from None
