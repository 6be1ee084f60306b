"""Image -> network input, shared by inference, evaluation and the eval transform.

Two ways of fitting an image of size H x W into the square S x S network input:

* square stretch (the original YOLACT): resize to S x S, aspect ratio NOT preserved;
* letterbox (``preserve_aspect_ratio=True``): scale by ``S / max(H, W)`` to
  ``(round(H*s), round(W*s))``, place the result at the TOP-LEFT corner and pad the right and
  bottom with the mean colour (zeros after normalisation).

:class:`InputGeometry` records where the image lies inside the network input so that
network outputs (relative boxes, prototype-resolution masks) can be mapped back to the
original image.

Pixel statistics (``pixel_mean``, ``pixel_std``) are given in RGB order on 0-255 values,
as in the config; images are BGR uint8 (OpenCV convention) and are converted to RGB here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def letterbox_size(height: int, width: int, input_size: int) -> Tuple[int, int]:
    """Content size ``(h, w)`` of an H x W image letterboxed into ``input_size``.

    The longer side becomes exactly ``input_size``; the shorter one is rounded half up and
    is at least 1.
    """
    scale = input_size / max(height, width)
    content_h = min(input_size, max(1, _round_half_up(height * scale)))
    content_w = min(input_size, max(1, _round_half_up(width * scale)))
    return content_h, content_w


@dataclass(frozen=True)
class InputGeometry:
    """Where an ``orig_h`` x ``orig_w`` image lies in the ``input_size``-square network input.

    The image occupies rows ``[0, content_h)`` and columns ``[0, content_w)`` (top-left
    anchored); the rest is padding.  A square stretch has ``content_h == content_w ==
    input_size``.  Pixel coordinates are continuous (a pixel ``i`` spans ``[i, i+1)``), so
    image x maps to network x as ``x * content_w / orig_w``.
    """

    orig_h: int
    orig_w: int
    input_size: int
    content_h: int
    content_w: int

    @staticmethod
    def for_image(height: int, width: int, input_size: int,
                  preserve_aspect_ratio: bool = False) -> "InputGeometry":
        if preserve_aspect_ratio:
            ch, cw = letterbox_size(height, width, input_size)
        else:
            ch, cw = input_size, input_size
        return InputGeometry(int(height), int(width), int(input_size), int(ch), int(cw))

    @property
    def scale_x(self) -> float:
        """Network pixels per image pixel, horizontally."""
        return self.content_w / self.orig_w

    @property
    def scale_y(self) -> float:
        """Network pixels per image pixel, vertically."""
        return self.content_h / self.orig_h

    @property
    def is_stretch(self) -> bool:
        return self.content_h == self.input_size and self.content_w == self.input_size

    def boxes_to_image(self, boxes_rel_xyxy: torch.Tensor) -> torch.Tensor:
        """Relative network boxes [N, 4] (x1, y1, x2, y2 in [0, 1] of the S x S input) to
        image pixel coordinates, clamped to the image."""
        boxes = boxes_rel_xyxy.to(torch.float32) if not boxes_rel_xyxy.is_floating_point() \
            else boxes_rel_xyxy
        s = float(self.input_size)
        fx = s / self.content_w * self.orig_w
        fy = s / self.content_h * self.orig_h
        factors = boxes.new_tensor([fx, fy, fx, fy])
        out = boxes * factors
        out[..., 0::2] = out[..., 0::2].clamp(0.0, float(self.orig_w))
        out[..., 1::2] = out[..., 1::2].clamp(0.0, float(self.orig_h))
        return out

    def boxes_to_input(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Image pixel boxes [N, 4] to relative network coordinates (inverse of
        :meth:`boxes_to_image` for boxes inside the image)."""
        boxes = boxes_xyxy.to(torch.float32) if not boxes_xyxy.is_floating_point() \
            else boxes_xyxy
        s = float(self.input_size)
        fx = self.content_w / (self.orig_w * s)
        fy = self.content_h / (self.orig_h * s)
        return boxes * boxes.new_tensor([fx, fy, fx, fy])

    def proto_crop(self, h_p: int, w_p: int) -> Tuple[int, int]:
        """How many rows and columns of an ``h_p`` x ``w_p`` prototype map cover the image
        content (rounded up, at least 1): crop ``masks[..., :rows, :cols]`` before resizing
        prototype-resolution masks back to ``(orig_h, orig_w)``."""
        rows = min(h_p, max(1, math.ceil(self.content_h * h_p / self.input_size - 1e-6)))
        cols = min(w_p, max(1, math.ceil(self.content_w * w_p / self.input_size - 1e-6)))
        return rows, cols


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
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise DataError("the image contains NaN or infinite pixel values")


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
