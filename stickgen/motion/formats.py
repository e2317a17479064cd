"""Small motion formats (HumanML3D joints, AMASS npz, NTU RGB+D skeletons) and the plumbing every
reader shares: size-checked reading, binary sniffing and turning stray exceptions into typed
`MotionFormatError`s that name the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, MotionFormatError, StickgenError
from .clip import Clip
from .rig import make_clip

MAX_BYTES = 256 * 2**20

# ----------------------------------------------------------------------------- shared plumbing


def read_bytes(path, max_bytes: int = MAX_BYTES) -> bytes:
    """The whole file, after checking its size *before* reading (reason too_large / empty / io)."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise MotionFormatError(path, f"cannot read file: {e.strerror or e}", reason="io") from e
    if size > max_bytes:
        raise MotionFormatError(path, f"file is {size} bytes, over the limit of {max_bytes}",
                                reason="too_large")
    if size == 0:
        raise MotionFormatError(path, "file is empty", reason="empty")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MotionFormatError(path, f"cannot read file: {e.strerror or e}", reason="io") from e


_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\v"


def looks_binary(head: bytes) -> bool:
    """True for a NUL byte or > 5% non-text bytes in the sample (text mocap is ASCII, maybe with
    a few Latin-1/UTF-8 characters in names or comments)."""
    if b"\x00" in head:
        return True
    return len(head.translate(None, _TEXT_BYTES)) > 0.05 * max(len(head), 1)


@contextmanager
def reading(path):
    """Re-raise any stray exception from parsing `path` as a MotionFormatError naming the file.

    Readers raise precise typed errors for the problems they know; this is the safety net so
    that a Ray map never sees a bare IndexError/ValueError.
    """
    try:
        yield
    except StickgenError:
        raise
    except MemoryError as e:
        raise MotionFormatError(path, "out of memory while reading", reason="too_large") from e
    except OSError as e:
        raise MotionFormatError(path, f"cannot read file: {e.strerror or e}", reason="io") from e
    except UnicodeError as e:
        raise MotionFormatError(path, f"not a text file ({e})", reason="binary") from e
    except (IndexError, KeyError, EOFError, StopIteration) as e:
        raise MotionFormatError(path, f"unexpected end of data ({type(e).__name__}: {e})",
                                reason="truncated") from e
    except (ValueError, TypeError, OverflowError, ArithmeticError) as e:
        raise MotionFormatError(path, f"malformed data ({type(e).__name__}: {e})",
                                reason="bad_number") from e
    except Exception as e:  # noqa: BLE001 - last resort, still typed and naming the file
        raise MotionFormatError(path, f"could not parse ({type(e).__name__}: {e})",
                                reason="unsupported_format") from e


def split_lines(path, data: bytes):
    """Tokenise text into per-line whitespace-separated tokens, in C (pyarrow), no Python loop.

    Returns (tokens, line_no): `tokens` a pyarrow ListArray with one entry per *non-empty* line,
    `line_no` [L] int64 0-based line numbers of those lines within `data`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pa.array([data], type=pa.large_string())
    except (pa.ArrowInvalid, UnicodeError) as e:
        raise MotionFormatError(path, "non-text (invalid UTF-8) bytes in the data", reason="binary") from e
    lines = pc.ascii_trim_whitespace(pc.split_pattern(text, "\n").flatten())
    keep = pc.greater(pc.binary_length(lines), 0)
    line_no = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    return pc.ascii_split_whitespace(pc.filter(lines, keep)), line_no


def to_float(path, tokens, where: str = "") -> np.ndarray:
    """Flat pyarrow string tokens -> float64 array; a token that is not a number -> bad_number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(tokens, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as e:
        msg = str(e).split("\n")[0]
        raise MotionFormatError(path, f"{where}not a number: {msg}", reason="bad_number") from e


def check_frames(path, arr: np.ndarray, what: str = "joint positions") -> None:
    """too_short for < 2 frames, nan for any non-finite value (naming the first bad frame)."""
    if arr.shape[0] < 2:
        raise MotionFormatError(path, f"{arr.shape[0]} frame(s); need at least 2", reason="too_short")
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if not finite.all():
        f = int(np.argmin(finite))
        raise MotionFormatError(path, f"non-finite {what} in frame {f}", reason="nan")


# ----------------------------------------------------------------------------- SMPL / HumanML3D

#: SMPL body joints 0..21 (HumanML3D new_joints and AMASS joints[:, :22] use this order).
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)


def read_humanml3d_npy(path) -> Clip:
    """HumanML3D `new_joints/*.npy`: float [T, 22, 3] SMPL joints, metres, +Y up, 20 fps."""
    with reading(path):
        raw = read_bytes(path)
        if not raw.startswith(b"\x93NUMPY"):
            raise MotionFormatError(path, "not a .npy file (bad magic)", reason="unsupported_format")
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as e:  # numpy says "EOF: ..." when the file is cut short
            raise MotionFormatError(path, f"unreadable .npy: {e}",
                                    reason="truncated" if "EOF" in str(e) else "unsupported_format") from e
        if arr.ndim == 2 and arr.shape[1] in (263, 251):
            raise MotionFormatError(
                path, f"shape {arr.shape} is a HumanML3D/KIT feature vector (new_joint_vecs); "
                "read the matching new_joints/*.npy [T, 22, 3] file instead",
                reason="unsupported_format")
        if arr.ndim != 3 or arr.shape[1:] != (22, 3):
            raise MotionFormatError(path, f"expected [T, 22, 3] joints, got shape {arr.shape}",
                                    reason="channel_count")
        if not np.issubdtype(arr.dtype, np.floating):
            raise MotionFormatError(path, f"expected floats, got dtype {arr.dtype}", reason="bad_number")
        check_frames(path, arr)
        return make_clip(arr, SMPL_JOINT_NAMES, 20.0, path=path, source="humanml3d",
                         parents=SMPL_PARENTS, units="m", up="+Y",
                         meta={"format": "humanml3d_joints", "n_frames": int(arr.shape[0])})


# ----------------------------------------------------------------------------- AMASS

SMPL_DIR_ENV = "STICKGEN_SMPL_DIR"
#: poses width -> (smplx model type, body-pose width); the first 3 values are the root orientation.
_AMASS_MODELS = {156: ("smplh", 63), 162: ("smplx", 63), 165: ("smplx", 63), 72: ("smpl", 69)}
_MODEL_SITES = {
    "smplh": "https://mano.is.tue.mpg.de (Extended SMPL+H, as used by AMASS)",
    "smplx": "https://smpl-x.is.tue.mpg.de",
    "smpl": "https://smpl.is.tue.mpg.de",
}


def _str(x) -> str:
    x = np.asarray(x)
    v = x.item() if x.size == 1 else x
    return v.decode() if isinstance(v, bytes) else str(v)


def _smpl_model_file(model_dir: Path, model_type: str, gender: str) -> Path | None:
    """The model file smplx.create would load: <dir>/<type>/<TYPE>_<GENDER>.(npz|pkl)."""
    for g in (gender, "neutral", "male"):
        for ext in ("npz", "pkl"):
            p = model_dir / model_type / f"{model_type.upper()}_{g.upper()}.{ext}"
            if p.is_file():
                return p
    return None


def read_amass_npz(path, *, batch: int = 1024) -> Clip:
    """AMASS `*.npz` (SMPL, SMPL+H or SMPL-X parameters) -> [T, 22, 3] SMPL joints via `smplx`.

    Needs the `smplx` package and the body-model files under $STICKGEN_SMPL_DIR
    (<dir>/smplh/SMPLH_MALE.npz, ...); otherwise raises MissingDependencyError saying what to
    install/download. AMASS is Z-up: positions are rotated (x, y, z) -> (x, z, -y).
    fps from `mocap_framerate` (AMASS SMPL+H) or `mocap_frame_rate` (AMASS SMPL-X).
    """
    with reading(path):
        raw_head = read_bytes(path)[:4]
        if raw_head != b"PK\x03\x04":
            raise MotionFormatError(path, "not a .npz (zip) file", reason="unsupported_format")
        try:
            npz = np.load(path, allow_pickle=False)
        except zipfile.BadZipFile as e:
            raise MotionFormatError(path, f"corrupt .npz: {e}", reason="truncated") from e
        with npz:
            keys = set(npz.files)
            if "poses" not in keys:
                raise MotionFormatError(
                    path, f"not an AMASS motion file (no 'poses'; keys {sorted(keys)})",
                    reason="unsupported_format")
            poses = np.asarray(npz["poses"], dtype=np.float64)
            fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in keys), None)
            if fps_key is None:
                raise MotionFormatError(path, "no 'mocap_framerate'/'mocap_frame_rate'", reason="hierarchy")
            fps = float(np.asarray(npz[fps_key]).item())
            T = poses.shape[0] if poses.ndim == 2 else 0
            trans = np.asarray(npz["trans"], np.float64) if "trans" in keys else np.zeros((T, 3))
            betas = np.asarray(npz["betas"], np.float64).reshape(-1) if "betas" in keys else np.zeros(10)
            gender = _str(npz["gender"]).lower() if "gender" in keys else "neutral"
            if "root_orient" in keys and "pose_body" in keys:  # SMPL-X release layout
                root = np.asarray(npz["root_orient"], np.float64)
                body = np.asarray(npz["pose_body"], np.float64)
            else:
                root, body = None, None
        if poses.ndim != 2 or poses.shape[1] not in _AMASS_MODELS:
            raise MotionFormatError(path, f"'poses' has shape {poses.shape}; expected [T, 72|156|162|165]",
                                    reason="channel_count")
        if trans.shape != (T, 3):
            raise MotionFormatError(path, f"'trans' has shape {trans.shape}, expected ({T}, 3)",
                                    reason="channel_count")
        check_frames(path, poses, "pose parameters")
        check_frames(path, trans, "root translation")
        if not (np.isfinite(fps) and fps > 0):
            raise MotionFormatError(path, f"bad frame rate {fps}", reason="bad_number")
        model_type, n_body = _AMASS_MODELS[poses.shape[1]]
        if root is None:
            root, body = poses[:, :3], poses[:, 3:3 + n_body]

        # Dependencies: report everything that is missing in one message.
        problems = []
        try:
            import smplx  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            problems.append("the 'smplx' Python package (not installed): pip install smplx "
                            "(or pip install 'stickgen[amass]')")
        model_dir = os.environ.get(SMPL_DIR_ENV)
        model_file = _smpl_model_file(Path(model_dir), model_type, gender) if model_dir else None
        if model_file is None:
            where = (f"${SMPL_DIR_ENV}={model_dir}, which does not contain them" if model_dir
                     else f"a directory of your choice and set ${SMPL_DIR_ENV} to it (it is not set)")
            problems.append(
                f"the {model_type.upper()} body-model files: download them from "
                f"{_MODEL_SITES[model_type]} (free registration, research licence) and put "
                f"{model_type}/{model_type.upper()}_{{NEUTRAL,MALE,FEMALE}}.npz (or .pkl) in {where}")
        if problems:
            raise MissingDependencyError(
                f"{path}: reading AMASS .npz needs " + " and ".join(f"({i + 1}) {p}" for i, p in enumerate(problems)))

        joints = _smpl_joints(model_file, model_type, gender, betas, root, body, trans, batch)
        return make_clip(joints, SMPL_JOINT_NAMES, fps, path=path, source="amass",
                         parents=SMPL_PARENTS, units="m", up="+Z",
                         meta={"format": "amass_npz", "model": model_type, "gender": gender,
                               "model_file": str(model_file), "n_frames": T})


def _smpl_joints(model_file: Path, model_type, gender, betas, root, body, trans, batch) -> np.ndarray:
    """[T, 22, 3] joints (Z-up, metres) from SMPL-family parameters with smplx, in batches."""
    import smplx
    import torch

    kind = model_file.stem.split("_")[-1].lower()
    kw = dict(model_type=model_type, gender=kind, ext=model_file.suffix[1:], batch_size=1)
    if model_type in ("smplh", "smplx"):
        kw["use_pca"] = False
    n_betas = len(betas)
    try:
        model = smplx.create(str(model_file.parent.parent), num_betas=n_betas, **kw)
    except Exception:  # model files with fewer shape components (e.g. 10) than the npz
        n_betas = min(n_betas, 10)
        model = smplx.create(str(model_file.parent.parent), num_betas=n_betas, **kw)
    T = len(root)
    out = np.empty((T, 22, 3), np.float32)
    b = torch.as_tensor(betas[:n_betas], dtype=torch.float32)[None]
    with torch.no_grad():
        for s in range(0, T, batch):
            e = min(T, s + batch)
            n = e - s
            res = model(
                betas=b.expand(n, -1),
                global_orient=torch.as_tensor(root[s:e], dtype=torch.float32),
                body_pose=torch.as_tensor(body[s:e], dtype=torch.float32),
                transl=torch.as_tensor(trans[s:e], dtype=torch.float32),
                batch_size=n,
            )
            out[s:e] = res.joints[:, :22].numpy()
    return out


# ----------------------------------------------------------------------------- NTU RGB+D

#: Kinect v2 joints in NTU order (0-based).
NTU_JOINT_NAMES = (
    "SpineBase", "SpineMid", "Neck", "Head", "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
    "ShoulderRight", "ElbowRight", "WristRight", "HandRight", "HipLeft", "KneeLeft", "AnkleLeft",
    "FootLeft", "HipRight", "KneeRight", "AnkleRight", "FootRight", "SpineShoulder",
    "HandTipLeft", "ThumbLeft", "HandTipRight", "ThumbRight",
)
NTU_PARENTS = (-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11)
_NTU_BODY_INFO = 10   # values on a body's info line
_NTU_JOINT_VALUES = 12  # x y z depthX depthY colorX colorY orientW X Y Z trackingState


def read_ntu_skeleton(path) -> Clip:
    """NTU RGB+D `.skeleton` text -> first body's 25 Kinect joints, metres, 30 fps.

    Layout: frame count; per frame a body count, per body an info line (10 values), a joint
    count and one line of 12 values per joint (x y z first, camera space, +Y up). The first
    listed body of each frame is used. Frames where no body is tracked are filled by linear
    interpolation (leading/trailing ones dropped); meta["missing_frames"] counts them. Camera
    space has +X to the camera's left and +Z away from it; we turn it 180 deg about Y (rigid)
    so +X is image right and the camera looks along -Z, as for every other source.
    All lines are tokenised and converted in C; the frame/body structure is found with array
    ops over the per-line value counts (no per-frame Python loop).
    """
    import pyarrow.compute as pc

    with reading(path):
        raw = read_bytes(path)
        if looks_binary(raw[:4096]):
            raise MotionFormatError(path, "binary data in a text .skeleton file", reason="binary")
        tokens, line_no = split_lines(path, raw)
        ntok = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(ntok) == 0 or ntok[0] != 1:
            raise MotionFormatError(path, "first line must be the frame count", reason="hierarchy")
        vals = to_float(path, tokens.flatten())
        off = np.concatenate([[0], np.cumsum(ntok)[:-1]])       # first value of each line
        n_frames = int(vals[0])
        # info lines have 10 values and are followed by the joint count; a body-count line is
        # a 1-value line that does not follow an info line.
        prev = np.concatenate([[0], ntok[:-1]])
        is_count = (ntok == 1) & (prev != _NTU_BODY_INFO)
        is_count[0] = False
        count_rows = np.flatnonzero(is_count)
        if len(count_rows) != n_frames:
            raise MotionFormatError(path, f"header says {n_frames} frames, found {len(count_rows)}",
                                    reason="truncated" if len(count_rows) < n_frames else "hierarchy")
        body_counts = vals[off[count_rows]].astype(np.int64)
        frames_with_body = np.flatnonzero(body_counts > 0)
        if frames_with_body.size == 0:
            raise MotionFormatError(path, "no tracked body in any frame", reason="too_short")
        info = count_rows[frames_with_body] + 1                   # first body's info line
        if info[-1] + 1 >= len(ntok) or (ntok[info] != _NTU_BODY_INFO).any():
            raise MotionFormatError(path, "body info line missing after a body count", reason="hierarchy")
        jrow = info + 1
        nj = np.where(ntok[jrow] == 1, vals[off[jrow]], -1).astype(np.int64)
        if (nj != 25).any():
            raise MotionFormatError(path, f"expected 25 joints per body, got {sorted(set(nj.tolist()))}",
                                    reason="channel_count")
        rows = (jrow[:, None] + 1 + np.arange(25)[None]).ravel()
        if rows[-1] >= len(ntok):
            raise MotionFormatError(path, "file ends inside a body's joint list", reason="truncated")
        if (ntok[rows] != _NTU_JOINT_VALUES).any():
            bad = int(rows[np.argmax(ntok[rows] != _NTU_JOINT_VALUES)])
            cut = bad == len(ntok) - 1 and ntok[bad] < _NTU_JOINT_VALUES
            raise MotionFormatError(path, f"line {line_no[bad] + 1}: expected {_NTU_JOINT_VALUES} values, "
                                    f"got {ntok[bad]}" + (" (file cut short)" if cut else ""),
                                    reason="truncated" if cut else "channel_count")
        xyz = vals[off[rows][:, None] + np.arange(3)].reshape(-1, 25, 3)
        lo, hi = frames_with_body[0], frames_with_body[-1] + 1
        T = int(hi - lo)
        have = frames_with_body - lo
        if len(have) == T:
            joints = xyz
        else:  # interpolate gaps (loop over the 75 coordinates, not frames)
            t = np.arange(T)
            flat = xyz.reshape(len(have), -1)
            joints = np.stack([np.interp(t, have, flat[:, k]) for k in range(flat.shape[1])], 1)
            joints = joints.reshape(T, 25, 3)
        check_frames(path, joints)
        joints = joints * np.array([-1.0, 1.0, -1.0])             # 180 deg about Y
        return make_clip(joints, NTU_JOINT_NAMES, 30.0, path=path, source="ntu",
                         parents=NTU_PARENTS, units="m", up="+Y",
                         meta={"format": "ntu_skeleton", "n_frames": n_frames,
                               "missing_frames": int(T - len(have)),
                               "bodies_max": int(body_counts.max())})
