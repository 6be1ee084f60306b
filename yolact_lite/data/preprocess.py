"""Image -> network input, shared by inference, evaluation and the eval transform.

Two ways of fitting an image of size H x W into the square S x S network input:

* square stretch (the original YOLACT): resize to S x S, aspect ratio NOT preserved;
* letterbox (``preserve_aspect_ratio=True``): scale by ``S / max(H, W)`` to
  ``(round(H*s), round(W*s))``, place the result at the TOP-LEFT corner and pad the right and
  bottom with the mean colour (zeros after normalisation).

:class:`~yolact_lite.structures.InputGeometry` records where the image lies inside the network input so that
network outputs (relative boxes, prototype-resolution masks) can be mapped back to the
original image.

Pixel statistics (``pixel_mean``, ``pixel_std``) are given in RGB order on 0-255 values,
as in the config; images are BGR uint8 (OpenCV convention) and are converted to RGB here.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..structures import InputGeometry


def _stats(values: Sequence[float], name: str) -> Tuple[float, float, float]:
    vals = [float(v) for v in values]
    if len(vals) != 3:
        raise ValueError(f"{name} must have 3 values (RGB), got {len(vals)}")
    return vals[0], vals[1], vals[2]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise DataError(f"expected a numpy image array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"expected a BGR image of shape [H, W, 3], got {tuple(image.shape)}")
    if image.dtype != np.uint8 and image.dtype.kind != "f":
        raise DataError(f"expected uint8 (or float 0-255) pixels, got dtype {image.dtype}; "
                        "read files with yolact_lite.data.read_image, which converts 16-bit images")
    if image.dtype.kind == "f":
        low, high = float(image.min()), float(image.max())  # NaN and inf show in either
        if not (math.isfinite(low) and math.isfinite(high)):
            raise DataError("the image contains NaN or infinite pixel values")
        if low < -0.5 or high > 255.5:
            raise DataError(f"float pixels must be 0-255 like uint8 ones; got values from {low:.4g} to {high:.4g}")
        if 0.0 < high <= 1.0:  # 0-1 scaled pixels read as 0-255 would be a near-black image
            raise DataError(f"float pixels must be 0-255 like uint8 ones, these look scaled to 0-1 (max {high:.4g}): "
                            "multiply by 255")


def preprocess_image(image_bgr: np.ndarray, input_size: int, pixel_mean: Sequence[float],
                     pixel_std: Sequence[float], preserve_aspect_ratio: bool = False,
                     device: Optional[Union[str, torch.device]] = None
                     ) -> Tuple[torch.Tensor, InputGeometry]:
    """One BGR image ([H, W, 3], uint8 or float 0-255) to a normalised RGB float32 tensor
    [3, S, S] and its :class:`InputGeometry`.

    Torch ops throughout (like the original FastBaseTransform): bilinear
    ``F.interpolate`` with ``align_corners=False`` and no antialiasing, ``(x - mean) / std``,
    BGR -> RGB.  With ``device`` set the uint8 image is moved there before any arithmetic.
    """
    _check_image(image_bgr)
    h, w = int(image_bgr.shape[0]), int(image_bgr.shape[1])
    geometry = InputGeometry.for_image(h, w, input_size, preserve_aspect_ratio)
    mean = torch.tensor(_stats(pixel_mean, "pixel_mean"), dtype=torch.float32)
    std = torch.tensor(_stats(pixel_std, "pixel_std"), dtype=torch.float32)

    x = torch.from_numpy(np.ascontiguousarray(image_bgr))
    if device is not None:
        x = x.to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # [1, 3, H, W] BGR
    size = (geometry.content_h, geometry.content_w)
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    x = x[0].flip(0)  # BGR -> RGB
    mean = mean.to(x.device).view(3, 1, 1)
    std = std.to(x.device).view(3, 1, 1)
    x = (x - mean) / std
    pad_w = input_size - geometry.content_w
    pad_h = input_size - geometry.content_h
    if pad_w or pad_h:
        x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)  # zeros == the mean colour
    return x.contiguous(), geometry


def preprocess_batch(images: Sequence[np.ndarray], input_size: int, pixel_mean: Sequence[float],
                     pixel_std: Sequence[float], preserve_aspect_ratio: bool = False,
                     device: Optional[Union[str, torch.device]] = None
                     ) -> Tuple[torch.Tensor, List[InputGeometry]]:
    """Several BGR images of any sizes to a batch [B, 3, S, S] and one geometry per image."""
    if len(images) == 0:
        raise DataError("preprocess_batch: no images given")
    tensors, geometries = [], []
    for image in images:
        t, g = preprocess_image(image, input_size, pixel_mean, pixel_std,
                                preserve_aspect_ratio, device)
        tensors.append(t)
        geometries.append(g)
    return torch.stack(tensors, 0), geometries
