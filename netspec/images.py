"""Images in Caffe's layout: (C, H, W) uint8 in BGR channel order (as OpenCV gives Caffe), or
one gray channel. Pillow decodes and encodes; nothing here loops over pixels."""
from __future__ import annotations

import io

import numpy as np

from .errors import DataError


def _to_chw(img, color: bool | None) -> np.ndarray:
    """A Pillow image as (C, H, W) uint8: BGR when colour, 1 channel when gray; color=None
    keeps what the file holds."""
    if color is None:
        color = img.mode not in ("L", "I;16", "I", "1")
    arr = np.asarray(img.convert("RGB" if color else "L"), dtype=np.uint8)
    return arr[:, :, ::-1].transpose(2, 0, 1).copy() if color else arr[None].copy()


def decode(data: bytes, color: bool | None = None, where: str = "image") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _to_chw(img, color)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{where}: cannot decode image ({e})") from None


def load(path: str, color: bool = True, height: int = 0, width: int = 0) -> np.ndarray:
    """Read an image file, resized (bilinear, as Caffe's cv::resize) when height and width
    are given."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            if height and width:
                img = img.convert("RGB" if color else "L").resize((width, height),
                                                                  Image.BILINEAR)
            return _to_chw(img, color)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def encode(chw: np.ndarray, fmt: str = "png") -> bytes:
    """(C, H, W) uint8 BGR or gray -> PNG / JPEG bytes."""
    from PIL import Image
    hwc = chw[::-1].transpose(1, 2, 0) if chw.shape[0] == 3 else chw[0]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc)).save(out, format="JPEG" if fmt.lower() in (
        "jpg", "jpeg") else fmt.upper())
    return out.getvalue()
