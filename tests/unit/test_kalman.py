"""The tracker's Kalman filter keeps the covariance as four 2 x 2 blocks; checked here against the full 8 x 8
equations of ByteTrack's filter (x' = F x, P' = F P F^T + Q; K = P H^T S^-1 ...) written out with matrices."""

from __future__ import annotations

import numpy as np

from edgeinfer.tracking import kalman

WP, WV = 1 / 20, 1 / 160
F = np.eye(8)
F[:4, 4:] = np.eye(4)
H = np.eye(4, 8)


def full(block: np.ndarray) -> np.ndarray:
    """[4, 3] blocks -> the 8 x 8 covariance."""
    p = np.zeros((8, 8))
    for i in range(4):
        p[i, i], p[i, i + 4], p[i + 4, i], p[i + 4, i + 4] = block[i, 0], block[i, 1], block[i, 1], block[i, 2]
    return p


def test_the_block_filter_equals_bytetracks_full_matrix_filter_over_a_sequence():
    rng = np.random.default_rng(3)
    boxes = rng.uniform(50, 400, (6, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(20, 120, (6, 2))
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(boxes))
    ref_mean = mean.copy()
    h = ref_mean[:, 3]
    ref_cov = np.stack([np.diag(np.r_[[2 * WP * v, 2 * WP * v, 1e-2, 2 * WP * v],
                                      [10 * WV * v, 10 * WV * v, 1e-5, 10 * WV * v]] ** 2) for v in h])
    for step in range(20):
        h = ref_mean[:, 3]
        q = [np.diag(np.r_[[WP * v, WP * v, 1e-2, WP * v], [WV * v, WV * v, 1e-5, WV * v]] ** 2) for v in h]
        ref_mean = ref_mean @ F.T
        ref_cov = np.stack([F @ p @ F.T + qi for p, qi in zip(ref_cov, q, strict=True)])
        mean, cov = kalman.predict(mean, cov)
        if step % 3 != 2:  # some steps without a measurement (a lost track coasting)
            z = kalman.xyxy_to_xyah(boxes + rng.normal(0, 3, boxes.shape) + step * 2.0)
            for i in range(len(z)):
                r = np.diag(np.array([WP * ref_mean[i, 3], WP * ref_mean[i, 3], 1e-1, WP * ref_mean[i, 3]]) ** 2)
                s = H @ ref_cov[i] @ H.T + r
                k = ref_cov[i] @ H.T @ np.linalg.inv(s)
                ref_mean[i] = ref_mean[i] + k @ (z[i] - H @ ref_mean[i])
                ref_cov[i] = ref_cov[i] - k @ s @ k.T
            mean, cov = kalman.update(mean, cov, z)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.stack([full(c) for c in cov]), ref_cov, rtol=1e-9, atol=1e-12)
