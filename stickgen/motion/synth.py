"""Seeded procedural synthesizer: labelled 3D clips written as BVH.

Used for the embedded demo, for tests, and as augmentation data the project can ship. Clips are
written as BVH files so they go through exactly the same read -> convert -> score path as real
mocap. Every clip is a pure function of (action, seed): body proportions, tempo, amplitudes,
facing, start position and small noise all come from the seed, and amplitudes drift slowly so
no clip is an exact loop (the quality check flags copy-pasted loops).

The rig: a 20-joint Y-up skeleton in centimetres facing +Z (left = +X) with generic names
(Hips, Spine, Chest, Neck, Head, LeftShoulder=clavicle, LeftArm, LeftForeArm, LeftHand, LeftUpLeg,
LeftLeg, LeftFoot, LeftToeBase, ...), arms hanging down at rest; root 6 channels, others 3,
rotation order Z X Y. Sign conventions at rest (column vectors, R = Rz Rx Ry):
  - thigh / upper arm forward (flexion)  = negative X rotation
  - knee flexion (shin back)             = positive X rotation
  - elbow flexion (forearm forward)      = negative X rotation
  - spine bend forward (bow)             = positive X rotation
  - left arm out to the side             = positive Z rotation (right arm: negative)
  - root yaw psi faces (sin psi, 0, cos psi)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..text.describe import describe

FPS = 30  # like most mocap; the converter resamples to 25 by real time

# name, parent, offset (cm)
RIG: tuple[tuple[str, str | None, tuple[float, float, float]], ...] = (
    ("Hips", None, (0.0, 0.0, 0.0)),
    ("Spine", "Hips", (0.0, 10.0, 0.0)),
    ("Chest", "Spine", (0.0, 15.0, 0.0)),
    ("Neck", "Chest", (0.0, 22.0, 0.0)),
    ("Head", "Neck", (0.0, 10.0, 0.0)),
    ("LeftShoulder", "Chest", (3.0, 18.0, 0.0)),
    ("LeftArm", "LeftShoulder", (15.0, 0.0, 0.0)),
    ("LeftForeArm", "LeftArm", (0.0, -28.0, 0.0)),
    ("LeftHand", "LeftForeArm", (0.0, -25.0, 0.0)),
    ("RightShoulder", "Chest", (-3.0, 18.0, 0.0)),
    ("RightArm", "RightShoulder", (-15.0, 0.0, 0.0)),
    ("RightForeArm", "RightArm", (0.0, -28.0, 0.0)),
    ("RightHand", "RightForeArm", (0.0, -25.0, 0.0)),
    ("LeftUpLeg", "Hips", (9.0, -5.0, 0.0)),
    ("LeftLeg", "LeftUpLeg", (0.0, -42.0, 0.0)),
    ("LeftFoot", "LeftLeg", (0.0, -42.0, 0.0)),
    ("LeftToeBase", "LeftFoot", (0.0, -6.0, 12.0)),
    ("RightUpLeg", "Hips", (-9.0, -5.0, 0.0)),
    ("RightLeg", "RightUpLeg", (0.0, -42.0, 0.0)),
    ("RightFoot", "RightLeg", (0.0, -42.0, 0.0)),
    ("RightToeBase", "RightFoot", (0.0, -6.0, 12.0)),
)
NAMES = tuple(r[0] for r in RIG)
HIP_HEIGHT = 89.0  # cm: thigh + shin + ankle offset so the feet touch y ~ 0 at rest

#: actions the synthesizer can animate
SYNTH_ACTIONS = ("walk", "run", "jump", "wave", "bow", "kick", "punch", "sit", "turn", "idle",
                 "clap", "walk_backward", "sidestep", "squat")

STYLE_BY_TEMPO = (("old", 0.75), ("tired", 0.85), ("normal", 1.0), ("happy", 1.1), ("active", 1.25))


@dataclass
class SynthClip:
    action: str
    style: str
    seed: int
    description: str
    descriptions: list[str]
    fps: int
    root_pos: np.ndarray   # [T, 3] cm
    angles: dict           # joint name -> [T, 3] degrees (z, x, y)


def _smooth_noise(rng: np.random.Generator, T: int, scale: float, knots: int = 6) -> np.ndarray:
    """Slow random drift in [-scale, scale]: cubic-ish interpolation of a few random knots."""
    k = rng.uniform(-1, 1, knots)
    x = np.linspace(0, knots - 1, T)
    i0 = np.minimum(np.floor(x).astype(int), knots - 2)
    w = x - i0
    w = w * w * (3 - 2 * w)
    return scale * (k[i0] * (1 - w) + k[i0 + 1] * w)


def _ease(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _pulse(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 envelope: eases up over `rise` s from `start`, holds, eases down over `fall`."""
    return _ease((t - start) / rise) * (1.0 - _ease((t - start - rise - hold) / fall))


def synthesize(action: str, seed: int, seconds: float | None = None) -> SynthClip:
    """One labelled clip. Deterministic in (action, seed)."""
    if action not in SYNTH_ACTIONS:
        raise ValueError(f"synthesizer cannot animate {action!r}; it knows {', '.join(SYNTH_ACTIONS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SYNTH_ACTIONS.index(action)]))
    style, tempo = STYLE_BY_TEMPO[rng.integers(len(STYLE_BY_TEMPO))]
    tempo *= rng.uniform(0.93, 1.07)
    dur = seconds if seconds is not None else float(rng.uniform(4.0, 9.0))
    T = int(round(dur * FPS))
    t = np.arange(T) / FPS
    A = {n: np.zeros((T, 3)) for n in NAMES}  # (z, x, y) degrees
    yaw0 = rng.uniform(-180, 180)
    yaw = np.full(T, yaw0)
    pos = np.zeros((T, 3))
    pos[:, 1] = HIP_HEIGHT
    amp = 1.0 + _smooth_noise(rng, T, 0.12)  # slow amplitude drift: never an exact loop

    def arms_rest(spread: float = 6.0):
        A["LeftArm"][:, 0] += spread
        A["RightArm"][:, 0] -= spread

    def gait(speed: float, freq: float, hip: float, knee: float, arm: float, bob: float, direction: float = 1.0):
        """Walk/run cycle along the facing (direction -1 = backwards). freq = strides per second."""
        ph = 2 * np.pi * np.cumsum(np.full(T, freq * tempo)) / FPS + rng.uniform(0, 2 * np.pi)
        h = hip * amp
        A["LeftUpLeg"][:, 1] = -h * np.sin(ph) * direction
        A["RightUpLeg"][:, 1] = h * np.sin(ph) * direction
        # the knee bends during the swing (forward-moving) half of each leg's cycle
        A["LeftLeg"][:, 1] = knee * amp * np.clip(np.cos(ph), 0, None) ** 1.5 + 5
        A["RightLeg"][:, 1] = knee * amp * np.clip(-np.cos(ph), 0, None) ** 1.5 + 5
        A["LeftArm"][:, 1] = arm * amp * np.sin(ph) * direction
        A["RightArm"][:, 1] = -arm * amp * np.sin(ph) * direction
        pos[:, 1] += bob * np.abs(np.cos(ph)) - bob
        return speed * tempo * direction

    speed = 0.0
    lateral = 0.0
    if action == "walk":
        arms_rest()
        speed = gait(rng.uniform(110, 140), 0.9, 22, 45, 18, 2.5)
        A["LeftForeArm"][:, 1] = -10
        A["RightForeArm"][:, 1] = -10
    elif action == "walk_backward":
        arms_rest()
        speed = gait(rng.uniform(60, 80), 0.8, 15, 30, 10, 1.5, direction=-1.0)
    elif action == "run":
        arms_rest(10)
        speed = gait(rng.uniform(280, 360), 1.4, 38, 95, 35, 6.0)
        A["Spine"][:, 1] = 8
        A["LeftForeArm"][:, 1] = -85
        A["RightForeArm"][:, 1] = -85
    elif action == "sidestep":
        arms_rest()
        ph = 2 * np.pi * 0.8 * tempo * t
        open_ = np.clip(np.sin(ph), 0, None)
        A["LeftUpLeg"][:, 0] = 14 * amp * open_
        A["LeftArm"][:, 0] += 8 * amp * open_
        A["RightUpLeg"][:, 0] = -6 * amp * open_
        lateral = rng.choice([-1.0, 1.0]) * rng.uniform(45, 60) * tempo
    elif action == "jump":
        arms_rest()
        n = max(1, int(dur // 2.2))
        for k in range(n):
            s = 0.5 + k * dur / n
            crouch = _pulse(t, s, 0.35, 0.05, 0.15) + _pulse(t, s + 0.95, 0.25, 0.05, 0.4)
            A["LeftUpLeg"][:, 1] -= 55 * crouch
            A["RightUpLeg"][:, 1] -= 55 * crouch
            A["LeftLeg"][:, 1] += 95 * crouch
            A["RightLeg"][:, 1] += 95 * crouch
            A["Spine"][:, 1] += 25 * crouch
            pos[:, 1] -= 28 * crouch
            air = (t - (s + 0.55)) / 0.4
            fly = np.where((air > 0) & (air < 1), 4 * air * (1 - air), 0.0)
            pos[:, 1] += 40 * amp * fly
            A["LeftArm"][:, 1] -= 150 * fly
            A["RightArm"][:, 1] -= 150 * fly
    elif action in ("wave", "clap"):
        arms_rest()
        env = _pulse(t, 0.4, 0.6, dur - 2.0, 0.6)
        both = action == "clap" or rng.random() < 0.35
        if action == "wave":
            osc = np.sin(2 * np.pi * 1.8 * tempo * t)
            A["RightArm"][:, 0] -= 130 * env * amp
            A["RightForeArm"][:, 0] -= 25 * osc * env
            A["RightForeArm"][:, 1] -= 20 * env
            if both:
                A["LeftArm"][:, 0] += 130 * env * amp
                A["LeftForeArm"][:, 0] += 25 * osc * env
                A["LeftForeArm"][:, 1] -= 20 * env
        else:
            osc = 0.5 + 0.5 * np.sin(2 * np.pi * 2.2 * tempo * t)
            for side, sgn in (("Left", 1), ("Right", -1)):
                A[f"{side}Arm"][:, 1] -= 70 * env
                A[f"{side}Arm"][:, 2] -= sgn * (10 + 35 * osc) * env
                A[f"{side}ForeArm"][:, 1] -= 60 * env
    elif action == "bow":
        arms_rest(3)
        n = 1 + int(rng.random() < 0.4)
        for k in range(n):
            env = _pulse(t, 0.6 + k * dur / n, 0.8, 0.6, 0.9)
            depth = rng.uniform(35, 60)
            A["Spine"][:, 1] += 0.45 * depth * env * amp
            A["Chest"][:, 1] += 0.45 * depth * env * amp
            A["Neck"][:, 1] += 0.1 * depth * env
    elif action == "kick":
        arms_rest(12)
        n = max(1, int(dur // 2.0))
        side = "Right" if rng.random() < 0.7 else "Left"
        for k in range(n):
            env = _pulse(t, 0.5 + k * dur / n, 0.25, 0.05, 0.35)
            chamber = _pulse(t, 0.5 + k * dur / n, 0.15, 0.0, 0.15)
            A[f"{side}UpLeg"][:, 1] -= 80 * env * amp
            A[f"{side}Leg"][:, 1] += 70 * chamber
            A["Spine"][:, 1] -= 10 * env
    elif action == "punch":
        arms_rest(10)
        for side in ("Left", "Right"):
            A[f"{side}Arm"][:, 1] -= 40
            A[f"{side}ForeArm"][:, 1] -= 110
        n = max(2, int(dur // 0.9))
        for k in range(n):
            side = ("Left", "Right")[k % 2]
            env = _pulse(t, 0.4 + k * (dur - 0.8) / n, 0.12, 0.08, 0.25)
            A[f"{side}Arm"][:, 1] -= 50 * env * amp
            A[f"{side}ForeArm"][:, 1] += 100 * env
    elif action in ("sit", "squat"):
        arms_rest()
        hold = dur - 3.2
        env = _pulse(t, 0.6, 1.0, hold, 1.0)
        depth = 1.0 if action == "sit" else rng.uniform(0.7, 0.9)
        A["LeftUpLeg"][:, 1] -= 90 * env * depth
        A["RightUpLeg"][:, 1] -= 90 * env * depth
        A["LeftLeg"][:, 1] += 90 * env * depth
        A["RightLeg"][:, 1] += 90 * env * depth
        A["Spine"][:, 1] += 20 * env
        if action == "squat":
            A["LeftArm"][:, 1] -= 80 * env
            A["RightArm"][:, 1] -= 80 * env
        # the shin stays vertical, so the hips drop by thigh length * (1 - cos(hip flexion))
        pos[:, 1] -= 42 * (1 - np.cos(np.radians(90 * env * depth)))
        pos[:, 2] -= 0  # seat under the hips
    elif action == "turn":
        arms_rest()
        turn = rng.choice([-1, 1]) * rng.uniform(150, 200)
        env = _ease((t - 0.5) / max(dur - 1.0, 0.5))
        yaw = yaw0 + turn * env
        step = np.abs(np.gradient(env)) * FPS
        ph = 2 * np.pi * 1.6 * t
        A["LeftUpLeg"][:, 1] = -12 * np.sin(ph) * np.clip(step, 0, 1)
        A["RightUpLeg"][:, 1] = 12 * np.sin(ph) * np.clip(step, 0, 1)
    elif action == "idle":
        arms_rest(4)
        A["Spine"][:, 0] = 2.0 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6))
        A["Chest"][:, 1] = 1.5 * np.sin(2 * np.pi * 0.3 * t)
        A["Neck"][:, 2] = _smooth_noise(rng, T, 25.0)
        pos[:, 0] += _smooth_noise(rng, T, 1.5)

    # small per-joint noise (mocap is never perfectly clean) and a slight lean per style
    for n in NAMES[1:]:
        A[n] += _smooth_noise(rng, T, 1.0, knots=max(4, int(dur * 3)))[:, None] * rng.uniform(0.5, 1.5, 3)
    if style == "old":
        A["Spine"][:, 1] += 12
        A["Neck"][:, 1] += 8
    yaw_r = np.radians(yaw)
    fwd = np.stack([np.sin(yaw_r), np.zeros(T), np.cos(yaw_r)], 1)
    side = np.stack([np.cos(yaw_r), np.zeros(T), -np.sin(yaw_r)], 1)  # the figure's left
    vel = fwd * speed + side * lateral
    pos[:, [0, 2]] += np.cumsum(vel[:, [0, 2]], 0) / FPS + rng.uniform(-100, 100, 2)
    A["Hips"][:, 2] += yaw

    descs = describe(action, style)
    desc = descs[int(rng.integers(len(descs)))]
    return SynthClip(action, style, seed, desc, descs, FPS, pos, A)


def write_clip_bvh(clip: SynthClip, path: str | Path) -> Path:
    """Write a SynthClip as BVH (+ a `.json` sidecar with its labels and descriptions)."""
    from .bvh import write_bvh

    path = Path(path)
    parents = [None if p is None else NAMES.index(p) for _, p, _ in RIG]
    offsets = np.array([o for _, _, o in RIG], dtype=np.float64)
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")] + [
        ("Zrotation", "Xrotation", "Yrotation")] * (len(RIG) - 1)
    cols = [clip.root_pos]
    for n in NAMES:
        cols.append(clip.angles[n])
    motion = np.concatenate(cols, axis=1)
    write_bvh(path, list(NAMES), parents, offsets, channels, motion, 1.0 / clip.fps)
    path.with_suffix(".json").write_text(json.dumps({
        "action": clip.action, "style": clip.style, "seed": clip.seed,
        "description": clip.description, "descriptions": clip.descriptions, "source": "synthetic",
    }))
    return path


def synthesize_dataset(out_dir: str | Path, n_per_action: int = 4, seed: int = 0,
                       actions: tuple[str, ...] = SYNTH_ACTIONS) -> list[Path]:
    """Write n_per_action clips of each action as `synth_<action>_<k>.bvh` into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for a in actions:
        for k in range(n_per_action):
            clip = synthesize(a, seed * 100_003 + k)
            paths.append(write_clip_bvh(clip, out / f"synth_{a}_{k:03d}.bvh"))
    return paths
