"""`read_clip`: one entry point for every motion file, dispatching on the extension.

This is the function Ray Data maps over file lists: it checks the size before reading, and
every failure is a `MotionFormatError` (or `MissingDependencyError`) naming the file, with a
stable `.reason` code for the manifest: empty, truncated, binary, bad_number, nan,
channel_count, hierarchy, unsupported_format, too_large, too_short, unknown_rig, io,
missing_dependency.
"""

from __future__ import annotations

import os

from ..errors import MotionFormatError
from .asfamc import read_asf_amc
from .bvh import read_bvh
from .clip import Clip
from .formats import MAX_BYTES, read_amass_npz, read_humanml3d_npy, read_ntu_skeleton, reading

#: extension -> what it is read as
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".bvh": "BVH (Bandai Namco, CMU, Mixamo, any rig the mapping knows)",
    ".amc": "Acclaim AMC motion; the .asf skeleton is found beside it (CMU: 01_01.amc -> 01.asf)",
    ".npy": "HumanML3D new_joints [T, 22, 3]",
    ".npz": "AMASS SMPL/SMPL+H/SMPL-X parameters (needs smplx and $STICKGEN_SMPL_DIR)",
    ".skeleton": "NTU RGB+D Kinect skeleton text",
}


def read_clip(path, *, max_bytes: int = MAX_BYTES) -> Clip:
    """Read any supported motion file into a `Clip` (metres, +Y up, native fps)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        hint = " (an .asf is a skeleton only: pass its .amc)" if ext == ".asf" else ""
        raise MotionFormatError(
            path, f"unsupported file type {ext or '(none)'!r}{hint}; supported: "
            f"{', '.join(SUPPORTED_EXTENSIONS)}", reason="unsupported_format")
    with reading(path):
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise MotionFormatError(path, f"cannot read file: {e.strerror or e}", reason="io") from e
        if size > max_bytes:  # before reading anything
            raise MotionFormatError(path, f"file is {size} bytes, over the limit of {max_bytes}",
                                    reason="too_large")
        if ext == ".bvh":
            return read_bvh(path, max_bytes=max_bytes)
        if ext == ".amc":
            return read_asf_amc(path, max_bytes=max_bytes)
        if ext == ".npy":
            return read_humanml3d_npy(path)
        if ext == ".npz":
            return read_amass_npz(path)
        return read_ntu_skeleton(path)
