"""Triton kernels and their launchers. Imported only when the dispatcher picks the Triton path."""
