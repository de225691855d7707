"""Compiled CPU kernels (C++ with AVX-512 / AVX2, ``csrc/``), built by ``pip install`` when a C++17
compiler is present. ``kernels._dispatch.HAS_CPU_KERNELS`` says whether they can run here."""
