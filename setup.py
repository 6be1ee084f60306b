"""Builds the compiled extension ``yolact_lite._C`` (Fast NMS).

Package metadata lives in pyproject.toml; this file only declares the
extension. Install with ``pip install --no-build-isolation .`` (``-e`` for
development) so the extension is compiled against the torch already installed.

The CUDA kernel is added when torch is a CUDA build, YOLACT_LITE_NO_CUDA is
unset (or "0") and a usable CUDA toolkit is found: the first of CUDA_HOME,
CUDA_PATH, the toolkit around the ``nvcc`` on PATH and /usr/local/cuda that has
both ``bin/nvcc`` and the runtime library (``lib64/libcudart.so`` or
``lib/libcudart.so``). Otherwise the CPU-only extension is built, with a
one-line warning when torch could have used CUDA.
"""
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional

import torch
from setuptools import setup
from torch.utils import cpp_extension


def _candidate_cuda_homes() -> Iterator[Path]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            yield Path(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc:
        # A symlink or a wrapper script (e.g. /usr/local/bin/nvcc) may sit outside the
        # toolkit: try both the resolved location and the one on PATH.
        yield Path(os.path.realpath(nvcc)).parent.parent
        yield Path(nvcc).parent.parent
    yield Path("/usr/local/cuda")


def _usable_cuda_home(home: Path) -> bool:
    has_runtime = any((home / lib / "libcudart.so").exists() for lib in ("lib64", "lib"))
    return (home / "bin" / "nvcc").is_file() and has_runtime


def _cuda_home() -> Optional[Path]:
    """The CUDA toolkit to compile with, or None for a CPU-only build."""
    if os.environ.get("YOLACT_LITE_NO_CUDA", "0") not in ("", "0"):
        return None
    if torch.version.cuda is None:
        return None  # a CPU build of torch cannot load a CUDA extension
    tried = []
    for home in _candidate_cuda_homes():
        if _usable_cuda_home(home):
            return home
        if home not in tried:
            tried.append(home)
    print(f"WARNING: yolact_lite: no CUDA toolkit with bin/nvcc and lib64/libcudart.so "
          f"(tried {', '.join(map(str, tried))}); building the CPU-only extension",
          file=sys.stderr)
    return None


def _extension():
    sources = ["csrc/bindings.cpp", "csrc/fast_nms_cpu.cpp"]
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # -ffp-contract=off / --fmad=false: no FMA contraction, so IoU values are
    # bitwise identical to torch's elementwise ops (the reference).
    # -fno-trapping-math lets GCC vectorise the branch-free IoU loop (values
    # are unchanged: no reassociation, no fast-math).
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", *openmp]
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=openmp)
    home = _cuda_home()
    if home is None:
        return cpp_extension.CppExtension("yolact_lite._C", sources, **kwargs)
    # torch guessed its own CUDA_HOME at import (from the nvcc on PATH, which may be a
    # wrapper outside the toolkit); compile and link against the toolkit checked above.
    os.environ["CUDA_HOME"] = str(home)
    cpp_extension.CUDA_HOME = str(home)
    if not torch.cuda.is_available():
        # No GPU to detect the architecture from: build for A100 and H100.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    kwargs["extra_compile_args"]["nvcc"] = ["-O3", "--fmad=false"]
    kwargs["define_macros"] = [("WITH_CUDA", None)]
    return cpp_extension.CUDAExtension(
        "yolact_lite._C", sources + ["csrc/fast_nms_cuda.cu"], **kwargs)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
