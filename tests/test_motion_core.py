"""Motion core known answers: representation, projection, timing, physics, quality."""

from __future__ import annotations

import numpy as np
import pytest

from stickgen.motion import skeleton as sk
from stickgen.motion.physics import root_physics
from stickgen.motion.projection import choose_view, project
from stickgen.motion.quality import quality_report
from stickgen.motion.timing import cut_window, resample, window_starts

J = sk.J


def standing(T: int = 50) -> np.ndarray:
    """[T,16,3] metres: a 1.75 m person at the origin facing +z (left = +x), Y up."""
    p = {
        "l_hip": (0.1, 0.9, 0), "r_hip": (-0.1, 0.9, 0), "l_knee": (0.1, 0.5, 0), "r_knee": (-0.1, 0.5, 0),
        "l_ankle": (0.1, 0.08, 0), "r_ankle": (-0.1, 0.08, 0), "chest": (0, 1.2, 0), "neck": (0, 1.45, 0),
        "head": (0, 1.6, 0), "l_shoulder": (0.18, 1.42, 0), "r_shoulder": (-0.18, 1.42, 0),
        "l_elbow": (0.2, 1.15, 0), "r_elbow": (-0.2, 1.15, 0), "l_wrist": (0.21, 0.9, 0), "r_wrist": (-0.21, 0.9, 0),
    }
    j = np.zeros((T, 16, 3), np.float64)
    for n, v in p.items():
        j[:, J[n]] = v
    j[:, J["pelvis"]] = 0.5 * (j[:, J["l_hip"]] + j[:, J["r_hip"]])
    return j


def walking(T: int = 120, fps: float = 30.0, speed: float = 1.3) -> np.ndarray:
    """Walk toward +z (the facing) with swinging legs and arms."""
    j = standing(T)
    t = np.arange(T) / fps
    ph = 2 * np.pi * 0.9 * t + 0.4 * np.sin(0.7 * t)  # not an exact loop, like real gait
    j[:, :, 2] += speed * t[:, None]
    for side, s in (("l", 1), ("r", -1)):
        swing = 0.25 * s * np.sin(ph) * (1 + 0.15 * np.sin(0.5 * t))
        j[:, J[f"{side}_knee"], 2] += 0.5 * swing
        j[:, J[f"{side}_ankle"], 2] += swing
        j[:, J[f"{side}_wrist"], 2] -= 0.6 * swing
        j[:, J[f"{side}_elbow"], 2] -= 0.3 * swing
    return j


def waving(T: int = 120, fps: float = 30.0) -> np.ndarray:
    """Stand facing +z, right forearm swings side to side above the head."""
    j = standing(T)
    t = np.arange(T) / fps
    j[:, J["r_elbow"]] = (-0.35, 1.55, 0)
    j[:, J["r_wrist"], 0] = -0.35 + 0.2 * np.sin(2 * np.pi * 1.5 * t)
    j[:, J["r_wrist"], 1] = 1.8
    return j


def rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


# --- representation ---------------------------------------------------------------------------

def test_v3_round_trip_and_connectivity():
    j2 = standing(3)[..., :2].astype(np.float32)
    v3 = sk.joints_to_v3(j2)
    assert v3.shape == (3, 48) and v3.dtype == np.float32
    sk.validate_v3(v3)
    np.testing.assert_array_equal(sk.v3_to_joints(v3), j2)
    # segment order: head starts at the neck, pelvis_width is l_hip -> r_hip
    np.testing.assert_allclose(v3[0, 0:2], j2[0, J["neck"]])
    np.testing.assert_allclose(v3[0, 44:48], np.r_[j2[0, J["l_hip"]], j2[0, J["r_hip"]]])


def test_connectivity_rejects_broken_elbow():
    v3 = sk.joints_to_v3(standing(2)[..., :2])
    v3[1, 16] += 0.3  # l_forearm start moved away from l_upper_arm end
    with pytest.raises(sk.ConnectivityError, match="l_elbow.*frame 1"):
        sk.validate_v3(v3)
    bad = v3.copy()
    bad[0, 5] = np.nan
    with pytest.raises(sk.ConnectivityError, match="non-finite"):
        sk.validate_v3(bad)


def test_legacy_conversions():
    j2 = standing(2)[..., :2].astype(np.float32)
    leg = sk.joints_to_legacy(j2)
    assert leg.shape == (2, 20)
    np.testing.assert_allclose(leg[0, 0:2], j2[0, J["neck"]])  # torso starts at the neck
    v3 = sk.legacy_to_v3(leg)
    sk.validate_v3(v3)
    back = sk.v3_to_legacy(v3)
    np.testing.assert_allclose(back, leg, atol=1e-6)


def test_mirror_swaps_left_and_right():
    j2 = waving(10)[..., :2]
    m = sk.v3_to_joints(sk.mirror_v3(sk.joints_to_v3(j2)))
    np.testing.assert_allclose(m[:, J["l_wrist"], 0], -j2[:, J["r_wrist"], 0], atol=1e-6)
    np.testing.assert_allclose(m[:, J["l_wrist"], 1], j2[:, J["r_wrist"], 1], atol=1e-6)


# --- projection -------------------------------------------------------------------------------

def test_walk_is_seen_from_the_side_facing_plus_x():
    j = walking()
    view = choose_view(j)
    assert view.name == "side"
    j2, _ = project(j, view)
    pel = j2[:, J["pelvis"]]
    assert pel[-1, 0] - pel[0, 0] > 2.0  # 4 s at 1.3 m/s ~ 3 body units toward +x
    assert abs(pel[0, 0]) < 1e-6
    assert (j2[:, J["head"], 1] > j2[:, J["pelvis"], 1]).all()
    assert abs(j2[:, [J["l_ankle"], J["r_ankle"]], 1].min()) < 1e-3  # the floor is y = 0
    height = j2[0, J["head"], 1] - j2[0, J["l_ankle"], 1]
    assert 1.0 < height < 1.2  # 1 unit = ankle->neck chain; the head (not regularised here) is above


def test_wave_is_seen_from_the_front_with_left_on_screen_right():
    j = waving()
    view = choose_view(j)
    assert view.name == "front"
    j2, _ = project(j, view)
    assert (j2[:, J["l_hip"], 0] > j2[:, J["r_hip"], 0]).all()


@pytest.mark.parametrize("deg", [0, 37, 90, 180, 251])
def test_projection_is_invariant_to_vertical_rotation(deg):
    j = walking()
    ref, _ = project(j, choose_view(j))
    jr = j @ rot_y(deg).T + np.array([3.0, 0.0, -7.0])
    out, _ = project(jr, choose_view(jr))
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_view_overrides_and_walk_back():
    j = walking(speed=-0.8)  # walks backwards: facing +z, moving -z
    j2, _ = project(j, choose_view(j))
    assert j2[-1, J["pelvis"], 0] < j2[0, J["pelvis"], 0] - 1.0
    assert choose_view(j, "front").name == "front"
    with pytest.raises(ValueError):
        choose_view(j, "top")


# --- timing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fps_in,T", [(120, 1201), (30, 301), (20, 171), (25, 100), (12.5, 50)])
def test_resample_keeps_duration(fps_in, T):
    x = np.linspace(0, 1, T)[:, None].repeat(3, 1)
    y = resample(x, fps_in, 25)
    dur_in, dur_out = (T - 1) / fps_in, (len(y) - 1) / 25
    assert dur_in - 1 / 25 < dur_out <= dur_in + 1e-9
    # a linear ramp stays a linear ramp in real time
    np.testing.assert_allclose(y[:, 0], np.arange(len(y)) / 25 / dur_in, atol=2e-3)


def test_windows_cover_the_clip_and_pad_with_mask():
    assert window_starts(100) == [0]
    assert window_starts(250) == [0]
    assert window_starts(600, 250, 125) == [0, 125, 250, 350]
    x = np.arange(100, dtype=np.float32)[:, None]
    seg, mask = cut_window(x, 0, 250)
    assert seg.shape == (250, 1) and mask.sum() == 100 and (seg[100:] == 99).all()


# --- physics and quality ----------------------------------------------------------------------

def test_root_physics_known_answers():
    T, fps = 50, 25.0
    t = np.arange(T) / fps
    j2 = np.repeat(standing(1)[..., :2], T, 0)
    j2[:, :, 0] += 1.5 * t[:, None]              # 1.5 units/s along x
    j2[:, :, 1] += 0.5 * -9.8 * (t ** 2)[:, None]  # falling: a_y = -9.8
    phys = root_physics(sk.joints_to_v3(j2), fps)
    np.testing.assert_allclose(phys[:, 0], 1.5, atol=1e-4)
    np.testing.assert_allclose(phys[:, 3], -9.8, atol=1e-3)
    np.testing.assert_allclose(phys[:, 2], 0.0, atol=1e-3)
    np.testing.assert_allclose(phys[:, 4:6], phys[:, 0:2])
    mask = np.arange(T) < 30
    assert (root_physics(sk.joints_to_v3(j2), fps, mask)[30:] == 0).all()


def _v3(j3: np.ndarray, fps: float = 30.0):
    view = choose_view(j3)
    j2, cam = project(j3, view)
    both = resample(np.concatenate([j2, cam], -1), fps, 25)
    return sk.joints_to_v3(both[..., :2]), both[..., 2:]


def test_quality_clean_vs_broken():
    v3, j3 = _v3(walking(240))
    good = quality_report(v3, 25, j3)
    # (this toy walk's feet slide, so foot skate costs it; real clips are scored in test_convert)
    assert good["finite"] and good["physics_valid"] and good["quality"] > 0.75
    assert good["limb_error"] < 0.05 and good["explosion_ratio"] == 0 and good["repetition"] < 0.5

    nan = v3.copy()
    nan[10, 3] = np.nan
    assert quality_report(nan, 25)["quality"] == 0.0

    teleport = v3.copy()
    teleport[50:, 0::2] += 5.0  # the whole body jumps 5 units in one frame
    bad = quality_report(teleport, 25, None)
    assert bad["explosion_ratio"] > 0 and not bad["physics_valid"] and bad["quality"] < good["quality"]

    frozen = np.repeat(v3[:1], len(v3), 0)
    fr = quality_report(frozen, 25)
    assert fr["static_ratio"] == 1.0 and fr["quality"] < good["quality"]

    loop = np.concatenate([v3[:50]] * 5)  # a copy-pasted 2 s loop
    assert quality_report(loop, 25)["repetition"] > 0.95

    stretched = j3.copy()
    stretched[::7, J["l_wrist"], 1] -= 0.3  # forearm stretches every 7th frame
    assert quality_report(v3, 25, stretched)["limb_error"] > 0.15
