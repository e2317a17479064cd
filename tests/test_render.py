"""Rendering (GIF / MP4 / SVG / PNG) and the `.motion` JSON format."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image, ImageSequence

from stickgen.errors import MotionFormatError
from stickgen.motion import skeleton as sk
from stickgen.render import grid_png, read_motion_json, render, render_frames, to_motion_json, write_motion_json
from stickgen.render.render import BG, INK, ffmpeg_exe, fit_camera

FPS = 25


def figure(T: int = 50, walk: float = 0.0, swing: float = 0.5) -> np.ndarray:
    """A v3 clip [T, 48]: a standing figure (head at y ~ 1, feet on y = 0) whose limbs swing by
    `swing` radians and whose body moves `walk` units to +x over the clip."""
    t = np.arange(T) / FPS
    x = walk * np.arange(T) / max(T - 1, 1)
    a = swing * np.sin(2 * np.pi * t)
    j = np.zeros((T, 16, 2))

    def put(name, px, py):
        j[:, sk.J[name], 0], j[:, sk.J[name], 1] = px, py

    put("l_hip", x - 0.07, 0.5)
    put("r_hip", x + 0.07, 0.5)
    put("chest", x, 0.7)
    put("neck", x, 0.85)
    put("head", x, 0.95)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        hx = x + (-0.07 if side == "l" else 0.07)
        put(f"{side}_knee", hx + 0.25 * np.sin(sign * a), 0.5 - 0.25 * np.cos(a))
        put(f"{side}_ankle", hx + 0.5 * np.sin(sign * a), 0.5 - 0.5 * np.cos(a))
        sx = x + (-0.15 if side == "l" else 0.15)
        put(f"{side}_shoulder", sx, 0.82)
        put(f"{side}_elbow", sx - 0.15 * np.sin(sign * a), 0.82 - 0.15 * np.cos(a))
        put(f"{side}_wrist", sx - 0.3 * np.sin(sign * a), 0.82 - 0.3 * np.cos(a))
    return sk.joints_to_v3(j)


# --------------------------------------------------------------------------------------------
# .motion JSON


def test_json_round_trip_v3(tmp_path):
    m = figure(40)
    actions = ["walk"] * 20 + ["wave"] * 20
    physics = np.random.default_rng(0).normal(size=(40, 6))
    camera = np.tile([0.0, 1.5, 3.0], (40, 1))
    path = write_motion_json(tmp_path / "a.motion", m, description="a walk", actions=actions,
                             physics=physics, camera=camera)
    text = path.read_text()
    assert "\n" not in text and ", " not in text and ": " not in text  # minified
    doc = json.loads(text)
    assert set(doc) == {"meta", "skeleton", "motion", "actions", "physics", "camera"}
    assert set(doc["meta"]) == {"version", "generator", "created_at", "fps", "duration", "total_frames", "description"}
    assert doc["meta"]["version"] == "1.0" and doc["meta"]["fps"] == 25 and isinstance(doc["meta"]["fps"], int)
    assert doc["meta"]["total_frames"] == 40 and doc["meta"]["duration"] == pytest.approx(1.6)
    assert doc["meta"]["generator"].startswith("stickgen ")
    assert doc["skeleton"] == {"type": "stick_figure_12_segment_v3", "joint_format": "xy_lines_flat",
                               "input_dim": 48, "segments": list(sk.V3_SEGMENT_NAMES)}
    assert len(doc["motion"]) == 40 * 48 and all(round(v, 4) == v for v in doc["motion"])

    motion, meta = read_motion_json(path)
    assert motion.dtype == np.float32 and motion.shape == (40, 48)
    np.testing.assert_allclose(motion, m, atol=5.1e-5)
    assert meta["description"] == "a walk" and meta["fps"] == 25 and meta["actions"] == actions
    np.testing.assert_allclose(meta["physics"], physics, atol=5.1e-5)
    np.testing.assert_allclose(meta["camera"], camera, atol=5.1e-5)
    assert sk.is_connected(motion, atol=2e-4)


def test_json_round_trip_legacy_and_dict_input():
    legacy = sk.v3_to_legacy(figure(10))
    doc = to_motion_json(legacy, fps=30)
    assert doc["skeleton"]["type"] == "stick_figure_5_segment" and doc["skeleton"]["input_dim"] == 20
    assert doc["skeleton"]["segments"] == list(sk.LEGACY_SEGMENT_NAMES)
    assert doc["actions"] == [] and "physics" not in doc and "camera" not in doc
    motion, meta = read_motion_json(doc)
    assert motion.shape == (10, 20) and meta["fps"] == 30 and meta["actions"] is None
    np.testing.assert_allclose(motion, legacy, atol=5.1e-5)


def test_writer_rejects_bad_input():
    with pytest.raises(MotionFormatError, match="'motion'"):
        to_motion_json(np.zeros((5, 30)))
    bad = figure(5)
    bad[3, 7] = np.nan
    with pytest.raises(MotionFormatError, match="frame 3"):
        to_motion_json(bad)
    with pytest.raises(MotionFormatError, match="'actions'"):
        to_motion_json(figure(5), actions=["a"] * 4)


def _doc() -> dict:
    return json.loads(json.dumps(to_motion_json(figure(4))))


def _without(d: dict, dotted: str) -> dict:
    *parents, key = dotted.split(".")
    node = d
    for p in parents:
        node = node[p]
    del node[key]
    return d


@pytest.mark.parametrize("mutate, field, reason", [
    (lambda d: _without(d, "meta"), "meta", None),
    (lambda d: _without(d, "meta.fps"), "meta.fps", None),
    (lambda d: _without(d, "meta.total_frames"), "meta.total_frames", None),
    (lambda d: _without(d, "skeleton.input_dim"), "skeleton.input_dim", None),
    (lambda d: _without(d, "motion"), "motion", None),
    (lambda d: d["meta"].update(fps="25"), "meta.fps", None),
    (lambda d: d["meta"].update(fps=0), "meta.fps", None),
    (lambda d: d["skeleton"].update(input_dim=30), "skeleton.input_dim", "channel_count"),
    (lambda d: d["skeleton"].update(type="stick_figure_5_segment"), "skeleton.type", None),
    (lambda d: d.update(motion=d["motion"][:-1]), "motion", "truncated"),
    (lambda d: d.update(motion=d["motion"] + [0.0]), "motion", "channel_count"),
    (lambda d: d["motion"].__setitem__(7, float("nan")), "motion[7]", "nan"),
    (lambda d: d["motion"].__setitem__(9, None), "motion[9]", "bad_number"),
    (lambda d: d["motion"].__setitem__(2, "x"), "motion[2]", "bad_number"),
    (lambda d: d.update(actions=["walk"]), "actions", None),
    (lambda d: d.update(camera=[0.0] * 5), "camera", "truncated"),
])
def test_read_errors_name_the_field(mutate, field, reason):
    doc = _doc()
    mutate(doc)
    with pytest.raises(MotionFormatError) as e:
        read_motion_json(doc)
    assert e.value.problem.startswith(f"field {field!r}:"), e.value.problem
    if reason:
        assert e.value.reason == reason


def test_read_file_errors(tmp_path):
    (tmp_path / "empty.motion").write_text("  ")
    (tmp_path / "cut.motion").write_text(json.dumps(_doc())[:200])
    (tmp_path / "list.motion").write_text("[1, 2]")
    cases = {"empty.motion": "empty", "cut.motion": "truncated", "missing.motion": "io", "list.motion": None}
    for name, reason in cases.items():
        with pytest.raises(MotionFormatError) as e:
            read_motion_json(tmp_path / name)
        assert name in str(e.value)
        if reason:
            assert e.value.reason == reason, (name, e.value)


# --------------------------------------------------------------------------------------------
# raster core, camera, colours


def _ink_mask(frame: np.ndarray, ink: str) -> np.ndarray:
    return (np.abs(frame.astype(int) - np.array(INK[ink])).sum(-1) == 0)


def _not_bg(frame: np.ndarray) -> np.ndarray:
    return (frame != np.array(BG, np.uint8)).any(-1)


def test_render_frames_shape_and_legacy():
    m = figure(12)
    fr = render_frames(m, (200, 120))
    assert fr.shape == (12, 120, 200, 3) and fr.dtype == np.uint8
    assert render_frames(sk.v3_to_legacy(m), (64, 64)).shape == (12, 64, 64, 3)
    assert render_frames(m.reshape(12, 12, 4), (64, 64)).shape == (12, 64, 64, 3)


def test_walk_stays_in_frame_and_moves_right():
    m = figure(100, walk=3.0)
    fr = render_frames(m, (320, 320), ground=False, legend=False, antialias=False)
    ink = np.stack([_not_bg(f) for f in fr])  # [T, H, W]
    assert ink.any(axis=(1, 2)).all()
    border = ink[:, [0, -1], :].any() or ink[:, :, [0, -1]].any()
    assert not border, "figure touches the image border"
    cols = np.arange(fr.shape[2])
    cx = np.array([cols[f.any(axis=0)].mean() for f in ink])
    assert (np.diff(cx[::10]) > 0).all(), cx[::10]
    assert cx[-1] - cx[0] > 0.5 * fr.shape[2]


def test_y_up_and_left_right_colours():
    m = figure(1, swing=0.3)
    fr = render_frames(m, (160, 160), ground=False, legend=False, antialias=False)[0]
    rows = np.arange(fr.shape[0])
    head = rows[_ink_mask(fr, "centre").any(axis=1)].min()
    feet = rows[(_ink_mask(fr, "left") | _ink_mask(fr, "right")).any(axis=1)].max()
    assert head < feet  # head (y ~ 1) is above the feet (y = 0): smaller row index
    assert _ink_mask(fr, "left").sum() > 50 and _ink_mask(fr, "right").sum() > 50
    # The left leg is drawn in the left colour: sample its thigh midpoint.
    cam_px = _px_of(m, (160, 160), [sk.J["l_hip"], sk.J["l_knee"]])
    x, y = cam_px.mean(axis=0).round().astype(int)
    assert tuple(fr[y, x]) == INK["left"]
    # Upside down (handstand) the head is the lowest ink.
    upside = sk.joints_to_v3(sk.v3_to_joints(m) * [1, -1] + [0, 1.2])
    fr2 = render_frames(upside, (160, 160), ground=False, legend=False, antialias=False)[0]
    assert rows[_ink_mask(fr2, "centre").any(axis=1)].max() > rows[(_ink_mask(fr2, "left")).any(axis=1)].max()


def _px_of(m: np.ndarray, size, joints) -> np.ndarray:
    from stickgen.render.render import HEAD_RADIUS, body_scale
    segs = m.reshape(-1, 12, 4).astype(np.float64)
    cam = fit_camera(segs, size, head_r=HEAD_RADIUS * body_scale(segs), ground=False, top_band=0)
    return cam.to_px(sk.v3_to_joints(m)[0, joints])


def test_camera_y_up():
    m = figure(1)
    head, pelvis = _px_of(m, (100, 100), [sk.J["head"], sk.J["pelvis"]])
    assert head[1] < pelvis[1]


def test_mask_skips_invalid_frames():
    m = figure(20)
    m[15:] = np.nan  # padding
    mask = np.arange(20) < 15
    assert render_frames(m, (64, 64), mask=mask).shape[0] == 15
    with pytest.raises(ValueError, match="frame 15"):
        render_frames(m, (64, 64))
    with pytest.raises(ValueError, match="shape"):
        render_frames(np.zeros((5, 30)), (64, 64))


# --------------------------------------------------------------------------------------------
# file formats


def _gif_frames(path):
    im = Image.open(path)
    durations, frames = [], []
    for f in ImageSequence.Iterator(im):
        durations.append(f.info.get("duration"))
        frames.append(np.asarray(f.convert("RGB")))
    return frames, durations, im.info


def test_gif_moving(tmp_path):
    m = figure(30)
    path = render(m, tmp_path / "a.gif", title="swing", frame_counter=True)
    frames, durations, info = _gif_frames(path)
    assert len(frames) == 30 and durations == [40] * 30 and info.get("loop") == 0
    assert frames[0].shape == (320, 320, 3)
    assert all((a != b).any() for a, b in zip(frames, frames[1:]))


def test_gif_static_and_mask(tmp_path):
    still = np.repeat(figure(1), 20, axis=0)
    frames, durations, _ = _gif_frames(render(still, tmp_path / "s.gif"))
    assert len(frames) == 20 and durations == [40] * 20
    assert all((f == frames[0]).all() for f in frames)
    mask = np.zeros(30, bool)
    mask[5:17] = True
    frames, _, _ = _gif_frames(render(figure(30), tmp_path / "m.gif", mask=mask, size=(100, 80)))
    assert len(frames) == 12 and frames[0].shape == (80, 100, 3)


def test_gif_matches_raster_core(tmp_path):
    m = figure(10)
    frames, _, _ = _gif_frames(render(m, tmp_path / "a.gif", size=(96, 96), legend=False))
    ref = render_frames(m, (96, 96), legend=False)
    # The fixed GIF palette has 8 blend levels per ink: anti-aliased edge pixels move a little
    # (most where two inks meet), everything else is exact.
    err = np.abs(np.stack(frames).astype(int) - ref.astype(int))
    assert err.mean() < 0.5 and (err.max(-1) > 40).mean() < 0.002, (err.mean(), (err.max(-1) > 40).mean())


def _ffmpeg_count_frames(path) -> tuple[int, str]:
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                       capture_output=True, text=True, check=True)
    return int(re.findall(r"frame=\s*(\d+)", r.stderr)[-1]), r.stderr


def test_mp4(tmp_path):
    m = figure(40, walk=1.0)
    path = render(m, tmp_path / "a.mp4", size=(161, 121))  # odd sizes are rounded up to even
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    n, log = _ffmpeg_count_frames(path)
    assert n == 40
    assert "h264" in log and "yuv420p" in log and "162x122" in log
    mask = np.arange(40) >= 10
    assert _ffmpeg_count_frames(render(m, tmp_path / "b.mp4", mask=mask, size=(64, 64)))[0] == 30


def test_svg(tmp_path):
    T = 30
    path = render(figure(T, walk=1.0), tmp_path / "a.svg", title="a <walk> & more", trail=True)
    root = ET.parse(path).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    anims = root.findall(".//s:animate", ns)
    assert len(anims) == 12 * 4 + 2
    for a in anims:
        assert len(a.get("values").split(";")) == T
        assert a.get("dur") == f"{T / FPS:g}s" and a.get("repeatCount") == "indefinite"
    assert len(root.findall(".//s:line", ns)) >= 12 and root.find(".//s:circle", ns) is not None
    mask = np.arange(T) < 20
    root = ET.parse(render(figure(T), tmp_path / "b.svg", mask=mask)).getroot()
    a = root.find(".//s:animate", ns)
    assert len(a.get("values").split(";")) == 20 and a.get("dur") == "0.8s"


def test_png_contact_sheet_and_grid(tmp_path):
    path = render(figure(50, walk=2.0), tmp_path / "a.png", size=(100, 100), sheet_frames=8, sheet_cols=4)
    im = Image.open(path)
    assert im.format == "PNG" and im.size == (400, 200)
    path = render(figure(50), tmp_path / "t.png", size=(100, 100), sheet_frames=3, title="hello")
    assert Image.open(path).size[0] == 300
    g = grid_png([figure(30), sk.v3_to_legacy(figure(50, walk=1.0))], tmp_path / "g.png",
                 labels=["one", "two"], frames_per_clip=5, cell_size=(80, 80))
    im = Image.open(g)
    assert im.size[0] == 5 * 80 and im.size[1] > 2 * 80
    arr = np.asarray(im.convert("RGB"))
    assert (arr != 255).any(axis=-1).mean() > 0.01


def test_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported"):
        render(figure(3), tmp_path / "a.avi")
    assert not list(tmp_path.iterdir())
