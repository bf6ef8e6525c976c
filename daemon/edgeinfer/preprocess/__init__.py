"""Preprocessing: frames -> network input buffer (letterbox/stretch, colour order, normalisation, layout).

`cpu` is the OpenCV/numpy implementation; a GPU implementation can reuse `PreprocessConfig`, `Transform`,
`fit_transform` and `normalisation_coefficients` so both map boxes back identically.
"""

from edgeinfer.preprocess.cpu import (
    PreprocessConfig,
    PreprocessError,
    Preprocessor,
    Transform,
    fit_transform,
    normalisation_coefficients,
)

__all__ = [
    "PreprocessConfig",
    "PreprocessError",
    "Preprocessor",
    "Transform",
    "fit_transform",
    "normalisation_coefficients",
]
