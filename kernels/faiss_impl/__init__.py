"""The optional faiss backend (``pip install faiss-cpu``) of the CPU ops. Imported only when the
dispatcher picks it; ``kernels._dispatch.HAS_FAISS`` says whether it can run."""
