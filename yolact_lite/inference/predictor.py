"""Image(s) in, :class:`~yolact_lite.structures.Detections` out.

``Predictor`` bundles a model (optionally with BatchNorm folded and ``channels_last``
weights), its config, class names and the runtime chosen for it, and runs the stage
sequence of :mod:`yolact_lite.inference.stages` (preprocess -> network -> detect -> masks)
on them. ``timings`` holds the last call's milliseconds per stage. With the original's
defaults (square stretch, Fast NMS, crop, threshold 0.5, detection_threshold 0) the result is
what the original's Detect + postprocess produce, except that boxes keep float pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..checkpoint.files import carried_config, load_weights, read_state_file
from ..config import Config, load_config, with_overrides
from ..errors import CheckpointError, ConfigError, DataError
from ..hardware import resolve_device
from ..model import build_model
from ..model.fuse import fuse_for_inference
from ..structures import Detections, InputGeometry
from .export import ExportError
from .mask_assembly import check_display_filters, display_filter
from .runtime_choice import build_network, resolve_precision
from .runtimes import Network, TorchNetwork
from .stages import STAGES, InferenceStages

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
            ``backend`` given it may pick OpenVINO; the reason is kept in
            ``precision_reason``). Detection and masks stay
            float32 whatever the network runs in.
        onnx_path: an ONNX file from :func:`yolact_lite.inference.export.export_onnx` (plain graph,
            same config) for an ONNX backend; the weights then only supply class names and YOLACT++'s mask-IoU head.
        compile: ``torch.compile`` the network stage (torch backend; the first call compiles).
        fastest_runtime: with no ``backend``, run an explicit float ``precision`` on the
            fastest runtime that computes it (OpenVINO on the CPU when installed): what the CLI
            does. Default False: the torch model itself, as evaluation and training use.
        network: a ready :class:`yolact_lite.inference.runtimes.Network` (e.g. a
            :class:`~yolact_lite.inference.runtimes.TorchScriptNetwork`) instead of ``backend``.

    Attributes: ``config``, ``model`` (the fp32 torch model: mask-IoU head, export),
    ``network_impl`` (the :class:`~yolact_lite.inference.runtimes.Network`), ``backend``, ``precision``
    (and ``precision_reason``), ``class_names``, ``category_ids`` (for COCO json output),
    ``timings`` (last call, ms per stage: preprocess, network, detect, masks), ``stages``
    (the :class:`~yolact_lite.inference.stages.InferenceStages` every entry point runs).
    """

    def __init__(self, config: Union[Config, str, Path], weights=None, device: str = "cpu",
                 fuse: bool = True, backend: Optional[str] = None, precision: Optional[str] = None,
                 onnx_path: Optional[Union[str, Path]] = None, compile: bool = False,
                 network: Optional[Network] = None, fastest_runtime: bool = False):
        self.config = config if isinstance(config, Config) else load_config(config)
        self.device = resolve_device(str(device))
        chosen, self.precision, self.precision_reason = resolve_precision(
            precision, self.device, backend, compile=compile, onnx_path=onnx_path, fastest_runtime=fastest_runtime)
        self.model, extra = _load_model(self.config, weights, fuse, self.device)
        self.fused = bool(fuse)
        self.weights_loaded = weights is not None
        self._onnx_folder = None  # temporary export, removed with the predictor
        if network is None:
            network = self._build_network(chosen, onnx_path, compile, precision is not None,
                                          automatic=backend is None and chosen != "torch")
        if network.precision != self.precision:  # an int8 file adopted as such
            self.precision_reason = f"{network.precision} (the ONNX file is quantised)"
        self.precision = network.precision
        self.network_impl: Network = network
        self.backend = network.name if network.name != "torch.compile" else "torch"
        self.compiled = bool(compile)

        num_classes = self.config.model.num_classes
        self.class_names = _names_from(extra.get("class_names"), num_classes) or default_class_names(num_classes)
        self.category_ids = _ids_from(extra.get("category_ids"), num_classes) or default_category_ids(num_classes)
        self.stages = InferenceStages(self.config, network, self.device,
                                      getattr(self.model, "mask_iou_head", None), self.class_names)
        self.timings: Dict[str, float] = {s: 0.0 for s in STAGES}

    def _build_network(self, backend: str, onnx_path, compile: bool, precision_given: bool,
                       automatic: bool) -> Network:
        """The runtime; one this class chose itself (not the caller) falls back to torch when
        it cannot take the model (e.g. a graph OpenVINO cannot convert)."""
        try:
            network, self._onnx_folder = build_network(
                self.model, self.config, backend, self.precision, self.device, onnx_path=onnx_path,
                compile=compile, channels_last=self.fused, precision_given=precision_given,
            )
        except ExportError as exc:
            if not automatic or self.precision not in ("fp32", "bf16"):
                raise
            self.precision_reason = f"{self.precision} on torch ({exc})"
            network = TorchNetwork(self.model, self.precision, channels_last=self.fused)
        return network

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], overrides: Sequence[str] = (), **kwargs) -> "Predictor":
        """A Predictor for one of our checkpoints, with the config it carries (plus ``overrides``,
        ``section.key=value`` strings); ``kwargs`` as for the constructor. An original YOLACT
        ``.pth`` carries no config: pass one to the constructor instead."""
        data = read_state_file(path)
        config = carried_config(data)
        if config is None:
            raise ConfigError(f"{path}: carries no config (an original YOLACT .pth?): use Predictor(config, weights)")
        return cls(with_overrides(config, list(overrides)), weights=data, **kwargs)

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[InputGeometry]]:
        """BGR uint8 images (any sizes) -> network batch [B, 3, S, S] and geometries."""
        return self.stages.preprocess(images)

    def network(self, batch: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The network-output contract of a batch (:mod:`yolact_lite.model.outputs`)."""
        return self.stages.network(batch)

    def detect(self, outputs: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """Detect (NMS) for every image of a batch."""
        return self.stages.detect(outputs)

    def masks(self, det: Dict[str, torch.Tensor], prototypes: torch.Tensor, geometry: InputGeometry,
              display_threshold: Optional[float] = None, top_k: Optional[int] = None) -> Detections:
        """Masks and pixel boxes of one image's detections (result on the CPU)."""
        return self.stages.masks(det, prototypes, geometry, display_threshold, top_k)

    def clock(self) -> float:
        """``time.perf_counter()`` once the device has finished its queued work."""
        return self.stages.clock()

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

            check_display_filters(display_threshold, top_k)
            dets = predict_tiled(self, image_bgr, tile=tile, overlap=tile_overlap, roi=roi)
            keep = display_filter(dets.mask_scores, top_k, display_threshold)
            return dets if keep is None else dets.select(keep)
        return self.predict_batch([image_bgr], display_threshold, top_k)[0]

    def predict_batch(self, images: Sequence[np.ndarray], display_threshold: Optional[float] = None,
                      top_k: Optional[int] = None) -> List[Detections]:
        """:meth:`predict` for several images in one network batch."""
        check_display_filters(display_threshold, top_k)
        if images is None or isinstance(images, np.ndarray) and images.ndim != 4:
            raise DataError("predict_batch takes a list of BGR images (or one [N, H, W, 3] array)")
        images = list(images)
        if not images:
            return []
        results, self.timings = self.stages.run(images, display_threshold, top_k)
        return results

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.predict(image_bgr)


def _load_model(config: Config, weights, fuse: bool, device: torch.device) -> Tuple[torch.nn.Module, Dict]:
    """The eval model on ``device`` (BatchNorm folded and ``channels_last`` with ``fuse``) and
    the checkpoint's other entries (class names, category ids)."""
    model = build_model(config, pretrained=False)
    extra: Dict = {}
    if weights is None:
        warnings.warn(RANDOM_WEIGHTS_WARNING, UserWarning, stacklevel=3)
    else:
        extra = dict(weights) if isinstance(weights, dict) else read_state_file(weights)
        load_weights(model, extra)
    model.eval()
    if fuse:
        model = fuse_for_inference(model, channels_last=True)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    return model.to(device), extra


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
