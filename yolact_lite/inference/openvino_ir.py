"""The OpenVINO model of a torch model, converted directly (``openvino.convert_model``, no ONNX
file, no ``onnx`` package) and cached on disk, so a second run on the same weights starts in a
fraction of a second instead of converting again.

The cache key is a hash of everything the converted graph depends on: every parameter and
buffer of the model (so the key follows the weights, not a file name), the model section of
the config, the input size and the OpenVINO version. Entries are folders
``<cache>/openvino/<key>/model.{xml,bin}``, written to a temporary folder first and renamed
into place, so a killed run never leaves a half-written entry. OpenVINO's own compiled-blob
cache (``CACHE_DIR``) lives beside them.

Cache root: ``$YOLACT_LITE_CACHE``, else ``$XDG_CACHE_HOME/yolact_lite``, else
``~/.cache/yolact_lite``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..model.outputs import NETWORK_OUTPUTS
from .export import ExportError, ExportWrapper

__all__ = ["cache_root", "import_openvino", "model_key", "openvino_core", "openvino_ir"]


def cache_root() -> Path:
    """Where converted models are kept (see the module docstring)."""
    if os.environ.get("YOLACT_LITE_CACHE"):
        return Path(os.environ["YOLACT_LITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "yolact_lite"


def model_key(model: nn.Module, config: Config, version: str) -> str:
    """A hex digest of the model's tensors, its model config and ``version`` (OpenVINO's)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config.to_dict()["model"], sort_keys=True, default=str).encode())
    digest.update(version.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def openvino_ir(model: nn.Module, config: Config) -> Path:
    """The ``model.xml`` of ``model`` (an eval model on the CPU, fused or not) for ``config``'s
    input size, from the cache or converted now (a few seconds). The graph takes a batch
    [B, 3, S, S] (any B) and returns :data:`NETWORK_OUTPUTS` under their names. Raises
    :class:`ExportError` (one line) when OpenVINO is missing or cannot convert the model."""
    ov = import_openvino()
    root = cache_root() / "openvino"
    entry = root / model_key(model, config, ov.__version__)
    if (entry / "model.xml").is_file() and (entry / "model.bin").is_file():
        return entry / "model.xml"
    try:  # a cache that cannot be written fails before the seconds of conversion
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    except OSError as exc:
        raise ExportError(f"cannot write the OpenVINO cache under {root}: {exc.strerror or exc} "
                          "(set YOLACT_LITE_CACHE to a writable folder)") from None
    try:
        converted = _convert(ov, model, config)
        ov.save_model(converted, str(scratch / "model.xml"), compress_to_fp16=False)  # fp16 weights would not be exact
        scratch.rename(entry)
    except OSError:  # another process stored the same entry first: keep theirs
        if not (entry / "model.xml").is_file():
            raise ExportError(f"cannot write the OpenVINO cache under {root} (set YOLACT_LITE_CACHE to a "
                              "writable folder)") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entry / "model.xml"


def import_openvino():
    """The ``openvino`` module, without its usage reports.

    Importing ``openvino`` starts its telemetry (an id file under ``~/intel``) and
    ``openvino.convert_model`` reports each conversion to Google Analytics unless a consent
    file says no; a library running a user's model on their behalf must not do that. OpenVINO
    has its own no-op stand-in, used where the ``openvino-telemetry`` package is missing: the
    first import here hides that package so OpenVINO takes the stand-in; where ``openvino``
    was imported earlier, its converter modules are pointed at the stand-in. Raises
    :class:`ExportError` when OpenVINO is not installed."""
    first = "openvino" not in sys.modules
    hidden = first and "openvino_telemetry" not in sys.modules
    if hidden:
        sys.modules["openvino_telemetry"] = None  # makes `import openvino_telemetry` raise ImportError
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO is not installed: pip install openvino") from None
    finally:
        if hidden:
            del sys.modules["openvino_telemetry"]
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils
    except ImportError:  # another layout: nothing we know to switch off
        return ov
    for module in (convert_impl, telemetry_utils):
        if hasattr(module, "tm"):
            module.tm = telemetry_stub
    return ov


_CORE_LOCK = threading.Lock()


def openvino_core():
    """The one ``openvino.Core`` of this process, made on first use and kept until exit.

    Each Core loads its own CPU plugin, and each plugin swaps a larger alternate signal stack
    into the thread that loads it, saving the one before and unmapping its own when the Core
    is released. Cores released in another order than they were made (or on another thread)
    leave a thread's signal stack pointing at unmapped memory; the next signal that Python
    handles there (SIGCHLD of a finished data-loader worker or subprocess: CPython handlers
    run on the alternate stack) then kills the process with SIGSEGV. One Core that is never
    released cannot do that."""
    ov = import_openvino()  # raises the one-line error where OpenVINO is missing
    with _CORE_LOCK:
        return _make_core(ov)


@functools.lru_cache(maxsize=1)
def _make_core(ov):
    return ov.Core()


def _convert(ov, model: nn.Module, config: Config):
    """``ov.Model`` of the export wrapper (decoded boxes, softmax scores), outputs named."""
    size = int(config.model.input_size)
    param = next(model.parameters())
    wrapper = ExportWrapper(model, config).eval()
    example = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: expected here
            converted = ov.convert_model(wrapper, example_input=example,
                                         input=[(ov.PartialShape([-1, 3, size, size]), ov.Type.f32)])
    except Exception as exc:  # OpenVINO's frontends raise their own exception types
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ExportError(f"OpenVINO cannot convert this model: {first}") from None
    for port, name in zip(converted.outputs, NETWORK_OUTPUTS):
        port.get_tensor().set_names({name})
    return converted
