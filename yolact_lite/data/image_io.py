"""Reading images from disk into one canonical layout: uint8, [H, W, 3], BGR.

BGR is OpenCV's native channel order and is used everywhere in the data pipeline; the
network-side normalisation (:mod:`yolact_lite.data.preprocess`,
:class:`yolact_lite.data.transforms.ToTrainingTensors`) converts to RGB.

Normalisation rules applied by :func:`read_image`:

* grayscale (2-D or one channel) is replicated into three channels;
* two-channel images (gray + alpha) keep the gray channel only;
* four-channel images (BGRA) simply DROP the alpha channel: colour values are kept as
  stored, nothing is composited (a fully transparent pixel shows its stored colour);
* 16-bit images are scaled to 8 bits by dividing by 257 with rounding (65535 -> 255);
* EXIF orientation is NOT applied: pixels are returned as stored, which is the frame COCO
  annotations are expressed in.

Every failure (missing file, empty file, undecodable or truncated data, unsupported pixel
type) raises :class:`yolact_lite.errors.DataError` with a one-line message naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from ..errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def _looks_truncated_jpeg(data: bytes) -> bool:
    """True when ``data`` is a JPEG stream whose main image has no end-of-image marker.

    The last start-of-scan marker belongs to the main image (an EXIF thumbnail, with its
    own SOS/EOI pair, sits earlier in an APP1 segment), and 0xFF 0xD9 cannot occur inside
    entropy-coded data, so a complete file has an EOI after its last SOS.  Some decoders
    return a partially grey image for such files instead of failing.
    """
    if not data.startswith(_JPEG_SOI):
        return False
    last_sos = data.rfind(_JPEG_SOS)
    if last_sos < 0:
        return True
    return data.rfind(_JPEG_EOI) < last_sos


def _to_bgr_uint8(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype} (expected 8- or 16-bit)")

    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise DataError(f"{path}: unsupported image layout with shape {tuple(image.shape)}")
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 2:  # gray + alpha
        image = np.repeat(image[:, :, :1], 3, axis=2)
    elif channels == 4:  # BGRA: drop alpha, no compositing
        image = image[:, :, :3]
    elif channels != 3:
        raise DataError(f"{path}: unsupported number of channels ({channels})")
    return np.ascontiguousarray(image)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) held in memory; same rules as :func:`read_image`."""
    if len(data) == 0:
        raise DataError(f"{name}: empty file (0 bytes)")
    if _looks_truncated_jpeg(data):
        raise DataError(f"{name}: truncated or corrupt JPEG (no end-of-image marker)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # refused before any pixel is allocated
            raise DataError(f"{name}: image too large to decode (more than OpenCV's limit of 2^30 "
                            "pixels, CV_IO_MAX_IMAGE_PIXELS)") from None
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"  # pragma: no cover
        raise DataError(f"{name}: cannot decode image ({first})") from None  # pragma: no cover
    if image is None:
        raise DataError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    if image.size == 0:
        raise DataError(f"{name}: image has zero size")
    return _to_bgr_uint8(image, name)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as a uint8 BGR array of shape [H, W, 3].

    Raises :class:`DataError` (one line, naming ``path``) for a missing file, a directory,
    a zero-byte file, data that is not a decodable image, a truncated JPEG, or a pixel type
    other than 8/16-bit integers.
    """
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise DataError(f"{name}: no such file")
    if p.is_dir():
        raise DataError(f"{name}: is a directory, not an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, name)
