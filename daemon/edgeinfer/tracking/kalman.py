"""A constant-velocity Kalman filter over many boxes at once (numpy, no loops over tracks, no BLAS).

State per box: (cx, cy, a, h) and their velocities, a = w / h, as in SORT/DeepSORT/ByteTrack; the noise scales
with the box height, so near and far objects are filtered alike. The weights are ByteTrack's.

With the motion model x' = x + v, diagonal process and measurement noise and a diagonal start, the 8 x 8
covariance never couples two coordinates: it is four independent 2 x 2 blocks (a coordinate and its velocity).
So each box keeps only those, as [4, 3] = (var(x), cov(x, v), var(v)) per coordinate, and the filter's matrix
products and the 4 x 4 solve become elementwise arithmetic; tests/unit/test_kalman.py checks it against the
full-matrix equations.
"""

from __future__ import annotations

import numpy as np

_POSITION_WEIGHT = 1.0 / 20
_VELOCITY_WEIGHT = 1.0 / 160


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    w = xyah[:, 2] * xyah[:, 3]
    half_w, half_h = w / 2, xyah[:, 3] / 2
    return np.stack([xyah[:, 0] - half_w, xyah[:, 1] - half_h, xyah[:, 0] + half_w, xyah[:, 1] + half_h], axis=1)


def _stds(h: np.ndarray, position: float, aspect: float, weight: float) -> np.ndarray:
    """[N, 4] standard deviations (cx, cy, a, h) scaled by the box height; `aspect` is a's own."""
    std = np.empty((h.shape[0], 4))
    std[:, 0] = std[:, 1] = std[:, 3] = weight * position * h
    std[:, 2] = aspect
    return std


def initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, 4] xyah measurements -> ([N, 8] means, [N, 4, 3] covariance blocks) of new tracks."""
    n = measurements.shape[0]
    mean = np.zeros((n, 8))
    mean[:, :4] = measurements
    h = measurements[:, 3]
    covariance = np.zeros((n, 4, 3))
    covariance[:, :, 0] = _stds(h, _POSITION_WEIGHT, 1e-2, 2.0) ** 2
    covariance[:, :, 2] = _stds(h, _VELOCITY_WEIGHT, 1e-5, 10.0) ** 2
    return mean, covariance


def predict(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step ahead for every row (new arrays)."""
    h = mean[:, 3]
    mean = mean.copy()
    mean[:, :4] += mean[:, 4:]
    a, b, c = covariance[:, :, 0], covariance[:, :, 1], covariance[:, :, 2]
    out = np.empty_like(covariance)
    out[:, :, 0] = a + 2 * b + c + _stds(h, _POSITION_WEIGHT, 1e-2, 1.0) ** 2
    out[:, :, 1] = b + c
    out[:, :, 2] = c + _stds(h, _VELOCITY_WEIGHT, 1e-5, 1.0) ** 2
    return mean, out


def update(mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct each row with its [N, 4] xyah measurement (new arrays)."""
    a, b, c = covariance[:, :, 0], covariance[:, :, 1], covariance[:, :, 2]
    innovation_var = a + _stds(mean[:, 3], _POSITION_WEIGHT, 1e-1, 1.0) ** 2
    gain_position, gain_velocity = a / innovation_var, b / innovation_var
    innovation = measurements - mean[:, :4]
    mean = mean.copy()
    mean[:, :4] += gain_position * innovation
    mean[:, 4:] += gain_velocity * innovation
    out = np.empty_like(covariance)
    out[:, :, 0] = a - a * gain_position
    out[:, :, 1] = b - a * gain_velocity
    out[:, :, 2] = c - b * gain_velocity
    return mean, out
