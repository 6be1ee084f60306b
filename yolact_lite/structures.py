"""The result type every inference path returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor


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
        (:func:`yolact_lite.results.masks_to_polygons`)."""
        from .results import masks_to_polygons

        return masks_to_polygons(self.masks, tolerance_px=tolerance_px, holes=holes)

    def to_rle(self) -> list:
        """COCO compressed RLE per instance (:func:`yolact_lite.results.masks_to_rle`)."""
        from .results import masks_to_rle

        return masks_to_rle(self.masks)

    def to_coco(self, image_id: int, category_ids) -> list:
        """COCO result dicts (:func:`yolact_lite.results.detections_to_coco`)."""
        from .results import detections_to_coco

        return detections_to_coco(self, image_id, category_ids)

    def to(self, device) -> "Detections":
        return Detections(
            boxes=self.boxes.to(device), scores=self.scores.to(device), classes=self.classes.to(device),
            masks=self.masks.to(device), mask_scores=self.mask_scores.to(device), class_names=self.class_names,
            proto_masks=None if self.proto_masks is None else self.proto_masks.to(device),
        )
