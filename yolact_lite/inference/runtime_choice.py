"""Which runtime and precision a Predictor runs: :func:`resolve_precision` answers the
``backend`` / ``precision`` / ``compile`` / ``onnx_path`` arguments in one place (and rejects
what this machine or runtime cannot run, with a one-line
:class:`~yolact_lite.errors.ConfigError`); :func:`build_network` builds the chosen
:class:`~yolact_lite.inference.runtimes.Network`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..hardware import bf16_supported, cpu_info
from .export import export_to_temp, onnx_file_precision
from .openvino_ir import openvino_ir
from .runtimes import Network, OnnxRuntimeNetwork, OpenVinoNetwork, TorchNetwork

__all__ = ["resolve_precision", "build_network", "openvino_available", "onnxruntime_available"]

# The Predictor's (and predict's) run-time choices; not config keys.
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
BACKENDS = ("torch", "onnxruntime", "openvino")


def _cpu_name() -> str:
    return cpu_info().model or "this CPU"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_precision(precision: Optional[str], device: torch.device, backend: Optional[str] = None,
                      compile: bool = False, onnx_path: Optional[Union[str, Path]] = None,
                      fastest_runtime: bool = False) -> Tuple[str, str, str]:
    """Check the Predictor's runtime arguments against each other and the device; answer
    ``"auto"``.

    ``precision`` None means ``fp32``; ``backend`` None means "torch unless ``auto`` finds a
    faster runtime" (``compile`` keeps ``auto`` on torch); ``onnx_path`` needs an ONNX
    backend, ``compile`` the torch one. Returns
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

    An explicit ``backend`` keeps auto within it. ``fastest_runtime`` (the CLI's choice; the
    Python default stays torch) lets an explicit float precision with no ``backend`` run on
    the fastest runtime that computes it: OpenVINO on the CPU when installed (fp32 agrees
    with torch to ~1e-5), else onnxruntime for fp32 when installed, else torch. Raises
    :class:`ConfigError` (one line) for a precision this machine or backend cannot run.
    """
    precision = precision or "fp32"
    _check_arguments(precision, device, backend, compile, onnx_path)
    if compile:
        backend = backend or "torch"
    native = bf16_supported(device)
    if precision == "auto":
        return _auto(device, backend, native)
    if backend is None and fastest_runtime:
        backend, reason = _fastest_runtime(precision, device)
        _check_explicit(precision, device, backend, native, onnx_path)
        return backend, precision, reason
    backend = backend or "torch"
    _check_explicit(precision, device, backend, native, onnx_path)
    return backend, precision, precision


def _fastest_runtime(precision: str, device: torch.device) -> Tuple[str, str]:
    """The fastest runtime for an explicit ``precision``: ``(backend, reason)``."""
    if device.type == "cpu" and precision in ("fp32", "bf16") and openvino_available():
        return "openvino", f"{precision} on OpenVINO (the fastest CPU runtime here)"
    if device.type == "cpu" and precision == "fp32" and onnxruntime_available():
        return "onnxruntime", "fp32 on onnxruntime (OpenVINO is not installed)"
    return "torch", f"{precision} on torch"


def _check_arguments(precision: str, device: torch.device, backend: Optional[str], compile: bool,
                     onnx_path) -> None:
    """The arguments' own rules (valid names, what goes with what)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend not in (None, "torch") and compile:
        raise ConfigError(f"the {backend} backend runs an exported graph: compile applies to backend torch")
    if onnx_path is not None and backend in (None, "torch"):
        raise ConfigError("onnx_path needs backend='onnxruntime' (or 'openvino')")
    if backend == "openvino" and device.type != "cpu":
        raise ConfigError("the openvino backend runs on the CPU: use device cpu")


def _auto(device: torch.device, backend: Optional[str], native: bool) -> Tuple[str, str, str]:
    """``precision="auto"``: the rules of :func:`resolve_precision`."""
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


def _check_explicit(precision: str, device: torch.device, backend: str, native: bool, onnx_path) -> None:
    """An explicit precision: can this device and backend run it?"""
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
    if precision == "int8" and onnx_path is None:
        raise ConfigError("precision 'int8' needs a calibrated ONNX model (onnx_path / --onnx): "
                          "make one with yolact-lite export --int8 --calib DIR")


def build_network(model: nn.Module, config, backend: str, precision: str, device: torch.device,
                  onnx_path: Optional[Union[str, Path]] = None, compile: bool = False,
                  channels_last: bool = True, precision_given: bool = True) -> Tuple[Network, Optional[object]]:
    """The :class:`~yolact_lite.inference.runtimes.Network` for a Predictor, after
    :func:`resolve_precision`. ``model`` is the eval (fused) model on ``device``;
    ONNX backends export it to a temporary file when ``onnx_path`` is None. ``precision``
    comes from :func:`resolve_precision`; with ``precision_given`` False an int8 file's own
    precision is adopted, else a mismatch with the file is an error.

    Returns ``(network, temporary folder or None)`` (keep the folder alive with the network).
    """
    if backend == "torch":
        return TorchNetwork(model, precision, compile=compile, channels_last=channels_last), None
    folder = None
    if backend == "openvino" and onnx_path is None:  # converted from torch directly, cached per weights
        network = OpenVinoNetwork(openvino_ir(model, config), precision=precision)
        return network, None
    if onnx_path is None:
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
        network = OpenVinoNetwork(onnx_path, precision=precision)
    network.precision = "int8" if file_precision == "int8" else precision
    return network, folder
