"""Network backends behind one interface and one output contract.

Every backend is a small :class:`Network`: called on the Predictor's normalised batch
[B, 3, S, S] it returns, in eval, the same named float32 tensors on the Predictor's device
(:data:`yolact_lite.inference.mask_assembly.NETWORK_OUTPUTS`):

    boxes        [B, P, 4]      decoded xyxy relative to the input
    scores       [B, P, C]      softmax foreground scores
    coefficients [B, P, k]      mask coefficients
    prototypes   [B, Hp, Wp, k]

so :func:`yolact_lite.inference.mask_assembly.detect` exists once and the Predictor never asks which
backend it runs:

* :class:`TorchNetwork`: the (BatchNorm-folded) model in eager mode or ``torch.compile``;
  fp32, bf16 (bf16 weights and activations, ``channels_last``) or fp16 (CUDA autocast);
* :class:`TorchScriptNetwork`: a file from :func:`yolact_lite.inference.export.export_torchscript`;
* :class:`yolact_lite.inference.export.OnnxRuntimeNetwork`: an ONNX file (fp32, or int8 from
  :func:`yolact_lite.inference.export.quantize_int8`) run by onnxruntime;
* :class:`OpenVinoNetwork`: the same ONNX file run by OpenVINO (optional extra).

:func:`build_network` turns the Predictor's ``backend`` / ``precision`` arguments into one of
these; :func:`resolve_precision` answers ``precision="auto"`` and rejects a precision the
device cannot run (one-line :class:`~yolact_lite.errors.ConfigError`).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..config import BACKENDS, PRECISIONS
from ..errors import ConfigError
from ..hardware import bf16_supported, cpu_info
from .mask_assembly import NETWORK_OUTPUTS, decode_outputs

__all__ = ["Network", "TorchNetwork", "TorchScriptNetwork", "OpenVinoNetwork", "build_network",
           "resolve_precision", "openvino_available", "PRECISIONS", "BACKENDS"]



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
    :func:`~yolact_lite.inference.mask_assembly.decode_outputs`.

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
        from .export import ExportError

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
    """An ONNX file from :func:`yolact_lite.inference.export.export_onnx` compiled by OpenVINO for the
    CPU (``pip install 'yolact_lite[openvino]'``). ``precision``: ``fp32`` pins OpenVINO's
    inference precision to f32 (on AMX CPUs its default would be bf16), ``bf16`` asks for
    bf16; an int8 (QDQ) file runs its quantised convs whatever the hint."""

    name = "openvino"

    def __init__(self, path: Union[str, Path], precision: str = "fp32", threads: Optional[int] = None):
        from .export import ExportError

        try:
            import openvino as ov
        except ImportError:
            raise ExportError("OpenVINO is not installed: pip install 'yolact_lite[openvino]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX file not found: {self.path}")
        self.precision = precision
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ExportError(f"OpenVINO cannot compile {self.path}: {first}") from None
        self.request = self.compiled.create_infer_request()
        # a port has several tensor names (the ONNX output name among them)
        self._ports = {}
        for index, port in enumerate(self.compiled.outputs):
            for name in set(port.get_names()) & set(NETWORK_OUTPUTS):
                self._ports[name] = index
        if set(self._ports) != set(NETWORK_OUTPUTS):
            names = [sorted(p.get_names()) for p in self.compiled.outputs]
            raise ExportError(f"{self.path}: not a plain yolact_lite export (outputs {names})")

    def __call__(self, batch: Tensor) -> Dict[str, Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        result = self.request.infer({0: array})
        values = list(result.values())
        return {name: torch.from_numpy(values[i].copy()).float() for name, i in self._ports.items()}


def _cpu_name() -> str:
    return cpu_info().model or "this CPU"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_precision(precision: str, device: torch.device, backend: Optional[str] = None) -> Tuple[str, str, str]:
    """Check ``precision`` against the device and backend; answer ``"auto"``.

    ``backend`` None means "torch unless ``auto`` finds a faster runtime". Returns
    ``(backend, precision, reason)``. ``auto`` is the fastest FLOAT path this machine has
    (never int8, whose accuracy must be measured first), by these rules, from side-by-side
    measurements (benchmarks/results/end_to_end.md, backends_precision.md, precision*.md):

    * CUDA: torch fp16 autocast;
    * CPU with OpenVINO installed: OpenVINO bf16 where the CPU has native bf16 (AMX or
      AVX512-BF16), else OpenVINO fp32;
    * CPU with native bf16 otherwise: torch bf16 (bf16 weights + channels_last; 4.7-5.3x fp32
      measured on an AMX Xeon, 1.3-1.9x on an AVX512-BF16 EPYC without AMX);
    * else onnxruntime fp32 when installed (it fuses the residual adds and ReLUs torch runs
      as separate passes), else torch fp32.

    An explicit ``backend`` keeps auto within it. Raises :class:`ConfigError` (one line) for
    a precision this machine or backend cannot run.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    native = bf16_supported(device)
    if precision == "auto":
        if device.type == "cuda":
            if backend in (None, "torch"):
                return "torch", "fp16", "auto: CUDA device: torch fp16 autocast"
            return backend, "fp32", f"auto: {backend} on CUDA runs the fp32 graph"
        cpu = _cpu_name()
        if backend == "openvino" or (backend is None and openvino_available()):
            if native:
                return "openvino", "bf16", f"auto: OpenVINO bf16 ({cpu} has native bf16)"
            return "openvino", "fp32", f"auto: OpenVINO fp32 ({cpu} has no native bf16)"
        if backend in (None, "torch") and native:
            return "torch", "bf16", f"auto: torch bf16 + channels_last ({cpu} has native bf16)"
        if backend == "onnxruntime" or (backend is None and onnxruntime_available()):
            return "onnxruntime", "fp32", "auto: onnxruntime fp32 (no OpenVINO, no native bf16)"
        return "torch", "fp32", "auto: torch fp32 (no OpenVINO, no native bf16, no onnxruntime)"
    backend = backend or "torch"
    if precision == "fp16" and (device.type != "cuda" or backend != "torch"):
        raise ConfigError("precision 'fp16' needs a CUDA device and the torch backend (CPU fp16 kernels are "
                          "emulated): use bf16 or fp32")
    if precision == "bf16":
        if backend == "onnxruntime":
            raise ConfigError("the onnxruntime backend has no bf16 path: use backend torch or openvino for bf16")
        if not native:
            where = f"this CPU ({_cpu_name()}) has neither AMX nor AVX512-BF16" if device.type == "cpu" \
                else "this CUDA device has no bf16"
            raise ConfigError(f"precision 'bf16' needs native bf16 hardware: {where}; use fp32")
    if precision == "int8" and backend == "torch":
        raise ConfigError("precision 'int8' runs a calibrated ONNX model: make one with "
                          "yolact-lite export --int8 --calib DIR and pass it as onnx_path (--onnx)")
    return backend, precision, precision


def build_network(model: nn.Module, config, backend: str, precision: str, device: torch.device,
                  onnx_path: Optional[Union[str, Path]] = None, compile: bool = False,
                  channels_last: bool = True, precision_given: bool = True) -> Tuple[Network, Optional[object]]:
    """The :class:`Network` for a Predictor. ``model`` is the eval (fused) model on ``device``;
    ONNX backends export it to a temporary file when ``onnx_path`` is None. ``precision``
    comes from :func:`resolve_precision`; with ``precision_given`` False an int8 file's own
    precision is adopted, else a mismatch with the file is an error.

    Returns ``(network, temporary folder or None)`` (keep the folder alive with the network).
    """
    if backend == "torch":
        return TorchNetwork(model, precision, compile=compile, channels_last=channels_last), None
    from .export import OnnxRuntimeNetwork, export_to_temp, onnx_file_precision

    folder = None
    if onnx_path is None:
        if precision == "int8":
            raise ConfigError("precision 'int8' needs a calibrated ONNX model (onnx_path / --onnx): "
                              "make one with yolact-lite export --int8 --calib DIR")
        onnx_path, folder = export_to_temp(model, config)
    file_precision = onnx_file_precision(onnx_path)
    if file_precision == "int8" and precision != "int8" and precision_given:
        raise ConfigError(f"{onnx_path} is an int8-quantised model: use precision 'int8' (--precision int8)")
    if precision == "int8" and file_precision != "int8":
        raise ConfigError(f"{onnx_path} is not an int8 model: make one with yolact-lite export --int8 --calib DIR")
    if backend == "onnxruntime":
        network: Network = OnnxRuntimeNetwork(onnx_path, device=device)
        network.check_matches(config)
    else:
        if device.type != "cpu":
            raise ConfigError("the openvino backend runs on the CPU: use device cpu")
        network = OpenVinoNetwork(onnx_path, precision=precision)
    network.precision = "int8" if file_precision == "int8" else precision
    return network, folder
