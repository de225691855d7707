"""Image and video tokenizers for transformers, on the fused kernels of the ``kernels`` package."""

__version__ = "0.1.0"
