"""Deployment files: ONNX (fp32, int8) and TorchScript export. This module only writes files;
the runtimes that run them (:mod:`yolact_lite.inference.runtimes`) import it, never the reverse.

What is exported is :class:`ExportWrapper`: the network plus the cheap, fixed part of the
original's Detect that is pure tensor math, so that a deployed graph needs no Python:

    images [B, 3, S, S] (normalised RGB, the Predictor's preprocess)
      -> boxes        [B, P, 4]     decoded (x1, y1, x2, y2) relative to the input
         scores       [B, P, C]     softmax foreground class scores (background dropped)
         coefficients [B, P, k]     mask coefficients (after tanh)
         prototypes   [B, Hp, Wp, k]

**Fixed spatial size, dynamic batch.** The priors (anchors) depend on the pyramid's
feature-map sizes, hence on the input size S, and they are baked into the graph as a
constant for ``config.model.input_size``. Feed exactly S x S (the Predictor's preprocess
always does: square stretch or letterbox); the batch dimension is free.

**Detect.** The plain graph stops before NMS: its outputs are the network-output contract
of every runtime (:mod:`yolact_lite.inference.runtimes`) and :func:`yolact_lite.inference.detection.detect`
does the rest. ``with_nms=True`` exports the full-postprocess graph instead
(:class:`FullPostprocessWrapper`): the Predictor's candidate filter, Fast NMS (exactly ours:
per-class top-k, IoU matrix, upper triangle, max), ``max_detections``, mask assembly
(matmul + sigmoid), crop and YOLACT++ re-scoring, written in ONNX ops, so onnxruntime alone
returns boxes, scores, classes and masks at prototype resolution (docs/onnx_outputs.md).

**Exporter.** The TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) still
exists in torch 2.x and is used: it is the most predictable for this graph (fixed shapes
except the batch, a custom symbolic for DCN); the dynamo exporter needs onnxscript.
YOLACT++'s deformable convs (``torchvision.ops.deform_conv2d``; torchvision registers no
ONNX symbolic for it) are exported as the standard ONNX ``DeformConv`` op, which exists from
opset 19: a model with DCN is exported at opset 19 by default and a lower ``opset`` is an
error. The mask-IoU re-scoring head of YOLACT++ is not part of the plain graph (it runs on
assembled masks after NMS; the Predictor runs it in torch); the full-postprocess graph has it.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..config import Config, InferenceConfig, ModelConfig, require_config
from ..errors import YolactError
from ..hardware import cpu_info
from ..io_utils import write_atomic
from ..model.backbones import ModulatedDeformConv3x3
from ..model.fuse import fuse_for_inference
from ..model.outputs import NETWORK_OUTPUTS, decode_outputs

__all__ = [
    "ExportError", "ExportWrapper", "FullPostprocessWrapper", "export_onnx", "export_torchscript",
    "onnx_file_precision", "quantize_int8", "has_deformable_convs", "default_opset",
    "export_to_temp",
    "OUTPUT_NAMES", "FULL_OUTPUT_NAMES",
]

OUTPUT_NAMES = NETWORK_OUTPUTS  # the plain graph's outputs are the network-output contract
FULL_OUTPUT_NAMES = ("num_detections", "det_boxes", "det_scores", "det_classes", "det_masks", "det_mask_scores")
INPUT_NAME = "images"
PRECISION_KEY = "yolact_lite.precision"  # ONNX metadata: "fp32" or "int8"

DEFAULT_OPSET = 17
DEFORM_CONV_OPSET = 19  # ONNX DeformConv appeared in opset 19
MIN_OPSET = 11  # bilinear Resize with half-pixel centres
FULL_POSTPROCESS_OPSET = 14  # Trilu (the upper triangle of Fast NMS)
MAX_OPSET = 20  # the TorchScript-based exporter's maximum


class ExportError(YolactError):
    """Export or ONNX-runtime problem the user can act on (one-line message)."""


def _model_config(config: Union[Config, ModelConfig]) -> ModelConfig:
    return config.model if isinstance(config, Config) else config


def has_deformable_convs(model: nn.Module) -> bool:
    """Whether ``model`` has YOLACT++ deformable convs (exported as ONNX DeformConv)."""
    return any(isinstance(m, ModulatedDeformConv3x3) for m in model.modules())


def default_opset(model: nn.Module) -> int:
    """17, or 19 (DeformConv) for a model with deformable convs."""
    return DEFORM_CONV_OPSET if has_deformable_convs(model) else DEFAULT_OPSET


# --------------------------------------------------------------------------- wrappers


class ExportWrapper(nn.Module):
    """Network + box decoding + softmax for a fixed input size (see the module docstring).

    ``model`` is used as given (call :func:`fuse_for_inference` first for a faster graph);
    the priors for ``config``'s input size are computed once by a dummy forward pass and
    stored as the buffer ``priors`` [P, 4].
    """

    def __init__(self, model: nn.Module, config: Union[Config, ModelConfig]):
        super().__init__()
        self.model = model
        self.input_size = int(_model_config(config).input_size)
        param = next(model.parameters())
        probe = torch.zeros(1, 3, self.input_size, self.input_size, device=param.device, dtype=param.dtype)
        was_training = model.training
        model.eval()  # no BatchNorm statistics update from the probe
        with torch.no_grad():
            priors = model(probe)["priors"]
        model.train(was_training)
        self.register_buffer("priors", priors.detach().clone().float())

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        raw = dict(self.model(images))
        raw["priors"] = self.priors  # a constant in the graph
        out = decode_outputs(raw)
        return tuple(out[name] for name in OUTPUT_NAMES)


class FullPostprocessWrapper(nn.Module):
    """:class:`ExportWrapper` followed by the Predictor's whole detect + mask assembly in
    plain tensor ops (ONNX TopK, Gather, MatMul, Trilu, ReduceMax, Sigmoid...), fixed shapes:

    1. candidates: priors whose best foreground score is ``> candidate_threshold`` (and whose box
       is finite); the other priors get score -1 for every class, below any real score;
    2. Fast NMS exactly as :func:`yolact_lite.ops.fast_nms`: per class the ``k = min(nms_top_k,
       P)`` best priors (TopK; equal scores: lower prior first, as the stable sort), IoU matrix
       [B, C, k, k], strict upper triangle, column max ``<= nms_iou`` keeps a candidate (a
       suppressed box still suppresses); the padding priors (score -1) rank last, so they never
       suppress a candidate and are dropped themselves;
    3. the ``D = min(max_detections, C * k)`` best survivors over all classes (TopK again),
       then ``detection_threshold`` when > 0;
    4. masks: ``sigmoid(prototypes @ coefficients^T)`` for those D, cropped as
       ``config.crop_mode`` ("hard" / "soft" / "none", ``crop_padding``), at prototype
       resolution; YOLACT++'s mask-IoU head re-scores them when ``rescore_masks``. The resize to
       the image, ``mask_threshold`` and ``clip_to_box`` are left to the consumer.

    Outputs (:data:`FULL_OUTPUT_NAMES`, docs/onnx_outputs.md): ``num_detections`` [B] int64,
    ``det_boxes`` [B, D, 4] relative xyxy (not clipped), ``det_scores`` [B, D],
    ``det_classes`` [B, D] int64, ``det_masks`` [B, D, Hp, Wp] float probabilities,
    ``det_mask_scores`` [B, D]; rows ``>= num_detections[b]`` are padding (score 0,
    class -1, mask 0). Only ``nms="fast"`` has a graph form.
    """

    def __init__(self, wrapper: ExportWrapper, inference: InferenceConfig):
        super().__init__()
        if inference.nms != "fast":
            raise ExportError(f"the full-postprocess graph implements Fast NMS (nms='fast'); "
                              f"this config has nms={inference.nms!r}")
        self.wrapper = wrapper
        self.iou = float(torch.tensor(float(inference.nms_iou), dtype=torch.float32))
        self.candidate_threshold = float(inference.candidate_threshold)
        self.detection_threshold = float(inference.detection_threshold)
        self.top_k = int(inference.nms_top_k)
        self.max_detections = int(inference.max_detections)
        self.inference = inference
        head = getattr(wrapper.model, "mask_iou_head", None)
        self.mask_iou_head = head if head is not None and inference.rescore_masks else None

    def forward(self, images: Tensor):
        from ..masks import crop_region, soft_crop_region
        from ..ops.nms import _pairwise_iou

        boxes, scores, coefficients, prototypes = self.wrapper(images)
        batch, num_priors, num_classes = scores.shape
        k = min(self.top_k, num_priors)
        finite = torch.isfinite(boxes).all(dim=2)
        candidate = (scores.amax(dim=2) > self.candidate_threshold) & finite  # [B, P]
        masked = torch.where(candidate[:, :, None], scores, torch.full_like(scores, -1.0)).transpose(1, 2)
        top_scores, top_idx = masked.topk(k, dim=2)  # [B, C, k], score descending
        offset = (torch.arange(batch, device=images.device) * num_priors)[:, None, None]
        flat_boxes = boxes.reshape(-1, 4)
        cand = flat_boxes.index_select(0, (top_idx + offset).reshape(-1)).reshape(batch, num_classes, k, 4)
        cand = torch.where(torch.isfinite(cand), cand, torch.zeros_like(cand))  # padding priors only
        iou = torch.triu(_pairwise_iou(cand), diagonal=1)  # row i ranked above column j
        keep = (top_scores > -0.5) & (iou.amax(dim=2) <= self.iou)
        kept = torch.where(keep, top_scores, torch.full_like(top_scores, -1.0)).reshape(batch, num_classes * k)
        count = min(self.max_detections, num_classes * k)
        det_scores, flat = kept.topk(count, dim=1)  # [B, D]
        valid = det_scores > -0.5
        if self.detection_threshold > 0:
            valid = valid & (det_scores > self.detection_threshold)
        classes = torch.div(flat, k, rounding_mode="floor")
        prior = top_idx.reshape(batch, num_classes * k).gather(1, flat)  # [B, D]
        rows = (prior + offset[:, :, 0]).reshape(-1)
        det_boxes = flat_boxes.index_select(0, rows).reshape(batch, count, 4)
        det_boxes = torch.where(valid[:, :, None], det_boxes, torch.zeros_like(det_boxes))
        det_coefficients = coefficients.reshape(-1, coefficients.shape[-1]).index_select(0, rows)
        det_coefficients = det_coefficients.reshape(batch, count, -1)
        hp, wp = int(prototypes.shape[1]), int(prototypes.shape[2])
        logits = prototypes.reshape(batch, hp * wp, -1) @ det_coefficients.transpose(1, 2)  # [B, Hp*Wp, D]
        masks = torch.sigmoid(logits).reshape(batch, hp, wp, count).permute(0, 3, 1, 2)  # [B, D, Hp, Wp]
        inf = self.inference
        if inf.crop_mode == "hard":
            region = crop_region(det_boxes.reshape(-1, 4), hp, wp, inf.crop_padding).reshape(batch, count, hp, wp)
            masks = masks * region.to(masks.dtype)
        elif inf.crop_mode == "soft":
            weight = soft_crop_region(det_boxes.reshape(-1, 4), hp, wp, inf.crop_padding, inf.crop_softness)
            masks = masks * weight.reshape(batch, count, hp, wp)
        masks = masks * valid[:, :, None, None].to(masks.dtype)
        det_scores = torch.where(valid, det_scores, torch.zeros_like(det_scores))
        mask_scores = det_scores
        safe_classes = torch.where(valid, classes, torch.zeros_like(classes))
        if self.mask_iou_head is not None:
            predicted = self.mask_iou_head(masks.reshape(-1, 1, hp, wp)).float().reshape(batch, count, num_classes)
            mask_scores = det_scores * predicted.gather(2, safe_classes[:, :, None]).squeeze(2)
        det_classes = torch.where(valid, classes, torch.full_like(classes, -1))
        num = valid.to(torch.int64).sum(dim=1)
        return num, det_boxes, det_scores, det_classes, masks, mask_scores


# --------------------------------------------------------------------------- DCN symbolic


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                            dil_h, dil_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (opset 19). Same offset layout
    (interleaved (dy, dx) per kernel tap) and modulation mask."""
    from torch.onnx import symbolic_helper as sh

    const = lambda v, n: sh._get_const(v, "i", n)  # noqa: E731
    stride_h, stride_w, pad_h, pad_w = (const(stride_h, "stride_h"), const(stride_w, "stride_w"),
                                        const(pad_h, "pad_h"), const(pad_w, "pad_w"))
    dil_h, dil_w, groups, offset_groups = (const(dil_h, "dil_h"), const(dil_w, "dil_w"), const(groups, "groups"),
                                           const(offset_groups, "offset_groups"))
    use_mask = sh._get_const(use_mask, "b", "use_mask")
    sizes = sh._get_tensor_sizes(weight)
    kernel = [int(sizes[2]), int(sizes[3])] if sizes and None not in sizes[2:] else [3, 3]
    inputs = [input, weight, offset, bias]
    if use_mask:
        inputs.append(mask)
    return g.op(
        "DeformConv", *inputs,
        dilations_i=[dil_h, dil_w], group_i=groups, kernel_shape_i=kernel,
        offset_group_i=offset_groups, pads_i=[pad_h, pad_w, pad_h, pad_w], strides_i=[stride_h, stride_w],
    )


_DCN_REGISTERED = False


def _register_deform_conv_symbolic() -> None:
    global _DCN_REGISTERED
    if not _DCN_REGISTERED:
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, DEFORM_CONV_OPSET)
        _DCN_REGISTERED = True


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_export():
    # Tracer warnings (python ints from shapes: the spatial size is fixed by design) and the
    # exporter's deprecation notices are noise for the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _prepare(model: nn.Module, fuse: bool) -> nn.Module:
    model = fuse_for_inference(model, channels_last=False) if fuse else copy.deepcopy(model).eval()
    model = model.cpu().float()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _export_target(model: Any, config: Any, path: Union[str, Path], where: str) -> Path:
    """The checked output path of an export (one-line errors for the usual slips)."""
    require_config(config, where)
    if not isinstance(model, nn.Module):
        raise ExportError(f"{where} takes the torch model (nn.Module), got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give the file to write")
    if not path.parent.exists():
        raise ExportError(f"{path}: folder {path.parent} does not exist")
    return path


def export_onnx(model: nn.Module, config: Config, path: Union[str, Path], opset: Optional[int] = None,
                with_nms: bool = False, dynamic_batch: bool = True, fuse: bool = True) -> Path:
    """Export ``model`` (eval; not modified) to ONNX at ``config.model.input_size``.

    Args:
        opset: ONNX opset; default 17, or 19 for YOLACT++ (DeformConv needs >= 19).
        with_nms: the full-postprocess graph (:class:`FullPostprocessWrapper`: Fast NMS,
            mask assembly, crop, ``max_detections``; outputs ``FULL_OUTPUT_NAMES``) using
            ``config.inference``.
        dynamic_batch: free batch dimension (else fixed to 1).
        fuse: fold BatchNorm into convs first (same outputs).

    Returns the path written. Raises :class:`ExportError` for an unusable opset.
    """
    path = _export_target(model, config, path, "export_onnx")
    dcn = has_deformable_convs(model)
    opset = default_opset(model) if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if dcn and opset < DEFORM_CONV_OPSET:
        raise ExportError(
            f"this model has deformable convs (YOLACT++), exported as ONNX DeformConv which needs "
            f"opset >= {DEFORM_CONV_OPSET} (got {opset}): use --opset {DEFORM_CONV_OPSET}"
        )
    if with_nms and opset < FULL_POSTPROCESS_OPSET:
        raise ExportError(f"the full-postprocess graph (--with-nms) needs opset >= {FULL_POSTPROCESS_OPSET} "
                          f"(ONNX Trilu; got {opset})")
    if dcn:
        _register_deform_conv_symbolic()
    wrapper: nn.Module = ExportWrapper(_prepare(model, fuse), config).eval()
    names = list(OUTPUT_NAMES)
    if with_nms:
        wrapper = FullPostprocessWrapper(wrapper, config.inference).eval()
        names = list(FULL_OUTPUT_NAMES)
    size = int(config.model.input_size)
    example = torch.zeros(1, 3, size, size)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}}
        dynamic_axes.update({n: {0: "batch"} for n in (FULL_OUTPUT_NAMES if with_nms else OUTPUT_NAMES)})
    with _quiet_export(), torch.no_grad():
        try:
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except torch.onnx.errors.UnsupportedOperatorError as exc:
            raise ExportError(f"ONNX export failed at opset {opset}: {str(exc).splitlines()[0]}") from None
    return path


def onnx_file_precision(path: Union[str, Path]) -> str:
    """``"int8"`` for a quantised (QDQ) export from :func:`quantize_int8`, else ``"fp32"``."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    meta = {p.key: p.value for p in graph.metadata_props}
    if PRECISION_KEY in meta:
        return meta[PRECISION_KEY]
    return "int8" if any(n.op_type == "QuantizeLinear" for n in graph.graph.node) else "fp32"


class _CalibrationImages:
    """onnxruntime CalibrationDataReader over preprocessed calibration images (one per batch)."""

    def __init__(self, batches: Sequence[Tensor]):
        self._items = iter([{INPUT_NAME: b.numpy()} for b in batches])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(fp32_path: Union[str, Path], out_path: Union[str, Path], calibration: Sequence[Tensor],
                  per_channel: bool = True, method: str = "minmax", keep_fp32: Sequence[str] = (),
                  keep_first_conv: bool = True, reduce_range: Optional[bool] = None) -> Path:
    """Static int8 quantisation of a plain fp32 export (onnxruntime ``quantize_static``).

    Args:
        fp32_path: a plain graph from :func:`export_onnx`.
        calibration: preprocessed batches [1, 3, S, S] (the Predictor's preprocess of
            images like the deployment's): activation ranges are measured on them.
        per_channel: one weight scale per output channel (QDQ format, int8 weights and
            activations: what VNNI / AMX-INT8 kernels run).
        method: ``minmax``, ``percentile`` or ``entropy`` calibration.
        keep_fp32: node names left in float (e.g. a sensitive head).
        keep_first_conv: leave the convolution that reads the image in float (the input is
            not quantised: on an ImageNet EfficientNet-Lite0 this alone cut the int8 score
            error by half; the first layer is a small share of the compute).
        reduce_range: 7-bit weights. Without int8 dot-product instructions (VNNI) the x86
            kernels add pairs of int8 products in 16 bits, which saturates with full-range
            weights (a quantised model then finds nothing); None: on when this CPU has no VNNI.
            A file quantised with it runs everywhere, one without it only well on VNNI CPUs.

    Only convolutions and matmuls are quantised; decoding, softmax and everything after stay
    float32. The file gets the metadata ``yolact_lite.precision = int8``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"calibration method must be one of {', '.join(methods)} (got {method!r})")
    if not calibration:
        raise ExportError("int8 calibration needs at least one image")
    if reduce_range is None:
        reduce_range = not cpu_info().vnni
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="yolact_int8_") as folder:
        prepared = Path(folder) / "prepared.onnx"
        with _quiet_export():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            keep = list(keep_fp32)
            if keep_first_conv:
                graph = onnx.load(str(prepared), load_external_data=False).graph
                keep += [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] == INPUT_NAME]
            quantize_static(
                str(prepared), str(out_path), _CalibrationImages(calibration),
                quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "MatMul"], nodes_to_exclude=keep,
                calibrate_method=methods[method],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    graph = onnx.load(str(out_path))
    _set_precision(graph, "int8")
    onnx.save(graph, str(out_path))
    return out_path


def _set_precision(graph, precision: str) -> None:
    for prop in list(graph.metadata_props):
        if prop.key == PRECISION_KEY:
            graph.metadata_props.remove(prop)
    entry = graph.metadata_props.add()
    entry.key, entry.value = PRECISION_KEY, precision


def export_torchscript(model: nn.Module, config: Config, path: Union[str, Path], fuse: bool = True) -> Path:
    """``torch.jit.trace`` of :class:`ExportWrapper` (same outputs, any batch, input size
    fixed to ``config.model.input_size``), saved to ``path``; load with ``torch.jit.load``."""
    path = _export_target(model, config, path, "export_torchscript")
    wrapper = ExportWrapper(_prepare(model, fuse), config).eval()
    size = int(config.model.input_size)
    example = torch.zeros(2, 3, size, size)  # batch 2: nothing specialises to a batch of 1
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        write_atomic(path, lambda f: torch.jit.save(traced, f), what="TorchScript file")
    return path


# --------------------------------------------------------------------------- onnxruntime


def export_to_temp(model: nn.Module, config: Config, **kwargs) -> Tuple[Path, tempfile.TemporaryDirectory]:
    """Export to a temporary folder; returns (path, folder handle: keep it alive)."""
    folder = tempfile.TemporaryDirectory(prefix="yolact_onnx_")
    path = export_onnx(model, config, Path(folder.name) / "model.onnx", **kwargs)
    return path, folder
