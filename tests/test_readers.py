"""Motion-capture readers and rig mapping: real files (skipped when ../shared/data is absent),
known-answer kinematics, round trips, unit/up-axis handling and typed errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from stickgen.errors import MissingDependencyError, MotionFormatError, UnknownRigError
from stickgen.motion.asfamc import find_asf, read_asf_amc
from stickgen.motion.bvh import (euler_matrices, forward_kinematics, load_bvh, parse_bvh,
                                 read_bvh, write_bvh)
from stickgen.motion.formats import (SMPL_JOINT_NAMES, read_amass_npz, read_humanml3d_npy,
                                     read_ntu_skeleton, NTU_JOINT_NAMES)
from stickgen.motion.readers import SUPPORTED_EXTENSIONS, read_clip
from stickgen.motion.rig import detect_rig, detect_source, infer_units, map_joints
from stickgen.motion.skeleton import JOINTS, J

# The canonical chain height stops at the rig's *head joint*, which in BVH rigs sits at the
# skull base (Bandai Head is 6.5 cm above Neck, and its End Site has zero offset), so it is
# ~80% of standing height: Bandai 1.30 m, CMU BVH 1.30-1.37 m, CMU ASF 1.48-1.52 m,
# HumanML3D (SMPL) 1.53 m. Range for "a human" on this measure:
CHAIN_RANGE = (1.2, 2.0)


def head_above_pelvis(clip) -> float:
    c = clip.canonical()
    return float((c[:, J["head"], 1] > c[:, J["pelvis"], 1]).mean())


def check_clip(clip, fps, min_upright=0.95):
    assert clip.joints.dtype == np.float32 and clip.joints.ndim == 3 and clip.joints.shape[2] == 3
    assert clip.joints.shape[1] == len(clip.joint_names)
    assert set(clip.mapping) == set(JOINTS) - {"pelvis"}
    assert np.isfinite(clip.joints).all()
    assert clip.fps == fps
    assert clip.meta["up_axis"] in ("+Y", "+Z", "-Y", "+X", "-X", "-Z")
    assert head_above_pelvis(clip) >= min_upright
    assert CHAIN_RANGE[0] <= clip.meta["chain_height_m"] <= CHAIN_RANGE[1]
    can = clip.canonical()
    assert np.isfinite(can).all()


# ----------------------------------------------------------------------------- real data


def test_every_bandai_clip(bandai_dir):
    files = sorted(bandai_dir.glob("*.bvh"))
    assert len(files) == 174
    for f in files:
        clip = read_clip(f)
        check_clip(clip, 30.0)
        assert clip.source == "bandai" and clip.meta["rig"] == "bandai"
        assert clip.meta["units"] == "cm" and clip.meta["up_axis"] == "+Y"
        # root motion lives on Hips (channels replace OFFSET): hips ~0.9 m above the floor
        hips = clip.joints[:, clip.joint_names.index("Hips"), 1]
        floor = clip.joints[..., 1].min()
        assert 0.8 < np.median(hips) - floor < 1.0, f


def test_bandai_mapping(bandai_dir):
    clip = read_bvh(bandai_dir / "dataset-1_walk_normal_001.bvh")
    named = {k: clip.joint_names[v[0]] for k, v in clip.mapping.items()}
    assert named == {
        "chest": "Chest", "neck": "Neck", "head": "Head",
        "l_shoulder": "UpperArm_L", "l_elbow": "LowerArm_L", "l_wrist": "Hand_L",
        "r_shoulder": "UpperArm_R", "r_elbow": "LowerArm_R", "r_wrist": "Hand_R",
        "l_hip": "UpperLeg_L", "l_knee": "LowerLeg_L", "l_ankle": "Foot_L",
        "r_hip": "UpperLeg_R", "r_knee": "LowerLeg_R", "r_ankle": "Foot_R",
    }
    assert "Toes_L_end" in clip.joint_names and "Head_end" in clip.joint_names


def left_is_left(clip, toe: str, ankle: str) -> float:
    """Fraction of frames where the mapped left hip is on the actor's left, with the facing
    taken from the left foot (ankle -> toe), independent of the hips: catches mirrored data
    and swapped L/R mappings."""
    n = clip.joint_names
    fwd = clip.joints[:, n.index(toe)] - clip.joints[:, n.index(ankle)]
    fwd[:, 1] = 0
    left = np.cross([0.0, 1.0, 0.0], fwd)              # +Y up, right-handed: up x forward
    c = clip.canonical()
    return float((np.einsum("ti,ti->t", c[:, J["l_hip"]] - c[:, J["r_hip"]], left) > 0).mean())


def test_left_is_left(bandai_dir, cmu_dir, shared_data):
    cases = [(bandai_dir / "dataset-1_walk_normal_001.bvh", "Toes_L", "Foot_L"),
             (bandai_dir / "dataset-1_bow_normal_001.bvh", "Toes_L", "Foot_L"),
             (cmu_dir / "01_01.bvh", "LeftToeBase", "LeftFoot"),
             (cmu_dir / "131_01.bvh", "LeftToe", "LeftAnkle"),
             (cmu_dir / "11_01.amc", "ltoes", "lfoot"),
             (shared_data / "humanml3d" / "012314_new_joints.npy", "left_foot", "left_ankle")]
    for path, toe, ankle in cases:
        assert left_is_left(read_clip(path), toe, ankle) > 0.8, path


@pytest.mark.parametrize("name,rig,chest,shoulder", [
    ("01_01.bvh", "cmu_bvh", "Spine", "LeftArm"),
    ("131_01.bvh", "cmu_3dsmax", "Chest", "LeftShoulder"),
    ("131_02.bvh", "cmu_3dsmax", "Chest", "LeftShoulder"),
    ("131_03.bvh", "cmu_3dsmax", "Chest", "LeftShoulder"),
])
def test_cmu_bvh(cmu_dir, name, rig, chest, shoulder):
    clip = read_clip(cmu_dir / name)
    check_clip(clip, 120.0)
    assert clip.source == "cmu" and clip.meta["rig"] == rig
    # both CMU releases are in CMU units (1/0.45 inch), +Y up -- not metres
    assert clip.meta["units"] == "cmu" and clip.meta["up_axis"] == "+Y"
    named = {k: clip.joint_names[v[0]] for k, v in clip.mapping.items()}
    assert named["chest"] == chest and named["l_shoulder"] == shoulder
    # upper torso not collapsed (the named spine joint sits on the neck in these rigs)
    c = clip.canonical()
    assert np.median(np.linalg.norm(c[:, J["chest"]] - c[:, J["neck"]], axis=-1)) > 0.05


def test_cmu_asf_amc(cmu_dir):
    a = read_clip(cmu_dir / "01_01.amc")                      # finds 01.asf beside it
    b = read_asf_amc(cmu_dir / "11.asf", cmu_dir / "11_01.amc")
    for clip in (a, b):
        check_clip(clip, 120.0)
        assert clip.source == "cmu" and clip.meta["rig"] == "cmu_asf" and clip.meta["units"] == "cmu"
    assert a.meta["asf"].endswith("01.asf") and a.n_frames == 2751 and b.n_frames == 597
    assert find_asf(cmu_dir / "11_01.amc").name == "11.asf"


def test_asf_amc_matches_cmu_bvh(cmu_dir):
    """01_01.bvh is a conversion of 01_01.amc with a rest-pose frame 0 prepended. Joint by joint
    they agree exactly up to the thorax; the BVH gives Neck a zero offset from Spine1, i.e. it
    drops the ASF thorax bone, so everything above is shifted by that bone."""
    a = read_asf_amc(cmu_dir / "01_01.amc")
    b = read_bvh(cmu_dir / "01_01.bvh")
    pa, pb = a.joints, b.joints[1:]
    for bvh_name, asf_name in [("LeftUpLeg", "lfemur"), ("LeftLeg", "ltibia"), ("LeftFoot", "lfoot"),
                               ("RightLeg", "rtibia"), ("Spine", "upperback"), ("Spine1", "thorax")]:
        np.testing.assert_allclose(pa[:, a.joint_names.index(asf_name)],
                                   pb[:, b.joint_names.index(bvh_name)], atol=1e-4)
    thorax = np.linalg.norm(pa[:, a.joint_names.index("lowerneck")] - pa[:, a.joint_names.index("thorax")], axis=-1)
    gap = np.linalg.norm(pa[:, a.joint_names.index("head")] - pb[:, b.joint_names.index("Head")], axis=-1)
    np.testing.assert_allclose(gap, thorax, atol=1e-4)


def test_humanml3d_fixture(shared_data):
    clip = read_clip(shared_data / "humanml3d" / "012314_new_joints.npy")
    check_clip(clip, 20.0)
    assert clip.joints.shape == (170, 22, 3) and clip.source == "humanml3d"
    assert clip.joint_names == list(SMPL_JOINT_NAMES)
    named = {k: clip.joint_names[v[0]] for k, v in clip.mapping.items()}
    assert named["chest"] == "spine3" and named["l_shoulder"] == "left_shoulder"
    assert read_humanml3d_npy(shared_data / "humanml3d" / "012314_new_joints.npy").n_frames == 170


def test_reading_is_deterministic(bandai_dir):
    f = bandai_dir / "dataset-1_bow_active_001.bvh"
    a, b = read_clip(f), read_clip(f)
    assert np.array_equal(a.joints, b.joints) and a.mapping == b.mapping and a.meta == b.meta


# ----------------------------------------------------------------------------- known answers

CHAIN = """HIERARCHY
ROOT Root
{{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition {order}
  JOINT Bone
  {{
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {{
      OFFSET 0 0 {end}
    }}
  }}
}}
MOTION
Frames: 2
Frame Time: 0.5
{frames}
"""


def chain(order="Zrotation Xrotation Yrotation", frames=("0 0 0 0 0 0 0 0 0",) * 2, end=0):
    text = CHAIN.format(order=order, frames="\n".join(frames), end=end)
    b = parse_bvh(text.encode())
    return b, forward_kinematics(b.skeleton, b.motion)


def test_fk_rotation_about_z_turns_x_into_y():
    b, p = chain(frames=["0 0 0 90 0 0 0 0 0"] * 2)
    assert b.names == ["Root", "Bone", "Bone_end"]
    np.testing.assert_allclose(p[0, 1], [0, 1, 0], atol=1e-6)


def test_fk_rotation_order_follows_channels():
    # Z=90, X=90 with ZXY: R = Rz Rx Ry, Rx leaves +X alone, Rz takes it to +Y
    _, p = chain("Zrotation Xrotation Yrotation", ["0 0 0 90 90 0 0 0 0"] * 2)
    np.testing.assert_allclose(p[0, 1], [0, 1, 0], atol=1e-6)
    # X=90, Z=90 with XYZ: R = Rx Ry Rz, Rz takes +X to +Y, Rx takes +Y to +Z
    _, p = chain("Xrotation Yrotation Zrotation", ["0 0 0 90 0 90 0 0 0"] * 2)
    np.testing.assert_allclose(p[0, 1], [0, 0, 1], atol=1e-6)


def test_fk_root_translation_and_chained_rotation():
    # root at (1,2,3) rotated 90 about Z; child rotated 90 about Z again; End Site 1 along x
    b, p = chain(frames=["1 2 3 90 0 0 90 0 0"] * 2, end=0)
    np.testing.assert_allclose(p[0, 0], [1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(p[0, 1], [1, 3, 3], atol=1e-6)


def test_end_site_is_a_joint_at_its_offset():
    _, p = chain(frames=["0 0 0 0 0 0 0 90 0"] * 2, end=2)  # child X=90: its +Z goes to -Y
    np.testing.assert_allclose(p[0, 2], [1, -2, 0], atol=1e-6)
    _, p = chain(end=0)
    np.testing.assert_allclose(p[0, 2], p[0, 1])          # zero-offset End Site kept too


def test_position_channels_replace_offset_on_any_joint():
    text = """HIERARCHY
ROOT Root
{
  OFFSET 0 50 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Child
  {
    OFFSET 1 0 0
    CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 1 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
0 1 0 0 0 0 0 2 0 0 0 0
0 1 0 90 0 0 0 2 0 0 0 0
"""
    b = parse_bvh(text.encode())
    p = forward_kinematics(b.skeleton, b.motion)
    np.testing.assert_allclose(p[0, 0], [0, 1, 0], atol=1e-6)     # root: channels, not OFFSET
    np.testing.assert_allclose(p[0, 1], [0, 3, 0], atol=1e-6)     # child: (0,2,0), not (1,2,0)
    np.testing.assert_allclose(p[1, 1], [-2, 1, 0], atol=1e-6)    # rotated with the parent
    np.testing.assert_allclose(p[0, 2], [0, 4, 0], atol=1e-6)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_matrices_match_scipy_and_fk(order):
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rng = np.random.default_rng(0)
    ang = rng.uniform(-180, 180, size=(20, 3))
    axes = np.array(["XYZ".index(a) for a in order])
    ours = euler_matrices(ang, axes)
    ref = Rotation.from_euler(order, ang, degrees=True).as_matrix()   # upper case = intrinsic
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # the closed-form FK path agrees with the generic one
    chs = " ".join(f"{a}rotation" for a in order)
    frames = [f"0 0 0 {a[0]} {a[1]} {a[2]} 0 0 0" for a in ang]
    text = CHAIN.format(order=chs, frames="\n".join(frames), end=0).replace("Frames: 2", "Frames: 20")
    b = parse_bvh(text.encode())
    p = forward_kinematics(b.skeleton, b.motion)
    np.testing.assert_allclose(p[:, 1], ref[:, :, 0], atol=1e-6)


# ----------------------------------------------------------------------------- synthetic rigs

# A small humanoid: (name, parent, offset in metres, +Y up).
HUMANOID = [
    ("Hips", None, (0, 0.95, 0)),
    ("LeftUpLeg", "Hips", (0.09, -0.05, 0)), ("LeftLeg", "LeftUpLeg", (0, -0.42, 0)),
    ("LeftFoot", "LeftLeg", (0, -0.42, 0)),
    ("RightUpLeg", "Hips", (-0.09, -0.05, 0)), ("RightLeg", "RightUpLeg", (0, -0.42, 0)),
    ("RightFoot", "RightLeg", (0, -0.42, 0)),
    ("Spine", "Hips", (0, 0.1, 0)), ("Spine1", "Spine", (0, 0.12, 0)), ("Spine2", "Spine1", (0, 0.12, 0)),
    ("Neck", "Spine2", (0, 0.15, 0)), ("Head", "Neck", (0, 0.1, 0)),
    ("LeftShoulder", "Spine2", (0.04, 0.12, 0)), ("LeftArm", "LeftShoulder", (0.12, 0, 0)),
    ("LeftForeArm", "LeftArm", (0.28, 0, 0)), ("LeftHand", "LeftForeArm", (0.25, 0, 0)),
    ("RightShoulder", "Spine2", (-0.04, 0.12, 0)), ("RightArm", "RightShoulder", (-0.12, 0, 0)),
    ("RightForeArm", "RightArm", (-0.28, 0, 0)), ("RightHand", "RightForeArm", (-0.25, 0, 0)),
]


def write_humanoid(path, *, prefix="", scale=1.0, T=12, up="Y", end_sites=True, seed=0):
    """Write the humanoid as BVH with gentle random motion; returns (names, motion)."""
    names = [prefix + n for n, _, _ in HUMANOID]
    parents = [-1 if p is None else [n for n, _, _ in HUMANOID].index(p) for _, p, _ in HUMANOID]
    offsets = [np.array(o, float) * scale for _, _, o in HUMANOID]
    rot = ["Zrotation", "Xrotation", "Yrotation"]
    channels = [["Xposition", "Yposition", "Zposition"] + rot] + [rot] * (len(HUMANOID) - 1)
    if end_sites:
        for j in (3, 6, 11, 15, 19):
            names.append(names[j] + "_end"), parents.append(j), offsets.append(np.array([0, 0.05, 0]) * scale)
            channels.append([])
    rng = np.random.default_rng(seed)
    motion = rng.normal(0, 8, size=(T, sum(len(c) for c in channels)))
    motion[:, :3] = np.array([0, 0.95, 0]) * scale + rng.normal(0, 0.05 * scale, (T, 3))
    motion[:, 3:6] = 0.0  # root rotation (Z, X, Y)
    if up == "Z":  # the same figure in a Z-up world: rotate everything by Rx(+90), (x,y,z)->(x,-z,y)
        motion[:, 4] = 90.0
        motion[:, :3] = motion[:, [0, 2, 1]] * [1, -1, 1]
    write_bvh(path, names, parents, offsets, channels, motion, 1 / 60)
    return names, motion


def test_write_read_round_trip_real_file(bandai_dir, tmp_path):
    src = bandai_dir / "dataset-1_walk_normal_001.bvh"
    b = load_bvh(src)
    out = write_bvh(tmp_path / "copy.bvh", b.names, b.parents, b.offsets, b.channels, b.motion, b.frame_time)
    a, c = read_bvh(src), read_bvh(out)
    assert c.joint_names == a.joint_names and c.fps == a.fps == 30.0
    np.testing.assert_allclose(c.joints, a.joints, atol=1e-4)


def test_utf8_bom_and_crlf(tmp_path):
    write_humanoid(tmp_path / "h.bvh")
    text = (tmp_path / "h.bvh").read_text()
    (tmp_path / "bom.bvh").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    np.testing.assert_allclose(read_bvh(tmp_path / "bom.bvh").joints, read_bvh(tmp_path / "h.bvh").joints)


def test_write_read_round_trip_synthetic(tmp_path):
    names, motion = write_humanoid(tmp_path / "h.bvh")   # End Sites listed last, not depth-first
    b = load_bvh(tmp_path / "h.bvh")
    assert sorted(b.names) == sorted(names) and b.frame_time == pytest.approx(1 / 60)
    # channel values follow their joints through the depth-first reordering
    def columns(nm, chs, mot):
        out, col = {}, 0
        for n, c in zip(nm, chs):
            out[n] = mot[:, col:col + len(c)]
            col += len(c)
        return out
    mine = columns(names, [b.channels[b.names.index(n)] for n in names], motion)
    back = columns(b.names, b.channels, b.motion)
    for n in names:
        np.testing.assert_allclose(back[n], mine[n], atol=1e-6)
    clip = read_bvh(tmp_path / "h.bvh")
    assert clip.fps == 60.0 and clip.meta["units"] == "m" and clip.source == "bvh"


def test_write_bvh_reorders_columns_for_non_depth_first_order(tmp_path):
    # given order R, C2, C1, G (G under C2): written depth-first as R, C2, G, C1
    write_bvh(tmp_path / "x.bvh", ["R", "C2", "C1", "G"], [-1, 0, 0, 1], np.eye(4, 3),
              [["Zrotation"], ["Xrotation"], ["Yrotation"], ["Zrotation"]],
              np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), 0.1)
    b = load_bvh(tmp_path / "x.bvh")
    assert b.names == ["R", "C2", "G", "C1"]
    np.testing.assert_allclose(b.motion, [[1, 2, 4, 3], [5, 6, 8, 7]])
    np.testing.assert_allclose(b.offsets, np.eye(4, 3)[[0, 1, 3, 2]])


def test_same_motion_in_cm_and_m_reads_the_same(tmp_path):
    write_humanoid(tmp_path / "m.bvh", scale=1.0)
    write_humanoid(tmp_path / "cm.bvh", scale=100.0)
    write_humanoid(tmp_path / "in.bvh", scale=1 / 0.0254)
    m, cm, inch = (read_bvh(tmp_path / f) for f in ("m.bvh", "cm.bvh", "in.bvh"))
    assert (m.meta["units"], cm.meta["units"], inch.meta["units"]) == ("m", "cm", "in")
    np.testing.assert_allclose(cm.joints, m.joints, atol=1e-4)
    np.testing.assert_allclose(inch.joints, m.joints, atol=1e-4)


def test_real_clip_in_metres_reads_the_same(bandai_dir, tmp_path):
    b = load_bvh(bandai_dir / "dataset-1_bow_happy_001.bvh")
    motion = b.motion.copy()
    pos_cols = [i for i, c in enumerate(c for chs in b.channels for c in chs) if c.endswith("position")]
    motion[:, pos_cols] *= 0.01
    write_bvh(tmp_path / "m.bvh", b.names, b.parents, b.offsets * 0.01, b.channels, motion, b.frame_time)
    a, m = read_bvh(bandai_dir / "dataset-1_bow_happy_001.bvh"), read_bvh(tmp_path / "m.bvh")
    assert a.meta["units"] == "cm" and m.meta["units"] == "m"
    np.testing.assert_allclose(m.joints, a.joints, atol=1e-4)


def test_z_up_file_comes_back_y_up(tmp_path):
    write_humanoid(tmp_path / "y.bvh")
    write_humanoid(tmp_path / "z.bvh", up="Z")
    y, z = read_bvh(tmp_path / "y.bvh"), read_bvh(tmp_path / "z.bvh")
    assert y.meta["up_axis"] == "+Y" and z.meta["up_axis"] == "+Z"
    assert head_above_pelvis(z) == 1.0
    np.testing.assert_allclose(z.joints, y.joints, atol=1e-4)   # (x,y,z)->(x,z,-y) undoes Rx(90)


def test_real_z_up_clip_comes_back_y_up(bandai_dir, tmp_path):
    b = load_bvh(bandai_dir / "dataset-1_walk_normal_001.bvh")
    motion = b.motion.copy()
    motion[:, 4] = 90.0          # joint_Root's Xrotation (ZXY order): the world becomes Z-up
    write_bvh(tmp_path / "z.bvh", b.names, b.parents, b.offsets, b.channels, motion, b.frame_time)
    a, z = read_bvh(bandai_dir / "dataset-1_walk_normal_001.bvh"), read_bvh(tmp_path / "z.bvh")
    assert z.meta["up_axis"] == "+Z"
    np.testing.assert_allclose(z.joints, a.joints, atol=1e-4)   # (x,y,z)->(x,z,-y) undoes Rx(90)


def test_mixamo_rig(tmp_path):
    write_humanoid(tmp_path / "mixamo_walk.bvh", prefix="mixamorig:", scale=100.0)
    clip = read_clip(tmp_path / "mixamo_walk.bvh")
    assert clip.source == "mixamo" and clip.meta["rig"] == "mixamo" and clip.meta["units"] == "cm"
    named = {k: clip.joint_names[v[0]] for k, v in clip.mapping.items()}
    assert named["l_shoulder"] == "mixamorig:LeftArm"      # LeftShoulder is the clavicle
    assert named["chest"] == "mixamorig:Spine2" and named["l_wrist"] == "mixamorig:LeftHand"


# ----------------------------------------------------------------------------- rig mapping


def names_of(names, mapping):
    return {k: names[v[0]] for k, v in mapping.items()}


def test_mapping_tables():
    cmu = ["Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "RHipJoint", "RightUpLeg", "RightLeg",
           "RightFoot", "LowerBack", "Spine", "Spine1", "Neck", "Neck1", "Head", "LeftShoulder", "LeftArm",
           "LeftForeArm", "LeftHand", "RightShoulder", "RightArm", "RightForeArm", "RightHand"]
    m = names_of(cmu, map_joints(cmu))
    assert (m["l_hip"], m["l_knee"], m["l_ankle"], m["l_shoulder"]) == ("LeftUpLeg", "LeftLeg", "LeftFoot", "LeftArm")
    max3ds = ["Hips", "LHipJoint", "LeftHip", "LeftKnee", "LeftAnkle", "RHipJoint", "RightHip", "RightKnee",
              "RightAnkle", "lowerback", "Chest", "Chest2", "lowerneck", "Neck", "Head", "LeftCollar",
              "LeftShoulder", "LeftElbow", "LeftWrist", "RightCollar", "RightShoulder", "RightElbow", "RightWrist"]
    m = names_of(max3ds, map_joints(max3ds))
    assert (m["l_shoulder"], m["neck"], m["chest"], m["l_hip"]) == ("LeftShoulder", "lowerneck", "Chest2", "LeftHip")
    m = names_of(SMPL_JOINT_NAMES, map_joints(SMPL_JOINT_NAMES))
    assert (m["l_shoulder"], m["l_ankle"], m["chest"], m["head"]) == ("left_shoulder", "left_ankle", "spine3", "head")
    m = names_of(NTU_JOINT_NAMES, map_joints(NTU_JOINT_NAMES))
    assert (m["l_wrist"], m["l_ankle"], m["chest"], m["neck"]) == ("WristLeft", "AnkleLeft", "SpineShoulder", "Neck")
    biped = ["Bip01 Pelvis", "Bip01 Spine", "Bip01 Spine1", "Bip01 Spine2", "Bip01 Neck", "Bip01 Head",
             "Bip01 L Thigh", "Bip01 L Calf", "Bip01 L Foot", "Bip01 R Thigh", "Bip01 R Calf", "Bip01 R Foot",
             "Bip01 L Clavicle", "Bip01 L UpperArm", "Bip01 L Forearm", "Bip01 L Hand",
             "Bip01 R Clavicle", "Bip01 R UpperArm", "Bip01 R Forearm", "Bip01 R Hand"]
    m = names_of(biped, map_joints(biped))
    assert (m["l_hip"], m["l_knee"], m["l_shoulder"], m["chest"]) == (
        "Bip01 L Thigh", "Bip01 L Calf", "Bip01 L UpperArm", "Bip01 Spine2")
    generic = ["Character1_Hips", "Character1_LeftUpLeg", "Character1_LeftLeg", "Character1_LeftFoot",
               "Character1_RightUpLeg", "Character1_RightLeg", "Character1_RightFoot", "Character1_Spine",
               "Character1_Neck", "Character1_Head", "Character1_LeftArm", "Character1_LeftForeArm",
               "Character1_LeftHand", "Character1_RightArm", "Character1_RightForeArm", "Character1_RightHand"]
    m = names_of(generic, map_joints(generic))
    assert m["chest"] == "Character1_Spine" and m["r_elbow"] == "Character1_RightForeArm"


def test_unknown_rig_names_missing_joints(tmp_path):
    names = ["Foo", "Bar", "Head", "Neck"]
    with pytest.raises(UnknownRigError) as e:
        map_joints(names, path="x.bvh")
    assert e.value.reason == "unknown_rig" and "l_hip" in e.value.missing and "head" not in e.value.missing
    assert "x.bvh" in str(e.value)


def test_detect_source_and_units():
    assert detect_source("/d/dataset-1_walk_normal_001.bvh", ["UpperLeg_L", "Shoulder_L", "UpperArm_L"]) == "bandai"
    assert detect_source("/d/02_03.bvh", ["Hips"]) == "cmu"
    assert detect_source("/d/walk.bvh", ["mixamorig:Hips"]) == "mixamo"
    assert detect_source("/d/walk.bvh", ["Hips"]) == "bvh"
    assert detect_source("/d/synth_walk_000.bvh", ["Hips"]) == "synthetic"
    assert detect_source("/d/x.npy", None) == "humanml3d"
    assert detect_rig(["Bip01 Pelvis"]) == "biped"
    assert infer_units(170.0)[0] == "cm" and infer_units(1.7)[0] == "m" and infer_units(1700)[0] == "mm"
    assert infer_units(30.0)[0] == "cmu" and infer_units(67.0)[0] == "in"


# ----------------------------------------------------------------------------- other formats


def ntu_text(frames_bodies, rng):
    """NTU .skeleton text; frames_bodies: per frame the number of bodies."""
    base = {n: p for n, p in zip(NTU_JOINT_NAMES, [
        (0, 0.0, 3), (0, 0.3, 3), (0, 0.6, 3), (0, 0.75, 3), (0.18, 0.52, 3), (0.22, 0.25, 3), (0.24, 0.02, 3),
        (0.24, -0.05, 3), (-0.18, 0.52, 3), (-0.22, 0.25, 3), (-0.24, 0.02, 3), (-0.24, -0.05, 3),
        (0.09, -0.05, 3), (0.09, -0.48, 3), (0.09, -0.9, 3), (0.09, -0.95, 2.9), (-0.09, -0.05, 3),
        (-0.09, -0.48, 3), (-0.09, -0.9, 3), (-0.09, -0.95, 2.9), (0, 0.52, 3), (0.24, -0.1, 3),
        (0.22, -0.05, 3), (-0.24, -0.1, 3), (-0.22, -0.05, 3)])}
    lines = [str(len(frames_bodies))]
    for f, nb in enumerate(frames_bodies):
        lines.append(str(nb))
        for b in range(nb):
            lines.append(f"7205759403793{b} 0 1 1 1 1 0 0.01 0.02 2")
            lines.append("25")
            for n in NTU_JOINT_NAMES:
                x, y, z = np.array(base[n]) + [0.01 * f + 5 * b, 0, 0] + rng.normal(0, 1e-3, 3)
                lines.append(f"{x:.6f} {y:.6f} {z:.6f} 250.1 210.3 960.2 540.7 0.1 0.2 0.3 0.9 2")
    return "\n".join(lines) + "\n"


def test_ntu_skeleton(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_text(ntu_text([0, 1, 2, 0, 1, 1, 0], rng))
    clip = read_clip(p)
    assert clip.source == "ntu" and clip.fps == 30.0 and clip.joints.shape == (5, 25, 3)
    assert clip.meta["missing_frames"] == 1 and clip.meta["bodies_max"] == 2
    assert head_above_pelvis(clip) == 1.0
    # first body only (the second is 5 m away), gap at frame 3 interpolated, x mirrored by the
    # 180-degree turn about Y: SpineBase x = -(0.01 * frame)
    np.testing.assert_allclose(clip.joints[:, 0, 0], -0.01 * np.arange(1, 6), atol=5e-3)
    (tmp_path / "cut.skeleton").write_text(ntu_text([1, 1, 1], rng)[:-200])
    with pytest.raises(MotionFormatError) as e:
        read_clip(tmp_path / "cut.skeleton")
    assert e.value.reason == "truncated" and "cut.skeleton" in str(e.value)


def test_amass_needs_smplx_and_model_files(tmp_path, monkeypatch):
    p = tmp_path / "walk_poses.npz"
    np.savez(p, poses=np.zeros((4, 156)), trans=np.zeros((4, 3)), betas=np.zeros(16),
             gender="male", mocap_framerate=120.0)
    monkeypatch.delenv("STICKGEN_SMPL_DIR", raising=False)
    try:
        import smplx  # noqa: F401
        have_smplx = True
    except ImportError:
        have_smplx = False
    with pytest.raises(MissingDependencyError) as e:
        read_clip(p)
    msg = str(e.value)
    assert e.value.reason == "missing_dependency" and "walk_poses.npz" in msg
    assert "STICKGEN_SMPL_DIR" in msg and "SMPLH_" in msg and "mano.is.tue.mpg.de" in msg
    if not have_smplx:
        assert "pip install smplx" in msg
    monkeypatch.setenv("STICKGEN_SMPL_DIR", str(tmp_path))
    with pytest.raises(MissingDependencyError) as e:
        read_amass_npz(p)
    assert str(tmp_path) in str(e.value)
    np.savez(tmp_path / "shape.npz", betas=np.zeros(16), gender="male")
    with pytest.raises(MotionFormatError) as e:
        read_clip(tmp_path / "shape.npz")
    assert e.value.reason == "unsupported_format"


# ----------------------------------------------------------------------------- bad input

def humanoid_text(tmp_path) -> str:
    write_humanoid(tmp_path / "good.bvh", T=6)
    return (tmp_path / "good.bvh").read_text()


def expect_error(path, reason, **kw):
    with pytest.raises(MotionFormatError) as e:
        read_clip(path, **kw)
    assert e.value.reason == reason, str(e.value)
    assert str(path) in str(e.value) and e.value.path == str(path)
    return e.value


def test_bad_bvh_inputs(tmp_path):
    good = humanoid_text(tmp_path)
    head, motion = good.split("MOTION\n")
    lines = motion.splitlines()                    # Frames, Frame Time, 6 frame lines
    cases = {
        "empty": "",
        "truncated": good[: len(good) - len(lines[-1]) // 2 - 1],       # last frame cut mid-line
        "truncated2": head + "MOTION\n" + "\n".join(lines[:5]) + "\n",  # 3 of 6 frames
        "truncated3": head,                                               # no MOTION at all
        "nan": head + "MOTION\n" + "\n".join(lines[:3] + [lines[3].replace(lines[3].split()[7], "nan", 1)] + lines[4:]),
        "channel_count": head + "MOTION\n" + "\n".join(lines[:3] + [lines[3].rsplit(" ", 1)[0]] + lines[4:]),
        "bad_number": head + "MOTION\n" + "\n".join(lines[:3] + [lines[3].replace(lines[3].split()[7], "1.2.3", 1)] + lines[4:]),
        "hierarchy": good.replace("}\nMOTION", "}\nJOINT Orphan\n{\n\tOFFSET 0 0 0\n\tCHANNELS 3 Zrotation Xrotation Yrotation\n}\nMOTION"),
        "too_short": head + "MOTION\nFrames: 1\nFrame Time: 0.1\n" + lines[2] + "\n",
        "unknown_rig": good.replace("LeftUpLeg", "Foo").replace("RightUpLeg", "Bar"),
    }
    reasons = {"truncated2": "truncated", "truncated3": "truncated"}
    for name, text in cases.items():
        p = tmp_path / f"{name}.bvh"
        p.write_text(text)
        err = expect_error(p, reasons.get(name, name))
        if name == "unknown_rig":
            assert isinstance(err, UnknownRigError) and set(err.missing) == {"l_hip", "r_hip"}
        if name == "channel_count":
            assert "frame 1" in err.problem
        if name == "hierarchy":
            assert "Orphan" in err.problem
    p = tmp_path / "garbage.bvh"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_error(p, "binary")
    p = tmp_path / "big.bvh"
    p.write_text(good)
    expect_error(p, "too_large", max_bytes=100)
    with pytest.raises(MotionFormatError) as e:
        read_bvh(p, max_bytes=100)
    assert e.value.reason == "too_large"
    expect_error(tmp_path / "missing.bvh", "io")
    (tmp_path / "x.fbx").write_bytes(b"Kaydara FBX Binary")
    expect_error(tmp_path / "x.fbx", "unsupported_format")


def test_bad_asf_amc_inputs(cmu_dir, tmp_path):
    asf = (cmu_dir / "11.asf").read_text()
    amc = (cmu_dir / "11_01.amc").read_text().splitlines()
    (tmp_path / "11.asf").write_text(asf)
    (tmp_path / "11_01.amc").write_text("\n".join(amc[:-10]) + "\n")          # last frame cut
    expect_error(tmp_path / "11_01.amc", "truncated")
    bad = [ln + " 0" if ln.startswith("ltibia") else ln for ln in amc]
    (tmp_path / "11_02.amc").write_text("\n".join(bad) + "\n")
    expect_error(tmp_path / "11_02.amc", "channel_count")
    (tmp_path / "99_01.amc").write_text("\n".join(amc) + "\n")              # no 99.asf
    expect_error(tmp_path / "99_01.amc", "io")
    expect_error(tmp_path / "11.asf", "unsupported_format")


def test_bad_npy_inputs(tmp_path):
    np.save(tmp_path / "feat.npy", np.zeros((10, 263), np.float32))
    expect_error(tmp_path / "feat.npy", "unsupported_format")
    np.save(tmp_path / "one.npy", np.zeros((1, 22, 3), np.float32))
    expect_error(tmp_path / "one.npy", "too_short")
    j = np.zeros((5, 22, 3), np.float32)
    j[2, 3, 1] = np.nan
    np.save(tmp_path / "nan.npy", j)
    expect_error(tmp_path / "nan.npy", "nan")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    expect_error(tmp_path / "junk.npy", "truncated")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    expect_error(tmp_path / "obj.npy", "unsupported_format")          # never unpickles
    (tmp_path / "text.npy").write_text("1 2 3")
    expect_error(tmp_path / "text.npy", "unsupported_format")


def test_supported_extensions():
    assert set(SUPPORTED_EXTENSIONS) == {".bvh", ".amc", ".npy", ".npz", ".skeleton"}
