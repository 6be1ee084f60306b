"""What this machine can do: the CPU's model and bf16/int8 instructions, and the CUDA device;
and how the C library should hand out memory for tensor work (:func:`keep_freed_memory`).

One place answers "is bf16 native here?" for the trainer, the predictor and the benchmarks.
The answer comes from torch's own CPU checks (the ones oneDNN uses to pick its kernels), with
``/proc/cpuinfo`` flags for the record.  Nothing is cached globally: the functions are cheap.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

__all__ = ["CpuInfo", "cpu_info", "cpu_has_native_bf16", "bf16_supported", "fp16_supported",
           "describe_machine", "resolve_device", "keep_freed_memory", "ISA_FLAGS"]

# /proc/cpuinfo flags that decide which low-precision kernels a CPU runs.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
             "amx_fp16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: Tuple[str, ...]  # the ISA_FLAGS this CPU has, in ISA_FLAGS order
    avx512_bf16: bool       # torch's check (what oneDNN will use)
    amx: bool               # AMX tiles (bf16/int8 matrix units)
    vnni: bool              # int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)

    @property
    def native_bf16(self) -> bool:
        """bf16 convolutions/matmuls run on bf16 hardware (AMX or AVX512-BF16), not emulated."""
        return self.amx or self.avx512_bf16

    def as_dict(self) -> Dict[str, object]:
        out = asdict(self)
        out["flags"] = " ".join(self.flags) or "none"
        out["native_bf16"] = self.native_bf16
        return out


def _proc_cpuinfo() -> Tuple[str, Tuple[str, ...]]:
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or "unknown", tuple(f for f in ISA_FLAGS if f in flags)


def _torch_cpu_check(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)  # private helpers; absent in older torch
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # pragma: no cover - a build without the check
        return False


def cpu_info() -> CpuInfo:
    model, flags = _proc_cpuinfo()
    amx = _torch_cpu_check("_is_amx_tile_supported") or "amx_bf16" in flags
    bf16 = _torch_cpu_check("_is_avx512_bf16_supported") or "avx512_bf16" in flags
    vnni = _torch_cpu_check("_is_vnni_supported") or any(f in flags for f in ("avx512_vnni", "avx_vnni"))
    return CpuInfo(model=model, flags=flags, avx512_bf16=bf16, amx=amx, vnni=vnni)


def cpu_has_native_bf16() -> bool:
    return cpu_info().native_bf16


def bf16_supported(device: torch.device | str) -> bool:
    """bf16 autocast is worth running on ``device``: CUDA with bf16, or a CPU with native bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def fp16_supported(device: torch.device | str) -> bool:
    """fp16 inference/AMP: CUDA only (CPU fp16 kernels are emulated and slow)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device, checked; under DDP (``local_rank``
    given) CUDA means ``cuda:LOCAL_RANK``.  An unusable name is a one-line ConfigError."""
    from .errors import ConfigError

    name = str(name).strip().lower()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available")
        try:
            index = torch.device(name).index
        except RuntimeError:
            raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
        index = local_rank if local_rank is not None else (index or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    return torch.device("cpu")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed blocks of up to ``limit_bytes`` for reuse instead of handing them
    back to the kernel.

    By default glibc maps every block above a few MiB fresh and unmaps it on free, and trims
    the heap top on free: a training step that frees and re-allocates its activations then
    pays a page fault per 4 KiB of them, every step, in the kernel.  With the blocks kept, the
    process holds on to its peak memory (which it reaches every step anyway).  Process-wide;
    computations are unchanged.  Returns whether it was applied: not off Linux/glibc, not when
    the user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or preloads another
    allocator (jemalloc, tcmalloc), whose choice stands."""
    if platform.system() != "Linux":
        return False
    if any(os.environ.get(name) for name in _ALLOCATOR_ENV) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no such mallopt parameters
        return False
    limit = int(min(limit_bytes, 2**31 - 1))  # mallopt takes a C int
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def describe_machine(threads: Optional[int] = None) -> Dict[str, object]:
    """CPU model, ISA flags, cores, torch threads, load and CUDA device, for result files."""
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "isa_flags": " ".join(cpu.flags) or "none",
        "native_bf16": cpu.native_bf16,
        "amx": cpu.amx,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        # other processes competing for the cores distort timings
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else "n/a",
    }
