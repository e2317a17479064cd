"""Quality report of one clip or window, vectorised over the whole clip.

Everything is measured on the canonical representation — body units (1 = chain height) at the
clip's fps, per *second* — so thresholds mean the same for every source, scale and frame rate
(the published per-frame thresholds changed meaning with fps and scale).

Checks (each value is a column of the dataset; thresholds live in `QualityThresholds` and are set
from `configs/preprocess.yaml`):

- finite:            every coordinate finite.
- max_root_speed:    max_t |v_pelvis| (units/s), central differences (see physics.py).
                     Limit 8 units/s (~14 m/s, faster than any human sprint).
- max_root_accel:    max_t |a_pelvis| (units/s^2). Limit 60 units/s^2 (~10 g for a 1.75 m body).
- explosion_ratio:   fraction of frames in which any joint moves faster than 20 units/s
                     (~35 m/s, beyond a kicking foot or punching hand: a glitch or teleport).
- limb_error:        max over the 12 v3 bones of max_t |L_t - median L| / median L, measured on
                     the 3D joints *before* projection (projection foreshortens limbs, so a 2D
                     length check rejects good data — the published 15% 2D check did). With 2D
                     only (generated motion) the stretch-only proxy max_t L_t / q90(L) - 1 is used.
- jitter:            mean over frames and joints of |d^3 x / dt^3| (units/s^3), third finite
                     difference times fps^3 — high-frequency shake. Real mocap (Bandai, 25 fps):
                     median 41, 95th percentile 257, max 424.
- static_ratio:      fraction of frames in which no joint moves faster than 0.02 units/s (frozen).
- repetition:        max over lags >= 0.5 s of the fraction of frames whose pelvis-relative pose
                     equals the pose `lag` frames later to within 0.004 units (RMS over joints)
                     while moving (some joint faster than 0.3 units/s; holding still is
                     static_ratio's business): copy-pasted loops. Real gait never repeats exactly.
- foot_skate:        mean horizontal speed (units/s) of an ankle while in contact (within 0.02
                     units of its lowest height and moving vertically slower than 0.1 units/s).
- foot_skate_ratio:  fraction of contact (ankle, frame) pairs sliding faster than 0.5 units/s.
                     Without toe joints the ankle moves a little at heel-off, so real mocap is not
                     0: Bandai median 0.02, 95th percentile 0.19.

Combined score in [0, 1]: 0 if any coordinate is non-finite, else the weighted mean of per-check
scores, each 1 inside its comfortable range and falling linearly to 0 (see `_ramp`):

    0.20 physics (speed & accel vs limits) + 0.15 limb + 0.20 jitter + 0.10 static
    + 0.15 explosion + 0.10 repetition + 0.10 foot skate

`physics_valid` (the SFT card's "strict physics validation") requires finite values, root speed
and acceleration within limits, no explosion frame, and limb_error <= limb_tolerance.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from .physics import PELVIS_SLICE
from .skeleton import _V3_END, _V3_START, J, v3_to_joints

QUALITY_COLUMNS = (
    "finite", "max_root_speed", "max_root_accel", "explosion_ratio", "limb_error", "jitter",
    "static_ratio", "repetition", "foot_skate", "foot_skate_ratio", "physics_valid", "quality",
)


@dataclass(frozen=True)
class QualityThresholds:
    max_root_speed: float = 8.0        # units/s
    max_root_accel: float = 60.0       # units/s^2
    explosion_speed: float = 20.0      # units/s, any joint
    limb_tolerance: float = 0.15       # relative bone-length deviation (strict validation)
    jitter_ok: float = 300.0           # units/s^3: score 1 at or below (real mocap 95th pct: 257)
    jitter_bad: float = 1200.0         # units/s^3: score 0 at or above
    static_speed: float = 0.02         # units/s
    repeat_tolerance: float = 0.004    # units, RMS over joints
    repeat_min_speed: float = 0.3      # units/s: frames slower than this don't count as repeats
    contact_height: float = 0.02       # units above the ankle's lowest point
    contact_vspeed: float = 0.1        # units/s
    skate_speed: float = 0.5           # units/s


def _ramp(x: float, good: float, bad: float) -> float:
    """1 at x <= good, 0 at x >= bad, linear between."""
    if not np.isfinite(x):
        return 0.0
    return float(np.clip((bad - x) / (bad - good), 0.0, 1.0))


def _speeds(x: np.ndarray, fps: float) -> np.ndarray:
    """[T, K, 2|3] -> [T-1, K] per-frame speeds (units/s)."""
    return np.linalg.norm(np.diff(x, axis=0), axis=-1) * fps


def quality_report(motion: np.ndarray, fps: float = 25.0, joints3d: np.ndarray | None = None,
                   th: QualityThresholds = QualityThresholds()) -> dict:
    """Score a [T, 48] v3 clip (valid frames only; pass `motion[mask]` for a padded window).

    joints3d: optional [T, 16, 3] body-unit joints before projection (for the 3D limb check).
    Returns a dict with every name in QUALITY_COLUMNS (floats, plus bools finite/physics_valid).
    """
    m = np.asarray(motion, dtype=np.float64)
    T = m.shape[0]
    rep: dict = {k: 0.0 for k in QUALITY_COLUMNS}
    finite = bool(np.isfinite(m).all()) and (joints3d is None or bool(np.isfinite(joints3d).all()))
    rep["finite"] = finite
    if not finite or T < 4:
        rep.update(physics_valid=False, quality=0.0)
        return rep
    j = v3_to_joints(m)  # [T, 16, 2]

    # root physics
    p = m[:, PELVIS_SLICE]
    v = np.linalg.norm(p[2:] - p[:-2], axis=-1) * fps / 2.0
    a = np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=-1) * fps * fps
    rep["max_root_speed"] = float(v.max())
    rep["max_root_accel"] = float(a.max())

    # joint speeds: explosion and static frames
    sp = _speeds(j, fps)  # [T-1, 16]
    max_sp = sp.max(axis=1)
    rep["explosion_ratio"] = float((max_sp > th.explosion_speed).mean())
    rep["static_ratio"] = float((max_sp < th.static_speed).mean())

    # limb lengths: 3D when we have it, else the 2D stretch proxy
    if joints3d is not None:
        L = np.linalg.norm(joints3d[:, _V3_END] - joints3d[:, _V3_START], axis=-1)  # [T, 12]
        med = np.median(L, axis=0)
        rel = np.abs(L - med) / np.maximum(med, 1e-6)
        rep["limb_error"] = float(rel.max())
    else:
        L = np.linalg.norm(j[:, _V3_END] - j[:, _V3_START], axis=-1)
        q90 = np.quantile(L, 0.9, axis=0)
        rep["limb_error"] = float(np.max(L.max(axis=0) / np.maximum(q90, 1e-6) - 1.0))

    # jitter: third difference
    d3 = np.diff(j, n=3, axis=0)
    rep["jitter"] = float(np.linalg.norm(d3, axis=-1).mean() * fps ** 3) if T > 3 else 0.0

    # repetition: exact loops of the pelvis-relative pose
    rep["repetition"] = _repetition(j, fps, th.repeat_tolerance, moving=np.r_[max_sp, max_sp[-1:]] > th.repeat_min_speed)

    # foot skate: ankles in contact that slide horizontally
    ank = j[:, [J["l_ankle"], J["r_ankle"]]]  # [T, 2, 2]
    low = ank[..., 1].min(axis=0)  # [2]
    vel = np.diff(ank, axis=0) * fps  # [T-1, 2, 2]
    contact = (ank[1:, :, 1] - low <= th.contact_height) & (np.abs(vel[..., 1]) < th.contact_vspeed)
    hs = np.abs(vel[..., 0])
    if contact.any():
        rep["foot_skate"] = float(hs[contact].mean())
        rep["foot_skate_ratio"] = float((hs[contact] > th.skate_speed).mean())

    phys_score = min(_ramp(rep["max_root_speed"], 0.5 * th.max_root_speed, 1.5 * th.max_root_speed),
                     _ramp(rep["max_root_accel"], 0.5 * th.max_root_accel, 1.5 * th.max_root_accel))
    scores = {
        "physics": (0.20, phys_score),
        "limb": (0.15, _ramp(rep["limb_error"], 0.05, 0.30)),
        "jitter": (0.20, _ramp(rep["jitter"], th.jitter_ok, th.jitter_bad)),
        "static": (0.10, _ramp(rep["static_ratio"], 0.2, 0.9)),
        "explosion": (0.15, _ramp(rep["explosion_ratio"], 0.0, 0.1)),
        "repetition": (0.10, _ramp(rep["repetition"], 0.2, 0.8)),
        "skate": (0.10, _ramp(rep["foot_skate_ratio"], 0.25, 0.75)),
    }
    rep["quality"] = float(sum(w * s for w, s in scores.values()))
    rep["physics_valid"] = bool(
        rep["max_root_speed"] <= th.max_root_speed and rep["max_root_accel"] <= th.max_root_accel
        and rep["explosion_ratio"] == 0.0 and rep["limb_error"] <= th.limb_tolerance)
    return rep


@functools.lru_cache(maxsize=8)
def _upper_pairs(T: int, min_lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, lag = j - i) for all frame pairs with min_lag <= lag <= T // 2 (cached per T)."""
    i, j = np.triu_indices(T, k=min_lag)
    keep = (j - i) <= T // 2
    return i[keep], j[keep], (j - i)[keep]


def _repetition(j: np.ndarray, fps: float, tol: float, moving: np.ndarray) -> float:
    """Max over lags (0.5 s .. T/2) of the fraction of frames t with RMS_joints |q_t - q_{t+lag}|
    < tol, where q is the pose relative to the pelvis. One [T, T] distance matrix via a matmul and
    one bincount over its upper diagonals (no loop over lags)."""
    T = j.shape[0]
    min_lag = max(2, int(round(0.5 * fps)))
    if T < 2 * min_lag:
        return 0.0
    # float32: a [T, 32] float64 matmul can cost 10x more (multi-threaded BLAS on tiny inputs)
    q = (j - j[:, J["pelvis"]:J["pelvis"] + 1]).reshape(T, -1).astype(np.float32)
    sq = (q * q).sum(axis=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (q @ q.T)) / j.shape[1]
    ii, jj, lag = _upper_pairs(T, min_lag)
    hits = np.bincount(lag, weights=(d2[ii, jj] < tol * tol) & moving[ii], minlength=T // 2 + 1)[min_lag:]
    return float((hits / (T - np.arange(min_lag, T // 2 + 1))).max())


def thresholds_dict(th: QualityThresholds) -> dict:
    return asdict(th)
