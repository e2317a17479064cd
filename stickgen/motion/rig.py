"""Rig conventions: map a rig's joint names onto the 16 canonical joints, detect the source and
rig family, and bring positions to metres, +Y up.

Mapping is by name: each canonical joint has an ordered list of *base* names (side-free for
sided joints); a rig joint matches when its normalised name equals a base with a side marker
("left"/"l" as prefix or suffix). Normalising lowercases, drops namespaces (`mixamorig:`),
known prefixes (`mixamorig1`, `Character1_`, `Bip01 `) and separators (`_ - . space`). The first
base that exists in the rig wins, which is how rig-specific ambiguities are settled, e.g.

  LeftShoulder: in CMU-BVH / Mixamo / Bandai it is the clavicle and the shoulder joint is
  LeftArm / UpperArm_L ("arm", "upperarm" are tried before "shoulder"); in the CMU 3ds-Max
  release (LeftCollar + LeftShoulder), SMPL (left_collar + left_shoulder) and NTU (ShoulderLeft)
  there is no "arm" joint, so "shoulder" is the shoulder joint.

A joint's position is where its bone *starts* (BVH convention); the ASF/AMC reader names its
points the same way (the point at the start of bone `lfemur` is "lfemur" = the hip), so
CMU BVH and CMU ASF/AMC map through the same table.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

import numpy as np

from ..errors import UnknownRigError
from .clip import Clip
from .skeleton import JOINTS, J

# Ordered base names per canonical joint (normalised: lowercase, no separators).
#   rig joints behind each entry, for reference (hip/knee/ankle, shoulder/elbow/wrist, chest,
#   neck, head; "A -> B": the name table picks A, `fix_degenerate_chest` moves it to B because
#   A sits exactly on the neck in that rig):
#   CMU-BVH  LeftUpLeg/LeftLeg/LeftFoot, LeftArm/LeftForeArm/LeftHand, Spine1 -> Spine, Neck, Head
#   CMU-3dsMax  LeftHip/LeftKnee/LeftAnkle, LeftShoulder/LeftElbow/LeftWrist, Chest2 -> Chest,
#            lowerneck, Head
#   CMU-ASF  lfemur/ltibia/lfoot, lhumerus/lradius/lwrist, thorax, lowerneck, head (bone starts)
#   Bandai   UpperLeg_L/LowerLeg_L/Foot_L, UpperArm_L/LowerArm_L/Hand_L, Chest, Neck, Head
#   Mixamo   LeftUpLeg/LeftLeg/LeftFoot, LeftArm/LeftForeArm/LeftHand, Spine2, Neck, Head
#   SMPL-22  left_hip/left_knee/left_ankle, left_shoulder/left_elbow/left_wrist, spine3, neck, head
#   NTU-25   HipLeft/KneeLeft/AnkleLeft, ShoulderLeft/ElbowLeft/WristLeft, SpineShoulder, Neck, Head
#   Biped    L Thigh/L Calf/L Foot, L UpperArm/L Forearm/L Hand, Spine2, Neck, Head
SIDED_CANDIDATES: dict[str, tuple[str, ...]] = {
    "hip": ("upleg", "upperleg", "thigh", "femur", "hip"),
    "knee": ("leg", "lowerleg", "knee", "shin", "calf", "tibia", "lowleg"),
    # "ankle" before "foot": NTU's FootLeft and SMPL's left_foot are the toes.
    "ankle": ("ankle", "foot"),
    # "shoulder" last: it is the clavicle whenever an "arm"/"upperarm" joint exists.
    "shoulder": ("arm", "upperarm", "humerus", "shoulder"),
    "elbow": ("forearm", "lowerarm", "elbow", "radius", "lowarm"),
    # "wrist" before "hand": NTU HandLeft and 3ds-Max lhand are the palm.
    "wrist": ("wrist", "hand"),
}
CENTRE_CANDIDATES: dict[str, tuple[str, ...]] = {
    # chest = the upper spine joint just below the neck (most specific names first).
    "chest": ("upperchest", "spine3", "chest2", "spineshoulder", "thorax", "spine2", "chest",
              "spine1", "spine"),
    # neck = the base of the neck ("lowerneck" in the 3ds-Max/ASF rigs, whose "Neck" is higher).
    "neck": ("lowerneck", "neck", "neck1", "neckbase"),
    "head": ("head",),
}
_SIDES = {"l": ("left", "l"), "r": ("right", "r")}

_PREFIX = re.compile(r"^(mixamorig\d*|character\d*|bip0*1)")
_SEPARATORS = re.compile(r"[\s_\-.]+")


def normalise_name(name: str) -> str:
    """'mixamorig:LeftUpLeg' -> 'leftupleg', 'UpperLeg_L' -> 'upperlegl', 'Bip01 L Thigh' -> 'lthigh'."""
    s = name.strip().rsplit(":", 1)[-1].lower()
    s = _SEPARATORS.sub("", s)
    return _PREFIX.sub("", s) or s


def _side_forms(base: str, side: str) -> tuple[str, ...]:
    long, short = _SIDES[side]
    return (long + base, base + long, short + base, base + short)


@lru_cache(maxsize=256)
def _map_cached(names: tuple[str, ...], parents: tuple[int, ...] | None) -> tuple[dict, tuple]:
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(normalise_name(n), i)
    mapping: dict[str, list[int]] = {}
    for cname in JOINTS:
        if cname == "pelvis":
            continue
        if cname[:2] in ("l_", "r_"):
            side, part = cname[0], cname[2:]
            forms = [f for b in SIDED_CANDIDATES[part] for f in _side_forms(b, side)]
        else:
            forms = list(CENTRE_CANDIDATES[cname])
        hit = next((index[f] for f in forms if f in index), None)
        if hit is not None:
            mapping[cname] = [hit]
    # Fallback for unusual spine names: the neck's parent is the upper spine joint.
    if "chest" not in mapping and "neck" in mapping and parents is not None:
        p = parents[mapping["neck"][0]]
        if p >= 0:
            mapping["chest"] = [p]
    missing = tuple(c for c in JOINTS if c != "pelvis" and c not in mapping)
    return mapping, missing


def map_joints(joint_names, parents=None, *, path: str = "") -> dict[str, list[int]]:
    """Canonical joint name -> [rig joint index] for every canonical joint except the pelvis.

    joint_names: the rig's J names; parents: optional [J] parent indices (-1 = root), used only
    to find the chest as the neck's parent when no spine name matches.
    Raises UnknownRigError(path, missing canonical joints, joint_names) if any are not found.
    """
    names = tuple(str(n) for n in joint_names)
    par = None if parents is None else tuple(int(p) for p in parents)
    mapping, missing = _map_cached(names, par)
    if missing:
        raise UnknownRigError(str(path), list(missing), list(names))
    return {k: list(v) for k, v in mapping.items()}


def detect_rig(joint_names) -> str:
    """Rig family from joint names: cmu_bvh, cmu_3dsmax, cmu_asf, bandai, mixamo, smpl, ntu,
    biped or generic."""
    return _detect_rig(tuple(str(n) for n in joint_names))


@lru_cache(maxsize=256)
def _detect_rig(joint_names: tuple[str, ...]) -> str:
    raw = [n.strip().lower() for n in joint_names]
    s = {normalise_name(n) for n in joint_names}
    if any(n.startswith("mixamorig") for n in raw):
        return "mixamo"
    if any(n.startswith(("bip01", "bip001")) for n in raw):
        return "biped"
    if {"lhipjoint", "leftupleg"} <= s:
        return "cmu_bvh"
    if {"lhipjoint", "lefthip", "leftcollar"} <= s:
        return "cmu_3dsmax"
    if {"lfemur", "ltibia", "lhumerus"} <= s:
        return "cmu_asf"
    if {"upperlegl", "shoulderl", "upperarml"} <= s:
        return "bandai"
    if {"leftcollar", "spine3", "leftshoulder"} <= s:
        return "smpl"
    if {"spineshoulder", "handtipleft"} <= s:
        return "ntu"
    return "generic"


_CMU_ID = re.compile(r"^\d+_\d+$")


def detect_source(path, joint_names) -> str:
    """Dataset/studio tag for a file: "bandai", "cmu", "mixamo", "synthetic", "humanml3d",
    "amass", "ntu", or the generic "bvh" / "asf_amc" when nothing more specific is known."""
    base = os.path.basename(str(path))
    stem, ext = os.path.splitext(base)
    ext = ext.lower()
    rig = detect_rig(joint_names) if joint_names is not None else "generic"
    if base.startswith("dataset-1_") or rig == "bandai":
        return "bandai"
    if base.startswith("synth_"):  # motion.synth writes synth_<action>_<k>.bvh
        return "synthetic"
    if rig == "mixamo":
        return "mixamo"
    if ext == ".npy":
        return "humanml3d"
    if ext == ".npz":
        return "amass"
    if ext == ".skeleton":
        return "ntu"
    if rig.startswith("cmu") or (_CMU_ID.match(stem) and ext in (".bvh", ".amc")):
        return "cmu"
    return "asf_amc" if ext in (".amc", ".asf") else "bvh"


# ----------------------------------------------------------------------------- units and up axis

#: metres per file unit. "cmu" is the CMU database's unit: ASF `length 0.45` => 1 unit = 1/0.45 in.
UNIT_SCALES: dict[str, float] = {
    "m": 1.0, "ft": 0.3048, "cmu": 0.0254 / 0.45, "in": 0.0254, "cm": 0.01, "mm": 0.001,
}
_HUMAN_M = 1.7  # typical chain height of an adult, metres


def infer_units(height: float) -> tuple[str, float]:
    """Pick the unit in which a rig whose chain height is `height` (file units) is a human.

    The candidate ranges for a 1.4-2.0 m person do not overlap (m 1.4-2, ft 4.6-6.6,
    cmu 25-35, in 55-79, cm 140-200, mm 1400-2000); we take the unit whose metre height is
    closest to 1.7 m in log space, which also settles children and giants.
    """
    if not np.isfinite(height) or height <= 0:
        return "m", 1.0
    name = min(UNIT_SCALES, key=lambda u: abs(np.log(height * UNIT_SCALES[u] / _HUMAN_M)))
    return name, UNIT_SCALES[name]


#: Rigid rotations taking the detected up axis to +Y (rows act on column vectors: p' = R p).
UP_TO_Y: dict[str, np.ndarray] = {
    "+Y": np.eye(3),
    "-Y": np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], float),   # (x,y,z) -> (x,-y,-z)
    "+Z": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),    # (x,y,z) -> (x,z,-y)
    "-Z": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float),    # (x,y,z) -> (x,-z,y)
    "+X": np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float),    # (x,y,z) -> (-y,x,z)
    "-X": np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float),    # (x,y,z) -> (y,-x,z)
}


def _sample(T: int, n: int) -> np.ndarray:
    """<= n frame indices spread over T frames (the statistics below are medians, so a sample
    is enough and keeps long clips cheap)."""
    if T <= n:
        return np.arange(T)
    return np.linspace(0, T - 1, n).astype(np.int64)  # distinct: spacing >= 1


def _joint(j: np.ndarray, mapping: dict, name: str) -> np.ndarray:
    idx = mapping[name]
    return j[:, idx[0]] if len(idx) == 1 else j[:, idx].mean(axis=1)


def _up(js: np.ndarray, mapping: dict) -> str:
    v = _joint(js, mapping, "head") - 0.5 * (_joint(js, mapping, "l_ankle") + _joint(js, mapping, "r_ankle"))
    d = np.median(v, axis=0)
    if not np.isfinite(d).all() or not d.any():
        return "+Y"
    a = int(np.argmax(np.abs(d)))
    return ("+" if d[a] > 0 else "-") + "XYZ"[a]


def detect_up(joints: np.ndarray, mapping: dict) -> str:
    """The file's up axis ("+Y", "+Z", ...): the dominant component of the median over frames of
    head - mean(ankles). Assumes the actor is upright in most frames (true of mocap takes)."""
    return _up(joints[_sample(len(joints), 64)], mapping)


_CHAIN = ((J["l_ankle"], J["l_knee"]), (J["l_knee"], J["l_hip"]),
          (J["r_ankle"], J["r_knee"]), (J["r_knee"], J["r_hip"]),
          (J["pelvis"], J["chest"]), (J["chest"], J["neck"]), (J["neck"], J["head"]))
_CHAIN_A = np.array([a for a, _ in _CHAIN])
_CHAIN_B = np.array([b for _, b in _CHAIN])
_CHAIN_W = np.array([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0])  # legs averaged, spine summed


def _canonical(j: np.ndarray, mapping: dict) -> np.ndarray:
    """[t, J, 3] rig joints -> [t, 16, 3] canonical joints (as Clip.canonical)."""
    canon = np.empty((len(j), len(JOINTS), 3))
    for name in JOINTS:
        if name != "pelvis":
            canon[:, J[name]] = _joint(j, mapping, name)
    canon[:, J["pelvis"]] = 0.5 * (canon[:, J["l_hip"]] + canon[:, J["r_hip"]])
    return canon


def _chain(js: np.ndarray, mapping: dict) -> float:
    c = _canonical(js, mapping)
    h = np.linalg.norm(c[:, _CHAIN_A] - c[:, _CHAIN_B], axis=-1) @ _CHAIN_W
    h = h[np.isfinite(h)]
    return float(np.median(h)) if h.size else float("nan")


def rig_chain_height(joints: np.ndarray, mapping: dict) -> float:
    """skeleton.chain_height (ankle->knee->hip averaged over legs + pelvis->chest->neck->head)
    in the joints' units, from a sample of frames (it is pose-invariant up to the pelvis)."""
    return _chain(joints[_sample(len(joints), 32)], mapping)


def _fix_chest(js: np.ndarray, mapping: dict, parents, height: float) -> dict:
    if parents is None or not np.isfinite(height):
        return mapping
    neck = _joint(js, mapping, "neck")
    c = start = mapping["chest"][0]
    for _ in range(8):
        if parents[c] < 0 or np.median(np.linalg.norm(js[:, c] - neck, axis=-1)) > 0.03 * height:
            break
        c = int(parents[c])
    return mapping if c == start else dict(mapping, chest=[c])


def fix_degenerate_chest(joints: np.ndarray, mapping: dict, parents) -> dict:
    """Some rigs put the named upper-spine joint exactly at the neck (CMU BVH: Neck has a zero
    offset from Spine1; CMU 3ds-Max: lowerneck from Chest2), which would collapse the upper
    torso. Walk down the spine (parents) until the chest is clearly below the neck
    (> 3% of the chain height)."""
    js = joints[_sample(len(joints), 32)]
    return _fix_chest(js, mapping, parents, _chain(js, mapping))


def snap_fps(fps: float) -> float:
    """1/0.0333333 = 30.00003 -> 30.0: snap to an integer when within 1e-4 (relative); a real
    29.97 stays 29.97."""
    r = round(fps)
    return float(r) if r > 0 and abs(fps - r) <= 1e-4 * r else float(fps)


def make_clip(joints: np.ndarray, joint_names, fps: float, *, path, source: str | None = None,
              parents=None, units: str | float | tuple = "auto", up: str = "auto",
              meta: dict | None = None) -> Clip:
    """Map the rig, fix the up axis and units, and wrap [T, J, 3] positions as a `Clip`.

    units: "auto" (infer from the chain height), a UNIT_SCALES key, metres-per-unit, or a
           (name, metres-per-unit) pair for a unit the file declares.
    up:    "auto" (detect) or the file's known up axis ("+Y", "+Z", ...).
    Raises UnknownRigError when the names do not map.
    """
    names = [str(n) for n in joint_names]
    mapping = map_joints(names, parents, path=str(path))
    j = np.asarray(joints, dtype=np.float64)
    js = j[_sample(len(j), 32)]  # statistics below run on a frame sample
    height = _chain(js, mapping)
    fixed = _fix_chest(js, mapping, parents, height)
    if fixed is not mapping:
        mapping, height = fixed, _chain(js, fixed)
    up_axis = _up(js, mapping) if up == "auto" else up
    if up_axis != "+Y":
        j = j @ UP_TO_Y[up_axis].T
    if isinstance(units, tuple):
        unit, scale = units[0], float(units[1])
    elif units == "auto":
        unit, scale = infer_units(height)
    elif isinstance(units, str):
        unit, scale = units, UNIT_SCALES[units]
    else:
        unit, scale = f"{float(units):g} m", float(units)
    out = (j * scale).astype(np.float32) if scale != 1.0 else j.astype(np.float32)
    m = dict(meta or {})
    m.update(units=unit, unit_scale=scale, up_axis=up_axis, rig=detect_rig(names),
             chain_height_m=round(height * scale, 4))
    return Clip(
        joints=out, fps=snap_fps(float(fps)), joint_names=names, mapping=mapping,
        source=source or detect_source(path, names), path=str(path), meta=m,
    )
