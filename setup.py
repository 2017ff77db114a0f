"""Ahead-of-time build of the one-hot surrogate op of csrc/ (common.onehot_surrogate):

    python setup.py build_ext --inplace          # or: pip install --no-build-isolation -e .

It makes _ldf_ip_ops*.so at the top of the repository, which common.py imports before trying a JIT
build. The CUDA kernels are built too when torch sees a GPU and CUDA_HOME is set (or LDF_IP_CUDA=1,
for a machine that builds for a GPU it does not have); otherwise the C++ CPU op alone.
"""
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

cuda = CUDA_HOME is not None and (torch.cuda.is_available() or os.environ.get("LDF_IP_CUDA") == "1")
flags = {"cxx": ["-O3", "-fopenmp", "-fno-trapping-math"], "nvcc": ["-O3"]}
extension = (CUDAExtension if cuda else CppExtension)(
    "_ldf_ip_ops", ["csrc/onehot.cpp"] + ["csrc/onehot_cuda.cu"] * cuda,
    extra_compile_args=flags if cuda else flags["cxx"], extra_link_args=["-fopenmp"])

setup(
    name="ldf-ip",
    version="0.1.0",
    description="Machine learning for integer programming with the Lagrangian dual framework",
    py_modules=["common"],
    packages=[],
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
)
