"""The canonical stick figure: 16 joints, the v3 12-segment layout (48 floats) and the legacy
5-segment layout (20 floats), with exact, vectorised conversions between them.

Facts (segment order, slots, connectivity rules) follow the published stick-gen v3 format so that
published data and weights stay compatible.

Conventions used everywhere in stickgen:

- +Y is up, +X is screen right; 2D coordinates are (x, y).
- Frame rate 25 fps; a training window is 250 frames (10 s) with a per-frame validity mask.
- Body scale: 1 unit = the skeleton's 3D *chain height* — the length of the bone chain
  ankle→knee→hip (mean of both legs) + pelvis→chest→neck, measured in 3D on the source skeleton
  (median over frames). It is pose-invariant (a bow or a fall does not rescale the figure); a
  standing person is about 1.15 units tall to the head centre. The head joint differs between
  rigs (Bandai's sits at the skull base, 0.065 m above the neck; CMU's 0.2 m), so it is excluded
  from the unit and the head segment is set to HEAD_LENGTH units along the rig's neck->head
  direction (`regularize_head`). The floor is y = 0 and the pelvis starts at x = 0.
"""

from __future__ import annotations

import numpy as np

#: The 16 canonical joints, in array order.
JOINTS: tuple[str, ...] = (
    "pelvis", "chest", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_hip", "l_knee", "l_ankle",
    "r_hip", "r_knee", "r_ankle",
)
J = {name: i for i, name in enumerate(JOINTS)}
NUM_JOINTS = len(JOINTS)

#: v3: 12 segments x (x1, y1, x2, y2) = 48 floats per frame.
V3_SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("head", "neck", "head"),
    ("upper_torso", "neck", "chest"),
    ("lower_torso", "chest", "pelvis"),
    ("l_upper_arm", "l_shoulder", "l_elbow"),
    ("l_forearm", "l_elbow", "l_wrist"),
    ("r_upper_arm", "r_shoulder", "r_elbow"),
    ("r_forearm", "r_elbow", "r_wrist"),
    ("l_thigh", "l_hip", "l_knee"),
    ("l_shin", "l_knee", "l_ankle"),
    ("r_thigh", "r_hip", "r_knee"),
    ("r_shin", "r_knee", "r_ankle"),
    ("pelvis_width", "l_hip", "r_hip"),
)
V3_SEGMENT_NAMES = tuple(s[0] for s in V3_SEGMENTS)
V3_DIM = 48
V3_SKELETON_TYPE = "stick_figure_12_segment_v3"

#: Legacy v1: 5 segments x 4 = 20 floats. There is one hip point (the pelvis) and no head.
LEGACY_SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("torso", "neck", "pelvis"),
    ("l_leg", "pelvis", "l_ankle"),
    ("r_leg", "pelvis", "r_ankle"),
    ("l_arm", "neck", "l_wrist"),
    ("r_arm", "neck", "r_wrist"),
)
LEGACY_SEGMENT_NAMES = tuple(s[0] for s in LEGACY_SEGMENTS)
LEGACY_DIM = 20
LEGACY_SKELETON_TYPE = "stick_figure_5_segment"

_V3_START = np.array([J[s] for _, s, _ in V3_SEGMENTS])
_V3_END = np.array([J[e] for _, _, e in V3_SEGMENTS])
_LEG_START = np.array([J[s] for _, s, _ in LEGACY_SEGMENTS])
_LEG_END = np.array([J[e] for _, _, e in LEGACY_SEGMENTS])

#: Where each joint is read back from a v3 frame: (segment index, 0 = start / 1 = end).
_V3_READ = {
    "neck": (0, 0), "head": (0, 1), "chest": (1, 1), "pelvis": (2, 1),
    "l_shoulder": (3, 0), "l_elbow": (3, 1), "l_wrist": (4, 1),
    "r_shoulder": (5, 0), "r_elbow": (5, 1), "r_wrist": (6, 1),
    "l_hip": (11, 0), "l_knee": (7, 1), "l_ankle": (8, 1),
    "r_hip": (11, 1), "r_knee": (9, 1), "r_ankle": (10, 1),
}
_V3_READ_IDX = np.array([_V3_READ[n][0] * 4 + _V3_READ[n][1] * 2 for n in JOINTS])

#: Limbs whose length must stay constant for a rigid skeleton (used by quality checks).
BONES: tuple[tuple[str, str], ...] = tuple((s, e) for name, s, e in V3_SEGMENTS)

#: Left/right joint pairs (for mirroring).
MIRROR_PERM = np.array([J[n.replace("l_", "#").replace("r_", "l_").replace("#", "r_")] for n in JOINTS])


class ConnectivityError(ValueError):
    """A v3 frame whose segments do not join up (names the first broken rule and frame)."""


def joints_to_v3(joints: np.ndarray) -> np.ndarray:
    """[..., 16, 2] joints -> [..., 48] v3 segments (float32). The pelvis is replaced by the
    midpoint of the hips so that the result always passes `validate_v3`."""
    j = np.asarray(joints, dtype=np.float32).copy()
    j[..., J["pelvis"], :] = 0.5 * (j[..., J["l_hip"], :] + j[..., J["r_hip"], :])
    seg = np.concatenate([j[..., _V3_START, :], j[..., _V3_END, :]], axis=-1)  # [..., 12, 4]
    return seg.reshape(*seg.shape[:-2], V3_DIM)


def v3_to_joints(v3: np.ndarray) -> np.ndarray:
    """[..., 48] -> [..., 16, 2], reading each joint from its fixed slot."""
    v = np.asarray(v3)
    if v.shape[-1] != V3_DIM:
        raise ValueError(f"expected last dim {V3_DIM}, got {v.shape}")
    xs = v[..., _V3_READ_IDX]
    ys = v[..., _V3_READ_IDX + 1]
    return np.stack([xs, ys], axis=-1)


def joints_to_legacy(joints: np.ndarray) -> np.ndarray:
    """[..., 16, 2] -> [..., 20] legacy segments; the single legacy hip is the pelvis midpoint."""
    j = np.asarray(joints, dtype=np.float32).copy()
    j[..., J["pelvis"], :] = 0.5 * (j[..., J["l_hip"], :] + j[..., J["r_hip"], :])
    seg = np.concatenate([j[..., _LEG_START, :], j[..., _LEG_END, :]], axis=-1)
    return seg.reshape(*seg.shape[:-2], LEGACY_DIM)


def legacy_to_joints(legacy: np.ndarray) -> np.ndarray:
    """[..., 20] -> [..., 16, 2]. The legacy figure has no head, elbows, knees, chest or hip
    width, so they are synthesised as the published upgrade did: hips = shoulders' anchor
    points collapse onto the pelvis/neck, knees and elbows at the limb midpoints, chest a quarter
    of the way from neck to pelvis, head = neck + 0.5 (neck - pelvis)."""
    s = np.asarray(legacy, dtype=np.float32).reshape(*np.shape(legacy)[:-1], 5, 4)
    neck, pelvis = s[..., 0, 0:2], s[..., 0, 2:4]
    l_ank, r_ank = s[..., 1, 2:4], s[..., 2, 2:4]
    l_wri, r_wri = s[..., 3, 2:4], s[..., 4, 2:4]
    out = np.zeros(s.shape[:-2] + (NUM_JOINTS, 2), np.float32)
    out[..., J["pelvis"], :] = pelvis
    out[..., J["neck"], :] = neck
    out[..., J["chest"], :] = neck + 0.25 * (pelvis - neck)
    out[..., J["head"], :] = neck + 0.5 * (neck - pelvis)
    for side, wri, ank in (("l", l_wri, l_ank), ("r", r_wri, r_ank)):
        out[..., J[f"{side}_shoulder"], :] = neck
        out[..., J[f"{side}_elbow"], :] = 0.5 * (neck + wri)
        out[..., J[f"{side}_wrist"], :] = wri
        out[..., J[f"{side}_hip"], :] = pelvis
        out[..., J[f"{side}_knee"], :] = 0.5 * (pelvis + ank)
        out[..., J[f"{side}_ankle"], :] = ank
    return out


def v3_to_legacy(v3: np.ndarray) -> np.ndarray:
    return joints_to_legacy(v3_to_joints(v3))


def legacy_to_v3(legacy: np.ndarray) -> np.ndarray:
    return joints_to_v3(legacy_to_joints(legacy))


def validate_v3(v3: np.ndarray, atol: float = 1e-4) -> None:
    """Raise `ConnectivityError` unless every frame of `v3` ([..., 48] or [..., 12, 4]) is a
    connected figure: finite; head and upper torso share the neck; the torso halves share the
    chest; the pelvis is the midpoint of the hips; thighs start at the hips; forearms start at the
    elbows; shins start at the knees. (The shoulders float, as in the published format.)"""
    v = np.asarray(v3, dtype=np.float64)
    if v.shape[-2:] == (12, 4):
        v = v.reshape(*v.shape[:-2], 48)
    if v.shape[-1] != V3_DIM:
        raise ConnectivityError(f"expected 48 values per frame, got shape {v.shape}")
    if not np.isfinite(v).all():
        bad = np.argwhere(~np.isfinite(v.reshape(-1, 48)))[0, 0]
        raise ConnectivityError(f"non-finite coordinate in frame {bad}")
    s = v.reshape(-1, 12, 4)
    pt = lambda i, end: s[:, i, 2 * end:2 * end + 2]  # noqa: E731
    rules = (
        ("neck: head.start == upper_torso.start", pt(0, 0), pt(1, 0)),
        ("chest: upper_torso.end == lower_torso.start", pt(1, 1), pt(2, 0)),
        ("pelvis: lower_torso.end == midpoint(pelvis_width)", pt(2, 1), 0.5 * (pt(11, 0) + pt(11, 1))),
        ("l_hip: l_thigh.start == pelvis_width.start", pt(7, 0), pt(11, 0)),
        ("r_hip: r_thigh.start == pelvis_width.end", pt(9, 0), pt(11, 1)),
        ("l_elbow: l_upper_arm.end == l_forearm.start", pt(3, 1), pt(4, 0)),
        ("r_elbow: r_upper_arm.end == r_forearm.start", pt(5, 1), pt(6, 0)),
        ("l_knee: l_thigh.end == l_shin.start", pt(7, 1), pt(8, 0)),
        ("r_knee: r_thigh.end == r_shin.start", pt(9, 1), pt(10, 0)),
    )
    for name, a, b in rules:
        err = np.abs(a - b).max(axis=-1)
        if (err > atol).any():
            f = int(np.argmax(err > atol))
            raise ConnectivityError(f"broken joint {name} at frame {f} (off by {err[f]:.3g})")


def is_connected(v3: np.ndarray, atol: float = 1e-4) -> bool:
    try:
        validate_v3(v3, atol)
        return True
    except ConnectivityError:
        return False


def mirror_v3(v3: np.ndarray) -> np.ndarray:
    """Mirror x -> -x *and* swap left/right, so a mirrored left-hand wave is a right-hand wave."""
    j = v3_to_joints(v3)[..., MIRROR_PERM, :].copy()
    j[..., 0] *= -1
    return joints_to_v3(j)


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """[..., 16, D] -> [..., 12] lengths of the v3 segments (works in 2D or 3D)."""
    j = np.asarray(joints)
    return np.linalg.norm(j[..., _V3_END, :] - j[..., _V3_START, :], axis=-1)


HEAD_LENGTH = 0.15  # neck -> head centre, in chain-height units


def chain_height(joints3d: np.ndarray) -> float:
    """The body-scale unit (see module docstring): median over frames of the 3D bone chain
    ankle→knee→hip (mean of legs) + pelvis→chest→neck."""
    j = np.asarray(joints3d, dtype=np.float64)
    d = lambda a, b: np.linalg.norm(j[:, J[a]] - j[:, J[b]], axis=-1)  # noqa: E731
    legs = 0.5 * (d("l_ankle", "l_knee") + d("l_knee", "l_hip") + d("r_ankle", "r_knee") + d("r_knee", "r_hip"))
    spine = d("pelvis", "chest") + d("chest", "neck")
    h = legs + spine
    h = h[np.isfinite(h)]
    return float(np.median(h)) if h.size else float("nan")


def regularize_head(joints3d: np.ndarray) -> np.ndarray:
    """[T,16,3] -> copy with head = neck + HEAD_LENGTH * chain_height * unit(head - neck), so every
    source draws the same head (falls back to the chest->neck direction where head == neck)."""
    j = np.asarray(joints3d, dtype=np.float32).copy()
    h = chain_height(j)
    d = j[:, J["head"]] - j[:, J["neck"]]
    up = j[:, J["neck"]] - j[:, J["chest"]]
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    d = np.where(n > 1e-6, d / np.maximum(n, 1e-6), up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-6))
    j[:, J["head"]] = j[:, J["neck"]] + (HEAD_LENGTH * h) * d
    return j
