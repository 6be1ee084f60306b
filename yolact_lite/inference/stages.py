"""The stage sequence of inference, written once: preprocess -> network -> detect -> masks.

:class:`InferenceStages` is what single images and batches (:meth:`InferenceStages.run`,
through :class:`~yolact_lite.inference.predictor.Predictor`), tiling (through the Predictor)
and the video pipeline (:mod:`yolact_lite.inference.video`, which calls the same four stages
from separate threads) all run:

1. ``preprocess``: BGR uint8 images -> normalised RGB batch [B, 3, S, S] (square stretch or
   letterbox) and one :class:`~yolact_lite.structures.InputGeometry` per image;
2. ``network``: the runtime (:mod:`yolact_lite.inference.runtimes`) -> the network-output
   contract (:mod:`yolact_lite.model.outputs`);
3. ``detect``: candidate filter + NMS per image (:mod:`yolact_lite.inference.detection`);
4. ``masks``: mask assembly, crop, YOLACT++ re-scoring, display filters, resize to the
   original image, threshold (:mod:`yolact_lite.inference.mask_assembly`); result on the CPU.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..config import Config
from ..data.preprocess import preprocess_batch
from ..errors import DataError
from ..model.outputs import outputs_for_image
from ..structures import Detections, InputGeometry
from .detection import detect
from .mask_assembly import PendingMasks, assemble_detections, assemble_low_res, finish_masks
from .runtimes import Network

__all__ = ["InferenceStages", "STAGES"]

STAGES = ("preprocess", "network", "detect", "masks")


class InferenceStages:
    """The four stages for one model, config and runtime.

    Args:
        config: the model's config (``model`` for preprocessing, ``inference`` for detect
            and masks).
        network: the runtime of the network stage.
        device: where batches and outputs live.
        mask_iou_head: YOLACT++'s re-scoring head (None: no re-scoring).
        class_names: stored in every result.
    """

    def __init__(self, config: Config, network: Network, device: torch.device,
                 mask_iou_head: Optional[nn.Module] = None, class_names: Sequence[str] = ()):
        self.config = config
        self.runtime = network
        self.device = device
        self.mask_iou_head = mask_iou_head
        self.class_names = list(class_names)

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[Tensor, List[InputGeometry]]:
        """BGR uint8 images (any sizes) -> network batch [B, 3, S, S] and geometries."""
        for image in images:
            if not isinstance(image, np.ndarray):
                raise DataError(f"expected a numpy BGR image, got {type(image).__name__}")
            if image.size == 0:
                raise DataError(f"empty image (shape {tuple(image.shape)})")
        m = self.config.model
        batch, geometries = preprocess_batch(
            images, m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio, device=self.device
        )
        if self.runtime.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, geometries

    def network(self, batch: Tensor) -> Dict[str, Tensor]:
        """The network-output contract of a batch, whatever the runtime and precision:
        float32 ``boxes`` [B, P, 4], ``scores`` [B, P, C], ``coefficients`` [B, P, k],
        ``prototypes`` [B, Hp, Wp, k]."""
        return self.runtime(batch)

    def detect(self, outputs: Dict[str, Tensor]) -> List[Dict[str, Tensor]]:
        """Detect (NMS) for every image of a batch."""
        with torch.inference_mode():
            n = outputs["scores"].shape[0]
            return [detect(outputs_for_image(outputs, i), self.config.inference) for i in range(n)]

    def masks(self, det: Dict[str, Tensor], prototypes: Tensor, geometry: InputGeometry,
              display_threshold: Optional[float] = None, top_k: Optional[int] = None) -> Detections:
        """Masks and pixel boxes of one image's detections (result on the CPU);
        ``prototypes`` [Hp, Wp, k] of that image."""
        with torch.inference_mode():
            out = assemble_detections(
                det, prototypes, geometry, self.config.inference, mask_iou_head=self.mask_iou_head,
                class_names=self.class_names, top_k=top_k, display_threshold=display_threshold,
            )
        return out.to("cpu") if out.masks.device.type != "cpu" else out

    def low_res(self, det: Dict[str, Tensor], prototypes: Tensor, geometry: InputGeometry,
                threshold: Optional[float] = None) -> Tuple[Detections, PendingMasks]:
        """The masks stage without the full-resolution masks (a tracker matches on
        ``proto_masks``): detections above ``threshold``, each with an all-False placeholder
        mask; :meth:`finish` makes the real masks of the rows that need them."""
        with torch.inference_mode():
            return assemble_low_res(det, prototypes, geometry, self.config.inference,
                                    mask_iou_head=self.mask_iou_head, class_names=self.class_names,
                                    display_threshold=threshold)

    def finish(self, low: Detections, pending: PendingMasks, keep: Optional[Tensor] = None) -> Detections:
        """Full-resolution masks for the ``keep`` rows of :meth:`low_res`'s detections
        (index tensor; None: all), result on the CPU."""
        with torch.inference_mode():
            out = finish_masks(low, pending, keep)
        return out.to("cpu") if out.masks.device.type != "cpu" else out

    def clock(self) -> float:
        """``time.perf_counter()`` once the device has finished its queued work (so a stage's
        time is its own, not the next stage's)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run(self, images: Sequence[np.ndarray], display_threshold: Optional[float] = None,
            top_k: Optional[int] = None) -> Tuple[List[Detections], Dict[str, float]]:
        """All four stages on a batch of images, in a row: ``(detections per image,
        milliseconds per stage)``."""
        t0 = time.perf_counter()
        batch, geometries = self.preprocess(images)
        t1 = self.clock()
        outputs = self.network(batch)
        t2 = self.clock()
        dets = self.detect(outputs)
        t3 = self.clock()
        results = [
            self.masks(det, outputs["prototypes"][i], geometries[i], display_threshold, top_k)
            for i, det in enumerate(dets)
        ]
        t4 = self.clock()
        ms = [(b - a) * 1000.0 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))]
        return results, dict(zip(STAGES, ms))
