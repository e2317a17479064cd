"""Per-frame root physics of a 2D stick figure, by one rule for every source.

physics[t] = (vx, vy, ax, ay, mx, my) of the pelvis (the midpoint of the hips), in body units per
second and per second squared, unit mass (so momentum = velocity):

    v_t = (p_{t+1} - p_{t-1}) * fps / 2            central difference
    a_t = (p_{t+1} - 2 p_t + p_{t-1}) * fps^2      central second difference
    edges: v and a copy their nearest interior value (no spurious first-frame spike, which the
    published forward-difference rule produced: a_1 = v_1 * fps).

Frames outside the mask (padding) get zeros.
"""

from __future__ import annotations

import numpy as np

PELVIS_SLICE = slice(10, 12)  # v3: lower_torso end = pelvis


def pelvis_track(motion: np.ndarray) -> np.ndarray:
    """[..., T, 48] -> [..., T, 2] pelvis positions."""
    return np.asarray(motion)[..., PELVIS_SLICE]


def root_physics(motion: np.ndarray, fps: float = 25.0, mask: np.ndarray | None = None) -> np.ndarray:
    """[T, 48] v3 motion -> [T, 6] float32 physics (see module docstring)."""
    m = np.asarray(motion, dtype=np.float64)
    T = m.shape[0]
    n = int(mask.sum()) if mask is not None else T
    out = np.zeros((T, 6), np.float32)
    if n < 3:
        return out
    p = m[:n, PELVIS_SLICE]
    v = np.empty_like(p)
    a = np.empty_like(p)
    v[1:-1] = (p[2:] - p[:-2]) * (fps / 2.0)
    a[1:-1] = (p[2:] - 2.0 * p[1:-1] + p[:-2]) * fps * fps
    v[0], v[-1] = v[1], v[-2]
    a[0], a[-1] = a[1], a[-2]
    out[:n, 0:2] = v
    out[:n, 2:4] = a
    out[:n, 4:6] = v
    return out
