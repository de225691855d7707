"""Metadata lives in pyproject.toml; this file only declares the optional C++ extension.

``kernels.cpu_impl._nearest_code`` holds the CPU nearest-code kernels (AVX-512 and AVX2, chosen at run
time). It needs a C++17 compiler; where the build fails (no compiler, not x86-64) the install still
succeeds and ``kernels.nearest_code`` runs faiss or PyTorch on CPU instead (``python -m kernels`` says
which path runs).
"""

from setuptools import Extension, setup

CSRC = "kernels/cpu_impl/csrc"

setup(
    ext_modules=[
        Extension(
            "kernels.cpu_impl._nearest_code",
            sources=[f"{CSRC}/module.cpp", f"{CSRC}/nearest_code_avx512.cpp", f"{CSRC}/nearest_code_avx2.cpp"],
            depends=[f"{CSRC}/nearest_code_common.h", f"{CSRC}/nearest_code_kernel.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
