"""Mocap file -> canonical windows, on the real data (skips cleanly without it) and on
synthesized clips: the whole per-file path Ray Data maps over every input."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from stickgen.motion import skeleton as sk
from stickgen.motion.convert import ConvertConfig, clip_to_windows, convert_file, split_of
from stickgen.motion.projection import body_axes, choose_view, project
from stickgen.motion.readers import read_clip
from stickgen.motion.synth import SYNTH_ACTIONS, synthesize, write_clip_bvh

J = sk.J
WHOLE = ConvertConfig(window=4000, stride=4000)  # one window = the whole clip, for shape tests


def _whole(path):
    rows, info = convert_file(str(path), WHOLE)
    r = rows[0]
    return r["motion"][r["mask"]], r, info


def _bandai(bandai_dir, pattern):
    files = sorted(bandai_dir.glob(pattern))
    assert files, pattern
    return files


def test_every_bandai_clip_converts_and_connects(bandai_dir):
    files = sorted(bandai_dir.glob("*.bvh"))
    assert len(files) == 174
    for f in files:
        rows, info = convert_file(str(f))
        assert rows, f
        for r in rows:
            sk.validate_v3(r["motion"])
            assert r["motion"].shape == (250, 48) and r["mask"].sum() == r["n_frames"] > 0
            assert r["physics_valid"], (f, r["max_root_speed"], r["max_root_accel"], r["limb_error"])
            assert r["quality"] >= 0.5, (f, r["quality"])
            assert abs(r["motion"][0, 10]) < 1e-6  # every window starts with the pelvis at x = 0
        assert len({r["split"] for r in rows}) == 1  # windows of one clip never straddle splits


def test_every_cmu_clip_converts(cmu_dir, shared_data):
    paths = sorted(cmu_dir.glob("*.bvh")) + sorted(cmu_dir.glob("*.amc"))
    paths.append(shared_data / "humanml3d" / "012314_new_joints.npy")
    for p in paths:
        rows, info = convert_file(str(p))
        for r in rows:
            sk.validate_v3(r["motion"])
            assert np.isfinite(r["motion"]).all()
        m = rows[0]["motion"][rows[0]["mask"]]
        j = sk.v3_to_joints(m)
        assert (j[:, J["head"], 1] > j[:, J["pelvis"], 1]).mean() > 0.9, p  # upright most of the time


def test_bandai_walk_is_upright_alternating_and_moves_plus_x(bandai_dir):
    for f in _bandai(bandai_dir, "dataset-1_walk_*_001.bvh"):
        m, r, info = _whole(f)
        j = sk.v3_to_joints(m)
        assert info["view"]["view"] == "side", f
        assert (j[:, J["head"], 1] > j[:, J["pelvis"], 1]).mean() >= 0.99
        assert j[-1, J["pelvis"], 0] - j[0, J["pelvis"], 0] > 1.0, f  # toward +x
        lead = np.sign(j[:, J["l_ankle"], 0] - j[:, J["r_ankle"], 0])
        changes = np.count_nonzero(np.diff(lead[lead != 0]))
        assert changes >= 2, f"feet do not alternate in {f}"
        assert r["action_label"] == "walk" and "walk" in r["description"] or "trudge" in r["description"] \
            or "shuffle" in r["description"] or "stride" in r["description"]


def test_bandai_walk_back_moves_minus_x(bandai_dir):
    for f in _bandai(bandai_dir, "dataset-1_walk-back_*_001.bvh"):
        m, r, info = _whole(f)
        j = sk.v3_to_joints(m)
        assert j[-1, J["pelvis"], 0] < j[0, J["pelvis"], 0] - 0.5, f


def test_bandai_walk_left_moves_toward_the_bodys_left(bandai_dir):
    """Bandai's walk-left/right are diagonal walks (20-55 deg off the facing, measured), so their
    travel has a lateral component toward the named side; a clip whose lateral travel dominates
    its forward travel must be seen from the front (the figure's left on screen right)."""
    for side, sign in (("left", 1), ("right", -1)):
        for f in _bandai(bandai_dir, f"dataset-1_walk-{side}_*_001.bvh"):
            j3 = read_clip(str(f)).canonical()
            left, facing = body_axes(j3)
            d = j3[-1, J["pelvis"]] - j3[0, J["pelvis"]]
            d[1] = 0
            assert sign * float(d @ left) > 0.2 * np.linalg.norm(d), f
            view = choose_view(j3)
            if abs(d @ left) > abs(d @ facing):
                assert view.name == "front", f
            j2, _ = project(j3, view)
            if view.name == "front":  # moves sideways on screen: toward screen right for walk-left
                assert sign * (j2[-1, J["pelvis"], 0] - j2[0, J["pelvis"], 0]) > 0.5


def test_synth_sidestep_is_seen_from_the_front_and_moves_sideways(tmp_path):
    p = write_clip_bvh(synthesize("sidestep", seed=3, seconds=6.0), tmp_path / "s.bvh")
    m, r, info = _whole(p)
    assert info["view"]["view"] == "front"
    j = sk.v3_to_joints(m)
    assert abs(j[-1, J["pelvis"], 0] - j[0, J["pelvis"], 0]) > 1.0
    assert (j[:, J["l_hip"], 0] > j[:, J["r_hip"], 0]).mean() > 0.95  # left on screen right


@pytest.mark.parametrize("deg", [23, 90, 161, 270])
def test_real_clip_projection_is_rotation_invariant(bandai_dir, deg):
    clip = read_clip(str(_bandai(bandai_dir, "dataset-1_bow_normal_001.bvh")[0]))
    ref = project(clip.canonical(), choose_view(clip.canonical()))[0]
    a = np.radians(deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32)
    clip.joints = clip.joints @ R.T + np.array([5.0, 0.0, -2.0], np.float32)
    rot = clip.canonical()
    np.testing.assert_allclose(project(rot, choose_view(rot))[0], ref, atol=2e-4)


def test_bow_and_wave_views(bandai_dir):
    """A bow varies along the facing (side view); a two-handed wave varies laterally (front)."""
    views = [_whole(f)[2]["view"]["view"] for f in _bandai(bandai_dir, "dataset-1_bow_*_001.bvh")]
    assert views.count("side") >= 0.7 * len(views)
    views = [_whole(f)[2]["view"]["view"] for f in _bandai(bandai_dir, "dataset-1_byebye_*_001.bvh")]
    assert views.count("front") >= 0.7 * len(views)


def test_long_clip_windows_and_short_clip_padding(cmu_dir, bandai_dir):
    rows, info = convert_file(str(cmu_dir / "01_01.bvh"))  # 22.9 s at 120 fps
    assert info["frames_25"] == pytest.approx(2752 / 120 * 25, abs=2)
    assert len(rows) >= 4 and [r["window_start"] for r in rows][:3] == [0, 125, 250]
    assert rows[-1]["window_start"] + 250 == info["frames_25"]  # the tail is covered
    rows, info = convert_file(str(_bandai(bandai_dir, "dataset-1_dash_normal_001.bvh")[0]))  # 0.67 s
    assert len(rows) == 1 and rows[0]["n_frames"] == info["frames_25"] < 250
    assert (rows[0]["physics"][rows[0]["n_frames"]:] == 0).all()


def test_split_is_by_clip_and_stable():
    assert split_of("bandai/x") == split_of("bandai/x")
    splits = [split_of(f"c{i}") for i in range(3000)]
    frac = {s: splits.count(s) / 3000 for s in ("train", "val", "test")}
    assert 0.77 < frac["train"] < 0.83 and 0.08 < frac["val"] < 0.12


# --- synthesizer ------------------------------------------------------------------------------

def test_every_synth_action_converts_with_its_label(tmp_path):
    for i, action in enumerate(SYNTH_ACTIONS):
        p = write_clip_bvh(synthesize(action, seed=i), tmp_path / f"{action}.bvh")
        rows, info = convert_file(str(p))
        assert info["action"] == action and rows[0]["source"] == "synthetic"
        assert rows[0]["description"] and rows[0]["quality"] >= 0.5, (action, rows[0]["quality"])
        assert rows[0]["physics_valid"], action
        sk.validate_v3(rows[0]["motion"])


def test_synth_is_deterministic(tmp_path):
    a = write_clip_bvh(synthesize("walk", seed=7), tmp_path / "a.bvh").read_bytes()
    b = write_clip_bvh(synthesize("walk", seed=7), tmp_path / "b.bvh").read_bytes()
    c = write_clip_bvh(synthesize("walk", seed=8), tmp_path / "c.bvh").read_bytes()
    assert a == b and a != c


def test_synth_walk_walks_and_jump_jumps(tmp_path):
    m, _, info = _whole(write_clip_bvh(synthesize("walk", seed=1, seconds=5), tmp_path / "w.bvh"))
    j = sk.v3_to_joints(m)
    assert info["view"]["view"] == "side" and j[-1, J["pelvis"], 0] > 2.0
    m, _, _ = _whole(write_clip_bvh(synthesize("jump", seed=1, seconds=5), tmp_path / "j.bvh"))
    j = sk.v3_to_joints(m)
    ank = j[:, [J["l_ankle"], J["r_ankle"]], 1].min(1)
    assert ank.max() - ank.min() > 0.1  # both feet leave the floor
