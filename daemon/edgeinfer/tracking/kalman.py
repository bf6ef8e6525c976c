"""A constant-velocity Kalman filter over many boxes at once (numpy, no loops over tracks).

State per box: (cx, cy, a, h, vx, vy, va, vh) with a = w / h, as in SORT/DeepSORT/ByteTrack; the noise
scales with the box height, so near and far objects are filtered alike. The weights are ByteTrack's.
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


def initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, 4] xyah measurements -> ([N, 8] means, [N, 8, 8] covariances) of new tracks."""
    n = measurements.shape[0]
    mean = np.zeros((n, 8))
    mean[:, :4] = measurements
    h = measurements[:, 3]
    std = np.stack([2 * _POSITION_WEIGHT * h, 2 * _POSITION_WEIGHT * h, np.full(n, 1e-2), 2 * _POSITION_WEIGHT * h,
                    10 * _VELOCITY_WEIGHT * h, 10 * _VELOCITY_WEIGHT * h, np.full(n, 1e-5),
                    10 * _VELOCITY_WEIGHT * h], axis=1)
    covariance = np.zeros((n, 8, 8))
    covariance[:, range(8), range(8)] = std**2
    return mean, covariance


def predict(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step ahead for every row (new arrays)."""
    h = mean[:, 3]
    n = mean.shape[0]
    std = np.stack([_POSITION_WEIGHT * h, _POSITION_WEIGHT * h, np.full(n, 1e-2), _POSITION_WEIGHT * h,
                    _VELOCITY_WEIGHT * h, _VELOCITY_WEIGHT * h, np.full(n, 1e-5), _VELOCITY_WEIGHT * h], axis=1)
    # x' = F x and P' = F P F^T with F = [[I, I], [0, I]], written out: no BLAS call (on a loaded box its
    # threads cost milliseconds for these tiny products)
    mean = mean.copy()
    mean[:, :4] += mean[:, 4:]
    p = covariance
    covariance = p.copy()
    covariance[:, :4, :4] += p[:, :4, 4:] + p[:, 4:, :4] + p[:, 4:, 4:]
    covariance[:, :4, 4:] += p[:, 4:, 4:]
    covariance[:, 4:, :4] += p[:, 4:, 4:]
    covariance[:, range(8), range(8)] += std**2
    return mean, covariance


def update(mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct each row with its [N, 4] xyah measurement (new arrays)."""
    h = mean[:, 3]
    n = mean.shape[0]
    std = np.stack([_POSITION_WEIGHT * h, _POSITION_WEIGHT * h, np.full(n, 1e-1), _POSITION_WEIGHT * h], axis=1)
    projected_cov = covariance[:, :4, :4].copy()
    projected_cov[:, range(4), range(4)] += std**2
    # K = P H^T S^-1, with H selecting the first four state entries; S is symmetric, so solve S K^T = H P
    gain = np.linalg.solve(projected_cov, covariance[:, :4, :]).transpose(0, 2, 1)  # [N, 8, 4]
    innovation = measurements - mean[:, :4]
    mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    covariance = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)  # 8x4 stacks: no BLAS threads
    return mean, covariance
