"""The plain data types shared across layers: :class:`InputGeometry` (where an image lies in the
network input) and :class:`Detections` (the result type every inference path returns)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor


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


@dataclass
class Detections:
    """Instances found in one image, sorted by score (descending).

    - ``boxes`` [N, 4] float32: x1, y1, x2, y2 in pixels of the original image
    - ``scores`` [N] float32: class confidence (box score)
    - ``classes`` [N] int64: contiguous labels 0..C-1 (``class_names[c]`` names them)
    - ``masks`` [N, H, W] bool: full-resolution instance masks
    - ``mask_scores`` [N] float32: score used to rank masks; equals ``scores`` except for
      YOLACT++, where it is ``scores x predicted mask IoU``
    - ``proto_masks`` [N, Hp, Wp] float32 or None: the same masks at prototype resolution
      before upsampling: sigmoid probabilities after the box crop, covering the image only
      (a letterbox's padding rows/columns are cut, so Hp x Wp maps onto H x W by plain
      scaling). A view of work the Predictor does anyway (no copy); None where a result
      was not made from prototypes (e.g. tiled inference merges).
    """

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    masks: Tensor
    mask_scores: Optional[Tensor] = None
    class_names: List[str] = field(default_factory=list)
    proto_masks: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.mask_scores is None:
            self.mask_scores = self.scores

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(height: int, width: int, class_names: Optional[List[str]] = None,
              proto_size: Optional[Tuple[int, int]] = None) -> "Detections":
        """No detections; ``proto_size`` (Hp, Wp) gives an empty ``proto_masks`` of that size."""
        return Detections(
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            classes=torch.zeros(0, dtype=torch.int64),
            masks=torch.zeros(0, height, width, dtype=torch.bool),
            class_names=list(class_names or []),
            proto_masks=None if proto_size is None else torch.zeros(0, *proto_size),
        )

    def select(self, keep: Tensor) -> "Detections":
        """A subset (index or bool tensor), keeping the order given."""
        return Detections(
            boxes=self.boxes[keep], scores=self.scores[keep], classes=self.classes[keep],
            masks=self.masks[keep], mask_scores=self.mask_scores[keep], class_names=self.class_names,
            proto_masks=None if self.proto_masks is None else self.proto_masks[keep],
        )

    def to_polygons(self, tolerance_px: float = 1.0, holes: bool = True):
        """Per instance, its parts: each outer contour with its holes, in image pixels
        (:func:`yolact_lite.formats.masks_to_polygons`)."""
        from .formats import masks_to_polygons

        return masks_to_polygons(self.masks, tolerance_px=tolerance_px, holes=holes)

    def to_rle(self) -> list:
        """COCO compressed RLE per instance (:func:`yolact_lite.formats.masks_to_rle`)."""
        from .formats import masks_to_rle

        return masks_to_rle(self.masks)

    def to_coco(self, image_id: int, category_ids, masks: str = "rle") -> list:
        """COCO result dicts (:func:`yolact_lite.formats.detections_to_coco`; ``masks``:
        ``rle``, ``polygons`` or ``none``)."""
        from .formats import detections_to_coco

        return detections_to_coco(self, image_id, category_ids, masks=masks)

    def to(self, device) -> "Detections":
        return Detections(
            boxes=self.boxes.to(device), scores=self.scores.to(device), classes=self.classes.to(device),
            masks=self.masks.to(device), mask_scores=self.mask_scores.to(device), class_names=self.class_names,
            proto_masks=None if self.proto_masks is None else self.proto_masks.to(device),
        )
