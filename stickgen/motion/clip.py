"""`Clip`: what every reader returns — 3D joint positions of one take, in metres, +Y up."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .skeleton import JOINTS, J


@dataclass
class Clip:
    """One motion-capture take.

    joints:      [T, J, 3] float32 world positions of every rig joint, metres, +Y up.
    fps:         native frame rate (frames per second).
    joint_names: the rig's J joint names, in array order.
    mapping:     canonical joint name (see `skeleton.JOINTS`) -> rig joint indices whose mean is
                 that joint. Every canonical joint except "pelvis" must be present; the pelvis is
                 always the midpoint of the hips.
    source:      dataset/studio tag ("bandai", "cmu", "mixamo", "humanml3d", "amass", "ntu",
                 "synthetic", "bvh").
    path:        the file it came from.
    meta:        free-form source metadata (labels, units, rig name, original frame count, ...).
    """

    joints: np.ndarray
    fps: float
    joint_names: list[str]
    mapping: dict[str, list[int]]
    source: str
    path: str
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.joints.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last sample plus one frame period."""
        return self.n_frames / float(self.fps)

    def canonical(self) -> np.ndarray:
        """[T, 16, 3] canonical joints (float32): the mean of each joint's mapped rig joints;
        the pelvis is the midpoint of the hips."""
        T = self.n_frames
        out = np.empty((T, len(JOINTS), 3), np.float32)
        for name in JOINTS:
            if name == "pelvis":
                continue
            idx = self.mapping[name]
            out[:, J[name]] = self.joints[:, idx[0]] if len(idx) == 1 else self.joints[:, idx].mean(axis=1)
        out[:, J["pelvis"]] = 0.5 * (out[:, J["l_hip"]] + out[:, J["r_hip"]])
        return out
