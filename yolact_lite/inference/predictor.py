"""Image(s) in, :class:`~yolact_lite.structures.Detections` out.

``Predictor`` bundles a model (optionally with BatchNorm folded and ``channels_last`` weights),
its config and class names, and runs the four stages of inference:

1. ``preprocess``: BGR uint8 -> normalised RGB batch (square stretch or letterbox);
2. ``network``: backbone, FPN, protonet, prediction head, box decoding and softmax, run by
   a backend (:mod:`yolact_lite.inference.runtimes`: torch eager/compiled in fp32/bf16/fp16,
   onnxruntime fp32/int8, OpenVINO) that returns the same named outputs;
3. ``detect``: candidate filter, NMS (compiled Fast NMS when built);
4. ``masks``: mask assembly for the kept detections, crop, YOLACT++ re-scoring, resize to
   the original image, threshold.

``timings`` holds the last call's milliseconds per stage. With the original's defaults
(square stretch, Fast NMS, crop, threshold 0.5, detection_threshold 0) the result is what the
original's Detect + postprocess produce, except that boxes keep float pixels.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..checkpoint import load_weights, read_state_file
from ..config import BACKENDS, Config, load_config
from ..data.preprocess import preprocess_batch
from ..errors import CheckpointError, ConfigError, DataError
from ..hardware import resolve_device
from ..model import build_model
from ..model.fuse import fuse_for_inference
from ..structures import Detections, InputGeometry
from .mask_assembly import _display_filter, assemble_detections, detect, outputs_for_image
from .runtimes import Network, build_network, resolve_precision

__all__ = ["Predictor", "COCO_CLASSES", "COCO_CATEGORY_IDS", "default_class_names", "RANDOM_WEIGHTS_WARNING"]

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# COCO 2017 category ids of the 80 classes above (the ids skip 12, 26, 29, 30, 45, 66, 68, 69,
# 71, 83).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))

RANDOM_WEIGHTS_WARNING = (
    "NO WEIGHTS GIVEN: the model is randomly initialised and its detections are MEANINGLESS "
    "(use --weights / weights= with a trained checkpoint)"
)

STAGES = ("preprocess", "network", "detect", "masks")


def default_class_names(num_classes: int) -> List[str]:
    """COCO's names for 80 classes, else ``class_0 .. class_{C-1}``."""
    if num_classes == len(COCO_CLASSES):
        return list(COCO_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def default_category_ids(num_classes: int) -> List[int]:
    """COCO's category ids for 80 classes, else ``label + 1``."""
    if num_classes == len(COCO_CATEGORY_IDS):
        return list(COCO_CATEGORY_IDS)
    return [i + 1 for i in range(num_classes)]


class Predictor:
    """Run a YOLACT model on BGR images.

    Args:
        config: a :class:`Config`, a config file path or a bundled config name.
        weights: our checkpoint or an original YOLACT state_dict (path or loaded dict);
            ``None`` keeps random weights (with a loud warning: results are meaningless).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        fuse: fold BatchNorm into convs and use ``channels_last`` (same results, faster).
        backend: ``"torch"`` (default), ``"onnxruntime"`` or ``"openvino"``: which runtime runs the
            network stage (:mod:`yolact_lite.inference.runtimes`; every one returns the same named
            outputs, detect / masks stay in torch). ONNX backends run ``onnx_path``, else the
            model is exported to a temporary file.
        precision: ``"fp32"`` (default; an int8 ``onnx_path`` implies ``"int8"``),
            ``"bf16"`` (CPU with AMX/AVX512-BF16, or CUDA), ``"fp16"`` (CUDA), ``"int8"`` (a
            calibrated ONNX model from ``yolact-lite export --int8``, onnxruntime/openvino) or
            ``"auto"`` (the fastest float path this machine has, never int8: with no
            ``backend`` given it may pick OpenVINO; the choice is printed to stderr and kept
            in ``precision_reason``). Detection and masks stay
            float32 whatever the network runs in.
        onnx_path: an ONNX file from :func:`yolact_lite.inference.export.export_onnx` (plain graph,
            same config) for an ONNX backend; the weights then only supply class names and YOLACT++'s mask-IoU head.
        compile: ``torch.compile`` the network stage (torch backend; the first call compiles).
        network: a ready :class:`yolact_lite.inference.runtimes.Network` (e.g. a
            :class:`~yolact_lite.inference.runtimes.TorchScriptNetwork`) instead of ``backend``.

    Attributes: ``config``, ``model`` (the fp32 torch model: mask-IoU head, export),
    ``network_impl`` (the :class:`~yolact_lite.inference.runtimes.Network`), ``backend``, ``precision``
    (and ``precision_reason``), ``class_names``, ``category_ids`` (for COCO json output),
    ``timings`` (last call, ms per stage: preprocess, network, detect, masks).
    """

    def __init__(self, config: Union[Config, str, Path], weights=None, device: str = "cpu",
                 fuse: bool = True, backend: Optional[str] = None, precision: Optional[str] = None,
                 onnx_path: Optional[Union[str, Path]] = None, compile: bool = False,
                 network: Optional[Network] = None):
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
        if backend not in (None, "torch") and compile:
            raise ConfigError(f"the {backend} backend runs an exported graph: compile applies to backend torch")
        if onnx_path is not None and backend in (None, "torch"):
            raise ConfigError("onnx_path needs backend='onnxruntime' (or 'openvino')")
        self.config = config if isinstance(config, Config) else load_config(config)
        self.device = resolve_device(str(device))
        if compile and precision == "auto":
            backend = backend or "torch"
        backend, self.precision, self.precision_reason = resolve_precision(precision or "fp32", self.device, backend)
        if precision == "auto":
            print(f"precision {self.precision} ({self.precision_reason})", file=sys.stderr, flush=True)
        num_classes = self.config.model.num_classes

        model = build_model(self.config, pretrained=False)
        extra: Dict = {}
        if weights is None:
            warnings.warn(RANDOM_WEIGHTS_WARNING, UserWarning, stacklevel=2)
        else:
            data = dict(weights) if isinstance(weights, dict) else read_state_file(weights)
            load_weights(model, data)
            extra = data
        model.eval()
        if fuse:
            model = fuse_for_inference(model, channels_last=True)
        else:
            for p in model.parameters():
                p.requires_grad_(False)
        self.model = model.to(self.device)
        self.fused = bool(fuse)
        self.weights_loaded = weights is not None
        self._onnx_folder = None  # temporary export, removed with the predictor
        if network is None:
            network, self._onnx_folder = build_network(
                self.model, self.config, backend, self.precision, self.device, onnx_path=onnx_path,
                compile=compile, channels_last=self.fused, precision_given=precision is not None,
            )
        if network.precision != self.precision:  # an int8 file adopted as such
            self.precision_reason = f"{network.precision} (the ONNX file is quantised)"
        self.precision = network.precision
        self.network_impl: Network = network
        self.backend = network.name if network.name != "torch.compile" else "torch"
        self.compiled = bool(compile)

        self.class_names = _names_from(extra.get("class_names"), num_classes) or default_class_names(num_classes)
        self.category_ids = _ids_from(extra.get("category_ids"), num_classes) or default_category_ids(num_classes)
        self.timings: Dict[str, float] = {s: 0.0 for s in STAGES}

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[InputGeometry]]:
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
        if self.network_impl.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, geometries

    def network(self, batch: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The network-output contract of a batch, whatever the backend and precision:
        float32 ``boxes`` [B, P, 4], ``scores`` [B, P, C], ``coefficients`` [B, P, k],
        ``prototypes`` [B, Hp, Wp, k] (see :mod:`yolact_lite.inference.runtimes`)."""
        return self.network_impl(batch)

    def detect(self, outputs: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """Detect (NMS) for every image of a batch."""
        with torch.inference_mode():
            n = outputs["scores"].shape[0]
            return [detect(outputs_for_image(outputs, i), self.config.inference) for i in range(n)]

    def masks(self, det: Dict[str, torch.Tensor], prototypes: torch.Tensor, geometry: InputGeometry,
              display_threshold: Optional[float] = None, top_k: Optional[int] = None) -> Detections:
        """Masks and pixel boxes of one image's detections (result on the CPU)."""
        with torch.inference_mode():
            out = assemble_detections(
                det, prototypes, geometry, self.config.inference,
                mask_iou_head=getattr(self.model, "mask_iou_head", None),
                class_names=self.class_names, top_k=top_k, display_threshold=display_threshold,
            )
        return out.to("cpu") if out.masks.device.type != "cpu" else out

    # ------------------------------------------------------------------ public
    def predict(self, image_bgr: np.ndarray, display_threshold: Optional[float] = None,
                top_k: Optional[int] = None, tile: Optional[int] = None, tile_overlap: float = 0.2,
                roi: Optional[Sequence[float]] = None) -> Detections:
        """Detections of one BGR uint8 image [H, W, 3], sorted by score.

        ``display_threshold`` / ``top_k`` are optional display filters on ``mask_scores``
        (YOLACT++: score x predicted mask IoU) applied before the full-resolution mask work;
        ``config.inference.detection_threshold`` still applies first, on box scores.
        ``tile`` (pixels) / ``roi`` (x1, y1, x2, y2): tiled inference for large frames and/or
        an area of interest (:func:`yolact_lite.inference.tiling.predict_tiled`; results in frame
        coordinates; the display filters then apply to the merged result).
        """
        if tile is not None or roi is not None:
            from .tiling import predict_tiled

            dets = predict_tiled(self, image_bgr, tile=tile, overlap=tile_overlap, roi=roi)
            keep = _display_filter(dets.mask_scores, top_k, display_threshold)
            return dets if keep is None else dets.select(keep)
        return self.predict_batch([image_bgr], display_threshold, top_k)[0]

    def predict_batch(self, images: Sequence[np.ndarray], display_threshold: Optional[float] = None,
                      top_k: Optional[int] = None) -> List[Detections]:
        """:meth:`predict` for several images in one network batch."""
        images = list(images)
        if not images:
            return []
        times = {}
        t0 = time.perf_counter()
        batch, geometries = self.preprocess(images)
        t1 = self._tick()
        times["preprocess"] = t1 - t0
        outputs = self.network(batch)
        t2 = self._tick()
        times["network"] = t2 - t1
        dets = self.detect(outputs)
        t3 = self._tick()
        times["detect"] = t3 - t2
        results = [
            self.masks(det, outputs["prototypes"][i], geometries[i], display_threshold, top_k)
            for i, det in enumerate(dets)
        ]
        t4 = self._tick()
        times["masks"] = t4 - t3
        self.timings = {k: v * 1000.0 for k, v in times.items()}
        return results

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.predict(image_bgr)

    def _tick(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _names_from(value, num_classes: int) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise CheckpointError(f"checkpoint 'class_names' must be a list, got {type(value).__name__}")
    names = [str(v) for v in value]
    if len(names) != num_classes:
        raise CheckpointError(f"checkpoint lists {len(names)} class_names for a {num_classes}-class model")
    return names


def _ids_from(value, num_classes: int) -> Optional[List[int]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise CheckpointError("checkpoint 'category_ids' must be a list of integers")
    ids = [int(v) for v in value]
    if len(ids) != num_classes:
        raise CheckpointError(f"checkpoint lists {len(ids)} category_ids for a {num_classes}-class model")
    return ids
