"""Image and video tokenizers for transformers, on the fused kernels of the ``kernels`` package."""

from .models import Tokenizer, TokenizerConfig, VideoTokenizer, VideoTokenizerConfig, load_tokenizer

__version__ = "0.1.0"

__all__ = ["Tokenizer", "TokenizerConfig", "VideoTokenizer", "VideoTokenizerConfig", "__version__", "load_tokenizer"]
