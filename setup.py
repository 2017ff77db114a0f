"""Ahead-of-time build of the ops of csrc/ (loaded by csrc/ops.py): the one-hot surrogate, the
exact knapsack solver (knapsack_exact, csrc/knapsack.cpp) and the CSP local improvement
(csp_improve, csrc/csp_improve.cpp):

    python setup.py build_ext --inplace          # or: pip install --no-build-isolation -e .

It makes _ldf_ip_ops*.so at the top of the repository, which csrc/ops.py imports before trying a
JIT build. The CUDA kernels are built too when torch sees a GPU and CUDA_HOME is set (or
LDF_IP_CUDA=1, for a machine that builds for a GPU it does not have); otherwise the C++ CPU op
alone. The module's WITH_CUDA records which.
"""

import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

from csrc.ops import (
    CPU_SOURCES,
    CUDA_FLAGS,
    CUDA_SOURCE,
    CXX_FLAGS,
    LINK_FLAGS,
    PREBUILT_MODULE,
    WITH_CUDA_MACRO,
)

FORCE_CUDA_ENV = "LDF_IP_CUDA"

build_cuda = CUDA_HOME is not None and (
    torch.cuda.is_available() or os.environ.get(FORCE_CUDA_ENV) == "1"
)
sources = [os.path.join("csrc", source) for source in CPU_SOURCES]
if build_cuda:
    sources.append(os.path.join("csrc", CUDA_SOURCE))
    extension = CUDAExtension(
        PREBUILT_MODULE,
        sources,
        define_macros=[(WITH_CUDA_MACRO, "1")],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": CUDA_FLAGS},
        extra_link_args=LINK_FLAGS,
    )
else:
    extension = CppExtension(
        PREBUILT_MODULE,
        sources,
        extra_compile_args=CXX_FLAGS,
        extra_link_args=LINK_FLAGS,
    )

setup(
    name="ldf-ip",
    version="0.1.0",
    description="Machine learning for integer programming with the Lagrangian dual framework",
    py_modules=["common"],
    packages=["csrc"],
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
)
