"""The runtimes that run the network stage, behind one interface and one output contract.

Every runtime is a small :class:`Network`: called on the Predictor's normalised batch
[B, 3, S, S] it returns, in eval, the same named float32 tensors on the Predictor's device
(:data:`yolact_lite.model.outputs.NETWORK_OUTPUTS`)::

    boxes        [B, P, 4]      decoded xyxy relative to the input
    scores       [B, P, C]      softmax foreground scores
    coefficients [B, P, k]      mask coefficients
    prototypes   [B, Hp, Wp, k]

so :func:`yolact_lite.inference.detection.detect` exists once and the Predictor never asks
which runtime it runs:

* :class:`TorchNetwork`: the (BatchNorm-folded) model in eager mode or ``torch.compile``;
  fp32, bf16 (bf16 weights and activations, ``channels_last``) or fp16 (CUDA autocast);
* :class:`TorchScriptNetwork`: a file from :func:`yolact_lite.inference.export.export_torchscript`;
* :class:`OnnxRuntimeNetwork`: an ONNX file (fp32, or int8 from
  :func:`yolact_lite.inference.export.quantize_int8`) run by onnxruntime;
* :class:`OpenVinoNetwork`: OpenVINO on the CPU, from the same ONNX file or converted from
  torch directly (:mod:`yolact_lite.inference.openvino_ir`).

:mod:`yolact_lite.inference.runtime_choice` picks one from the Predictor's ``backend`` /
``precision`` arguments. The runtimes that run a file read it; they never write one
(:mod:`yolact_lite.inference.export` does).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from ..config import Config
from ..model.outputs import NETWORK_OUTPUTS, decode_outputs
from .export import PRECISION_KEY, ExportError
from .openvino_ir import cache_root, openvino_core

__all__ = ["Network", "TorchNetwork", "TorchScriptNetwork", "OnnxRuntimeNetwork", "OpenVinoNetwork"]


class Network:
    """The interface: ``network(batch) -> dict`` of :data:`NETWORK_OUTPUTS` (float32, on
    ``device``). Attributes: ``name`` (backend), ``precision``, ``device``,
    ``channels_last`` (the batch it wants: NHWC memory format or plain)."""

    name = "network"
    precision = "fp32"
    channels_last = False
    device = torch.device("cpu")

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} {self.precision}"


class TorchNetwork(Network):
    """The model itself (eager or compiled), outputs decoded by
    :func:`~yolact_lite.model.outputs.decode_outputs`.

    Args:
        model: eval model (fused or not); used as given for fp32/fp16, copied to bf16 for bf16.
        precision: ``fp32``; ``bf16``: weights and activations in bf16, NHWC (on CPUs without
            AMX, autocast is slower than fp32: it re-casts every weight on every call);
            ``fp16``: CUDA autocast (weights stay fp32).
        compile: ``torch.compile`` (the first call compiles).
        channels_last: feed NHWC batches (the model's weights should be NHWC too: see
            :func:`yolact_lite.model.fuse.fuse_for_inference`).
    """

    name = "torch"

    def __init__(self, model: nn.Module, precision: str = "fp32", compile: bool = False,
                 channels_last: bool = True):
        self.precision = precision
        self.device = next(model.parameters()).device
        self.channels_last = bool(channels_last)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if precision == "bf16":
            model = copy.deepcopy(model).to(torch.bfloat16)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.compiled = bool(compile)
        self._forward = torch.compile(model, dynamic=False) if compile else model
        if compile:
            self.name = "torch.compile"

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:
        with torch.inference_mode():
            if self.dtype != torch.float32:
                batch = batch.to(self.dtype)
            if self.precision == "fp16":
                with torch.autocast("cuda", dtype=torch.float16):
                    raw = self._forward(batch)
            else:
                raw = self._forward(batch)
            return decode_outputs(raw)


class TorchScriptNetwork(Network):
    """A traced file from :func:`yolact_lite.inference.export.export_torchscript` (its outputs are
    already the contract, as a tuple in :data:`NETWORK_OUTPUTS` order)."""

    name = "torchscript"

    def __init__(self, path: Union[str, Path], device: Union[str, torch.device] = "cpu"):
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"TorchScript file not found: {self.path}")
        self.device = torch.device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but works
            self.module = torch.jit.load(str(self.path), map_location=self.device)

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:
        with torch.inference_mode():
            out = self.module(batch.contiguous())
        return {name: value.float() for name, value in zip(NETWORK_OUTPUTS, out)}


class OpenVinoNetwork(Network):
    """A model compiled by OpenVINO for the CPU: an ONNX file from
    :func:`yolact_lite.inference.export.export_onnx`, or the cached ``model.xml`` of
    :func:`yolact_lite.inference.openvino_ir.openvino_ir` (converted from torch directly).
    ``precision``: ``fp32`` pins OpenVINO's inference precision to f32 (on AMX CPUs its
    default would be bf16), ``bf16`` asks for bf16; an int8 (QDQ) file runs its quantised
    convs whatever the hint. Compiled blobs are cached beside the converted models, so a
    later run on the same model compiles in a fraction of the time. A graph with a dynamic
    batch is compiled once per batch size seen, with that size fixed (static shapes run
    faster); batch 1 at once, so a model OpenVINO cannot take fails here."""

    name = "openvino"

    def __init__(self, path: Union[str, Path], precision: str = "fp32", threads: Optional[int] = None):
        self.core = openvino_core()  # shared: see openvino_core for why never one per network
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"model file not found: {self.path}")
        self.precision = precision
        self.config = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            **_compiled_cache(),
        }
        self._requests: Dict[int, tuple] = {}
        self._request(1)

    def _request(self, batch_size: int) -> tuple:
        """(infer request, output index per name) for batches of ``batch_size``."""
        if batch_size in self._requests:
            return self._requests[batch_size]
        try:
            model = self.core.read_model(str(self.path))
            shape = model.inputs[0].get_partial_shape()
            if shape.rank.is_static and shape[0].is_dynamic:
                shape[0] = batch_size
                model.reshape({model.inputs[0]: shape})
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ExportError(f"OpenVINO cannot compile {self.path}: {first}") from None
        # a port has several tensor names (the ONNX output name among them)
        ports = {}
        for index, port in enumerate(compiled.outputs):
            for name in set(port.get_names()) & set(NETWORK_OUTPUTS):
                ports[name] = index
        if set(ports) != set(NETWORK_OUTPUTS):
            names = [sorted(p.get_names()) for p in compiled.outputs]
            raise ExportError(f"{self.path}: not a plain yolact_lite export (outputs {names})")
        self._requests[batch_size] = (compiled.create_infer_request(), ports)
        return self._requests[batch_size]

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        request, ports = self._request(int(array.shape[0]))
        values = list(request.infer({0: array}).values())
        return {name: torch.from_numpy(values[i].copy()).float() for name, i in ports.items()}


def _compiled_cache() -> Dict[str, str]:
    """The compile property that makes OpenVINO keep compiled blobs under our cache root when
    it is writable (else it compiles every time, which is only slower). Given per compile, not
    set on the shared Core, so each network follows the cache root of its own time."""
    folder = cache_root() / "openvino" / "compiled"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return {}
    return {"CACHE_DIR": str(folder)}


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
            f"onnxruntime {ort.__version__} cannot read {path} ({first}): upgrade onnxruntime or re-export "
            "with a lower --opset"
        )
    return ExportError(f"onnxruntime cannot load {path}: {first}")


class OnnxRuntimeNetwork(Network):
    """An exported .onnx graph run by onnxruntime, called like the Predictor's network.

    ``network(batch)`` takes the normalised batch [B, 3, S, S] (torch) and returns a dict of
    torch tensors on ``device``, keyed by the graph's output names: ``boxes``, ``scores``,
    ``coefficients``, ``prototypes`` for the plain graph (``boxes``/``scores`` replace the
    model's raw ``box_deltas``/``class_logits``), or the
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
        self.with_nms = "num_detections" in self.output_names  # the full-postprocess graph
        if not self.with_nms and not set(NETWORK_OUTPUTS) <= set(self.output_names):
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
            raise ExportError(f"{self.path} is the full-postprocess graph (--with-nms); "
                              "the Predictor needs the plain graph")
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
