"""Deployment: ONNX and TorchScript export, and an onnxruntime network for the Predictor.

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

**NMS.** The plain graph stops before NMS; :func:`detect_decoded` does the rest in Python
(the same candidate filter and Fast NMS as :func:`yolact_lite.postprocess.detect`).
``with_nms=True`` appends ONNX ``NonMaxSuppression`` for users who deploy without Python:
per class, IoU ``nms_iou``, score threshold ``conf_threshold`` on each class score,
at most ``nms_top_k`` boxes per class and image. ONNX NMS is the traditional greedy NMS
(a suppressed box no longer suppresses others), NOT the original's Fast NMS (which lets
already-suppressed boxes suppress, so it keeps slightly fewer boxes), and its score filter
is per class where the original filters priors on their best class. There is no overall
``max_detections`` cap in the graph: sort ``det_scores`` and cut. Outputs of that variant:

    selected_indices [N, 3] int64 (batch index, class 0..C-1, prior index)
    det_boxes [N, 4], det_scores [N], det_coefficients [N, k], prototypes [B, Hp, Wp, k]

Masks are ``sigmoid(prototypes[b] @ det_coefficients^T)``, cropped with ``det_boxes``.

**Exporter.** The TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) still
exists in torch 2.x and is used: it is the most predictable for this graph (fixed shapes
except the batch, custom symbolics for NMS and DCN); the dynamo exporter needs onnxscript.
YOLACT++'s deformable convs (``torchvision.ops.deform_conv2d``; torchvision registers no
ONNX symbolic for it) are exported as the standard ONNX ``DeformConv`` op, which exists from
opset 19: a model with DCN is exported at opset 19 by default and a lower ``opset`` is an
error. The mask-IoU re-scoring head of YOLACT++ is not part of the graph (it runs on
assembled masks after NMS); the Predictor's onnxruntime backend runs it in torch.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .config import Config, InferenceConfig, ModelConfig
from .errors import YolactError
from .model.backbones import ModulatedDeformConv3x3
from .model.fuse import fuse_for_inference
from .backends import Network
from .postprocess import NETWORK_OUTPUTS, decode_outputs

__all__ = [
    "ExportError", "ExportWrapper", "NMSExportWrapper", "export_onnx", "export_torchscript",
    "OnnxRuntimeNetwork", "onnx_file_precision", "quantize_int8", "has_deformable_convs", "default_opset", "onnx_style_nms",
    "export_to_temp",
    "OUTPUT_NAMES", "NMS_OUTPUT_NAMES",
]

OUTPUT_NAMES = NETWORK_OUTPUTS  # the network-output contract (yolact_lite.backends)
NMS_OUTPUT_NAMES = ("selected_indices", "det_boxes", "det_scores", "det_coefficients", "prototypes")
INPUT_NAME = "images"
PRECISION_KEY = "yolact_lite.precision"  # ONNX metadata: "fp32" or "int8"

DEFAULT_OPSET = 17
DEFORM_CONV_OPSET = 19  # ONNX DeformConv appeared in opset 19
MIN_OPSET = 11  # bilinear Resize with half-pixel centres, NonMaxSuppression with all inputs
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


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per batch and class, greedy). The torch forward (used while
    tracing and for reference) gives the same selection with torchvision's NMS.

    boxes [B, P, 4], scores [B, C, P] -> selected [N, 3] int64 (batch, class, box), ordered
    by batch, then class, then score descending (onnxruntime's order).
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, score_threshold: float):
        from torchvision.ops import batched_nms

        rows = []
        for b in range(boxes.shape[0]):
            cls, idx = torch.nonzero(scores[b] > score_threshold, as_tuple=True)
            if cls.numel() == 0:
                continue
            keep = batched_nms(boxes[b, idx], scores[b, cls, idx], cls, iou)  # score descending
            cls, idx = cls[keep], idx[keep]
            order = torch.sort(cls, stable=True).indices  # by class, score order kept
            cls, idx = cls[order], idx[order]
            # at most max_per_class per class: rank within the class run
            first = torch.searchsorted(cls, cls, right=False)
            rank = torch.arange(cls.numel(), device=cls.device) - first
            within = rank < max_per_class
            cls, idx = cls[within], idx[within]
            rows.append(torch.stack([torch.full_like(cls, b), cls, idx], dim=1))
        if not rows:
            return torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)
        return torch.cat(rows).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, score_threshold):
        max_t = g.op("Constant", value_t=torch.tensor([int(max_per_class)], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([float(iou)], dtype=torch.float32))
        thr_t = g.op("Constant", value_t=torch.tensor([float(score_threshold)], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_t, iou_t, thr_t, center_point_box_i=0)


def onnx_style_nms(boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, score_threshold: float) -> Tensor:
    """What the ``with_nms`` graph's NMS selects, computed in torch: boxes [B, P, 4], scores
    [B, P, C] -> [N, 3] int64 (batch, class, prior)."""
    return _NonMaxSuppression.forward(None, boxes, scores.transpose(1, 2), max_per_class, iou, score_threshold)


class NMSExportWrapper(nn.Module):
    """:class:`ExportWrapper` followed by ONNX NonMaxSuppression and gathers (see the module
    docstring for the outputs and how this NMS differs from the original's Fast NMS)."""

    def __init__(self, wrapper: ExportWrapper, inference: InferenceConfig):
        super().__init__()
        self.wrapper = wrapper
        self.iou = float(inference.nms_iou)
        self.score_threshold = float(inference.conf_threshold)
        self.max_per_class = int(inference.nms_top_k)

    def forward(self, images: Tensor):
        boxes, scores, coefficients, prototypes = self.wrapper(images)
        num_priors, num_classes = scores.shape[1], scores.shape[2]
        selected = _NonMaxSuppression.apply(
            boxes, scores.transpose(1, 2), self.max_per_class, self.iou, self.score_threshold
        )
        batch_index, class_index, prior_index = selected[:, 0], selected[:, 1], selected[:, 2]
        flat = batch_index * num_priors + prior_index  # row in the [B * P, ...] views
        det_boxes = boxes.reshape(-1, 4).index_select(0, flat)
        det_scores = scores.reshape(-1).index_select(0, flat * num_classes + class_index)
        det_coefficients = coefficients.reshape(-1, coefficients.shape[-1]).index_select(0, flat)
        return selected, det_boxes, det_scores, det_coefficients, prototypes


# --------------------------------------------------------------------------- DCN symbolic


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                            dil_h, dil_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (opset 19). Same offset layout
    (interleaved (dy, dx) per kernel tap) and modulation mask."""
    from torch.onnx import symbolic_helper as sh

    stride_h, stride_w, pad_h, pad_w = (sh._get_const(v, "i", n) for v, n in
                                        ((stride_h, "stride_h"), (stride_w, "stride_w"), (pad_h, "pad_h"), (pad_w, "pad_w")))
    dil_h, dil_w, groups, offset_groups = (sh._get_const(v, "i", n) for v, n in
                                           ((dil_h, "dil_h"), (dil_w, "dil_w"), (groups, "groups"), (offset_groups, "offset_groups")))
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


def export_onnx(model: nn.Module, config: Config, path: Union[str, Path], opset: Optional[int] = None,
                with_nms: bool = False, dynamic_batch: bool = True, fuse: bool = True) -> Path:
    """Export ``model`` (eval; not modified) to ONNX at ``config.model.input_size``.

    Args:
        opset: ONNX opset; default 17, or 19 for YOLACT++ (DeformConv needs >= 19).
        with_nms: append NonMaxSuppression + gathers (outputs ``NMS_OUTPUT_NAMES``) using
            ``config.inference`` (``nms_iou``, ``conf_threshold``, ``nms_top_k``).
        dynamic_batch: free batch dimension (else fixed to 1).
        fuse: fold BatchNorm into convs first (same outputs).

    Returns the path written. Raises :class:`ExportError` for an unusable opset.
    """
    path = Path(path)
    if not path.parent.exists():
        raise ExportError(f"{path}: folder {path.parent} does not exist")
    dcn = has_deformable_convs(model)
    opset = default_opset(model) if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if dcn and opset < DEFORM_CONV_OPSET:
        raise ExportError(
            f"this model has deformable convs (YOLACT++), exported as ONNX DeformConv which needs "
            f"opset >= {DEFORM_CONV_OPSET} (got {opset}): use --opset {DEFORM_CONV_OPSET}"
        )
    if dcn:
        _register_deform_conv_symbolic()
    wrapper: nn.Module = ExportWrapper(_prepare(model, fuse), config).eval()
    names = list(OUTPUT_NAMES)
    if with_nms:
        wrapper = NMSExportWrapper(wrapper, config.inference).eval()
        names = list(NMS_OUTPUT_NAMES)
    size = int(config.model.input_size)
    example = torch.zeros(1, 3, size, size)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, "prototypes": {0: "batch"}}
        if with_nms:
            dynamic_axes.update({n: {0: "detections"} for n in NMS_OUTPUT_NAMES[:-1]})
        else:
            dynamic_axes.update({n: {0: "batch"} for n in OUTPUT_NAMES[:-1]})
    elif with_nms:
        dynamic_axes = {n: {0: "detections"} for n in NMS_OUTPUT_NAMES[:-1]}
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
                  per_channel: bool = True, method: str = "minmax", keep_fp32: Sequence[str] = ()) -> Path:
    """Static int8 quantisation of a plain fp32 export (onnxruntime ``quantize_static``).

    Args:
        fp32_path: a plain graph from :func:`export_onnx`.
        calibration: preprocessed batches [1, 3, S, S] (the Predictor's preprocess of
            images like the deployment's): activation ranges are measured on them.
        per_channel: one weight scale per output channel (QDQ format, int8 weights and
            activations: what VNNI / AMX-INT8 kernels run).
        method: ``minmax``, ``percentile`` or ``entropy`` calibration.
        keep_fp32: node names left in float (e.g. a sensitive head).

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
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="yolact_int8_") as folder:
        prepared = Path(folder) / "prepared.onnx"
        with _quiet_export():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(out_path), _CalibrationImages(calibration),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "MatMul"], nodes_to_exclude=list(keep_fp32),
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
    path = Path(path)
    if not path.parent.exists():
        raise ExportError(f"{path}: folder {path.parent} does not exist")
    wrapper = ExportWrapper(_prepare(model, fuse), config).eval()
    size = int(config.model.input_size)
    example = torch.zeros(2, 3, size, size)  # batch 2: nothing specialises to a batch of 1
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        torch.jit.save(traced, str(path))
    return path


# --------------------------------------------------------------------------- onnxruntime


def _explain_ort_error(exc: Exception, path: Path, providers: List[str]) -> ExportError:
    import onnxruntime as ort

    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    if "DeformConv" in text:
        return ExportError(
            f"onnxruntime {ort.__version__} cannot run DeformConv (YOLACT++ deformable convs) with "
            f"{providers[0]}: upgrade onnxruntime, or run this model with the torch or TorchScript backend"
        )
    if "IR version" in text or ("opset" in text.lower() and "support" in text.lower()):
        return ExportError(
            f"onnxruntime {ort.__version__} cannot read {path} ({first}): upgrade onnxruntime or re-export with a lower --opset"
        )
    return ExportError(f"onnxruntime cannot load {path}: {first}")


class OnnxRuntimeNetwork(Network):
    """An exported .onnx graph run by onnxruntime, called like the Predictor's network.

    ``network(batch)`` takes the normalised batch [B, 3, S, S] (torch) and returns a dict of
    torch tensors on ``device``, keyed by the graph's output names: ``boxes``, ``scores``,
    ``coefficients``, ``prototypes`` for the plain graph (``boxes``/``scores`` replace the
    torch network's ``box_deltas``/``class_logits``: use :func:`detect_decoded`), or the
    ``with_nms`` outputs.

    Providers: CPU; CUDA (then CPU) when ``device`` is a CUDA device and onnxruntime has the
    CUDA provider. ``threads``: intra-op threads (default: torch's thread count). ``spin``:
    let idle pool threads busy-wait (onnxruntime's default); off by default because on a
    shared or oversubscribed CPU spinning threads steal the cores the work needs (measured
    1.5-2x slower on a loaded 2-core machine, no gain on an idle one).
    """

    name = "onnxruntime"

    def __init__(self, path: Union[str, Path], device: Union[str, torch.device] = "cpu", threads: Optional[int] = None,
                 spin: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("onnxruntime is not installed: pip install 'yolact_lite[export]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX file not found: {self.path}")
        self.device = torch.device(device)
        available = ort.get_available_providers()
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise ExportError(
                    "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu) - use device cpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        names = [p if isinstance(p, str) else p[0] for p in providers]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise _explain_ort_error(exc, self.path, names) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ExportError(f"{self.path}: expected one image input [B, 3, S, S], got {[i.shape for i in inputs]}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.input_size = shape[2] if isinstance(shape[2], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self.with_nms = "selected_indices" in self.output_names
        if not self.with_nms and not set(OUTPUT_NAMES) <= set(self.output_names):
            raise ExportError(f"{self.path}: not a yolact_lite export (outputs {self.output_names})")
        self.providers = self.session.get_providers()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.file_precision = meta.get(PRECISION_KEY, "fp32")
        self.precision = self.file_precision

    def check_matches(self, config: Config) -> None:
        """Raise :class:`ExportError` unless the graph fits ``config`` (input size, classes,
        prototypes) and is the plain (no-NMS) variant the Predictor needs."""
        m = config.model
        if self.with_nms:
            raise ExportError(f"{self.path} was exported with --with-nms; the Predictor needs the plain graph")
        if self.input_size is not None and self.input_size != m.input_size:
            raise ExportError(
                f"{self.path} was exported for input size {self.input_size}, the config says {m.input_size} "
                "(priors depend on it: re-export, or use the same config)"
            )
        classes = self.output_shapes["scores"][-1]
        if isinstance(classes, int) and classes != m.num_classes:
            raise ExportError(f"{self.path} has {classes} classes, the config says {m.num_classes}")
        k = self.output_shapes["coefficients"][-1]
        if isinstance(k, int) and k != m.num_prototypes:
            raise ExportError(f"{self.path} has {k} prototypes, the config says {m.num_prototypes}")

    def run_numpy(self, images):
        """Raw onnxruntime call: float32 numpy [B, 3, S, S] -> list of numpy outputs."""
        return self.session.run(None, {self.input_name: images})

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:
        if self.input_size is not None and tuple(batch.shape[-2:]) != (self.input_size, self.input_size):
            raise ExportError(
                f"{self.path} takes {self.input_size}x{self.input_size} inputs, got {tuple(batch.shape[-2:])}"
            )
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.run_numpy(array)
        return {name: torch.from_numpy(value).to(self.device) for name, value in zip(self.output_names, outputs)}


def export_to_temp(model: nn.Module, config: Config, **kwargs) -> Tuple[Path, tempfile.TemporaryDirectory]:
    """Export to a temporary folder; returns (path, folder handle: keep it alive)."""
    folder = tempfile.TemporaryDirectory(prefix="yolact_onnx_")
    path = export_onnx(model, config, Path(folder.name) / "model.onnx", **kwargs)
    return path, folder
