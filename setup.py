"""Builds the compiled extension ``yolact_lite._C`` (Fast NMS).

Package metadata lives in pyproject.toml; this file only declares the
extension. Install with ``pip install --no-build-isolation -e .`` so the
extension is compiled against the torch already installed.

The CUDA kernel is added when nvcc is found (CUDA_HOME or PATH), torch is a
CUDA build, and YOLACT_LITE_NO_CUDA is unset (or "0").
"""
import os
import sys
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension


def _want_cuda() -> bool:
    if os.environ.get("YOLACT_LITE_NO_CUDA", "0") not in ("", "0"):
        return False
    home = cpp_extension.CUDA_HOME
    return (torch.version.cuda is not None and home is not None
            and (Path(home) / "bin" / "nvcc").exists())


def _extension():
    sources = ["csrc/bindings.cpp", "csrc/fast_nms_cpu.cpp"]
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # -ffp-contract=off / --fmad=false: no FMA contraction, so IoU values are
    # bitwise identical to torch's elementwise ops (the reference).
    # -fno-trapping-math lets GCC vectorise the branch-free IoU loop (values
    # are unchanged: no reassociation, no fast-math).
    cxx = ["-O3", "-ffp-contract=off", "-fno-trapping-math", *openmp]
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=openmp)
    if not _want_cuda():
        return cpp_extension.CppExtension("yolact_lite._C", sources, **kwargs)
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
