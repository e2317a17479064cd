"""3D -> 2D, done right: one fixed camera per clip, chosen from the clip's own motion.

The published converters projected AMASS/HumanML3D onto the ground plane (a view from above) and
then rotated every frame upright, which erased turns, falls and lying down. Here:

1. Every reader already delivers +Y-up joints in metres.
2. The body is scaled to 1 unit = its 3D chain height (`skeleton.chain_height`).
3. ONE vertical projection plane per clip: `auto` picks the plane through the horizontal direction
   u of largest joint-motion variance (principal axis of the 2x2 covariance of every joint's
   horizontal displacement from its own time-mean). Travel, a bow or a kick vary along the facing
   direction -> a side view; a wave, a clap or a sidestep vary laterally -> a front view.
4. The sign of the screen x axis comes from the body's mean facing (hips + shoulders), so side
   views always face +x and front views face the viewer (the figure's left on screen right).
5. Origin: the pelvis starts at x = 0; the floor (2nd percentile over frames of the lowest joint)
   is y = 0. Global translation, turns and falls are kept.

Because u and the facing are computed from the clip, rotating a clip about the vertical axis (or
translating it) gives the identical 2D figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skeleton import J, chain_height

UP = np.array([0.0, 1.0, 0.0])
#: below this RMS horizontal joint displacement (body units) a clip counts as near-static and
#: `auto` shows it from the front (the most readable view of a still pose).
STATIC_SPREAD = 0.03


@dataclass
class View:
    """The per-clip camera: 2D = ((p - origin) . x_axis, p.y - floor) * scale."""

    name: str              # "side" or "front" (what the chosen plane is closest to)
    mode: str              # the requested mode: auto | side | front
    x_axis: np.ndarray     # [3] unit horizontal screen-x direction in world coordinates
    depth_axis: np.ndarray  # [3] unit horizontal direction towards the viewer (x_axis x up)
    angle_deg: float       # angle between x_axis and the body's facing direction
    scale: float           # 1 / chain height (metres -> body units)
    origin_x: float        # world coordinate along x_axis mapped to x = 0
    floor_y: float         # world height mapped to y = 0

    def as_dict(self) -> dict:
        return {"view": self.name, "mode": self.mode, "angle_deg": round(self.angle_deg, 2),
                "scale": self.scale, "x_axis": [round(float(v), 6) for v in self.x_axis]}


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else fallback


def body_axes(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, facing) mean horizontal unit vectors of a [T,16,3] clip.

    left = (l_hip - r_hip) + (l_shoulder - r_shoulder), averaged as unit vectors over frames;
    facing = left x up (a right-handed body: facing +z with up +y puts the left hand at +x)."""
    lv = (joints[:, J["l_hip"]] - joints[:, J["r_hip"]]) + (joints[:, J["l_shoulder"]] - joints[:, J["r_shoulder"]])
    lv[:, 1] = 0.0
    n = np.linalg.norm(lv, axis=1, keepdims=True)
    ok = (n[:, 0] > 1e-9) & np.isfinite(n[:, 0])
    per_frame = np.where(ok[:, None], lv / np.where(n > 1e-9, n, 1.0), 0.0)
    left = per_frame.mean(axis=0)
    if np.linalg.norm(left) < 0.2 and ok.any():  # the body turned around: the mean cancels out
        left = per_frame[np.argmax(ok)]
    left = _unit(left, np.array([1.0, 0.0, 0.0]))
    facing = np.cross(left, UP)
    return left, _unit(facing, np.array([0.0, 0.0, 1.0]))


def choose_view(joints: np.ndarray, mode: str = "auto") -> View:
    """Pick the clip's camera from [T,16,3] +Y-up joints (any units)."""
    if mode not in ("auto", "side", "front"):
        raise ValueError(f"view must be auto, side or front, got {mode!r}")
    h = chain_height(joints)
    if not np.isfinite(h) or h <= 0:
        raise ValueError("degenerate skeleton: zero or non-finite chain height")
    left, facing = body_axes(joints)
    if mode == "side":
        x_axis, name = facing, "side"
    elif mode == "front":
        x_axis, name = left, "front"
    else:
        hz = joints[:, :, [0, 2]].astype(np.float64)
        hz = (hz - hz.mean(axis=0, keepdims=True)).reshape(-1, 2)
        cov = hz.T @ hz
        evals, evecs = np.linalg.eigh(cov)
        spread = np.sqrt(max(evals[-1], 0.0) / max(len(hz), 1)) / h
        if spread < STATIC_SPREAD:
            x_axis, name = left, "front"
        else:
            u = np.array([evecs[0, -1], 0.0, evecs[1, -1]])
            along_f, along_l = float(u @ facing), float(u @ left)
            if abs(along_f) >= abs(along_l):
                x_axis, name = u * np.sign(along_f or 1.0), "side"
            else:
                x_axis, name = u * np.sign(along_l or 1.0), "front"
    x_axis = _unit(x_axis, np.array([1.0, 0.0, 0.0]))
    depth = np.cross(x_axis, UP)
    angle = float(np.degrees(np.arctan2(np.cross(facing, x_axis) @ UP, facing @ x_axis)))
    origin_x = float(joints[0, J["pelvis"]] @ x_axis)
    lowest = np.nanmin(joints[:, :, 1], axis=1)
    floor_y = float(np.nanpercentile(lowest, 2))
    return View(name, mode, x_axis, depth, angle, 1.0 / h, origin_x, floor_y)


def project(joints: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    """[T,16,3] world joints -> ([T,16,2] screen joints, [T,16,3] camera-frame joints), both in
    body units. Camera frame = (screen x, up, towards viewer), so 2D = its first two columns."""
    p = joints.astype(np.float64)
    x = p @ view.x_axis - view.origin_x
    y = p[..., 1] - view.floor_y
    z = p @ view.depth_axis
    cam = np.stack([x, y, z - z[0, J["pelvis"]]], axis=-1) * view.scale
    return cam[..., :2].astype(np.float32), cam.astype(np.float32)
