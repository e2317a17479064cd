"""The `.motion` JSON file: one animation, readable by tools written for the published format.

Layout (minified JSON; key names and types are exactly the published ones):

    {"meta": {"version": "1.0", "generator": str, "created_at": ISO-8601, "fps": 25,
              "duration": T/fps, "total_frames": T, "description": str},
     "skeleton": {"type": "stick_figure_12_segment_v3" | "stick_figure_5_segment",
                  "joint_format": "xy_lines_flat", "input_dim": 48 | 20, "segments": [names]},
     "motion": [T*D floats, row-major, 4 dp],
     "actions": [T strings] or [],
     "physics": [T*6 floats]   (optional),
     "camera":  [T*3 floats]   (optional)}

`read_motion_json` checks every field it relies on and raises `MotionFormatError` whose problem
starts with the dotted field name (e.g. "field 'meta.fps': missing"), so a user can fix the file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stickgen.errors import MotionFormatError
from stickgen.motion.skeleton import (
    LEGACY_DIM,
    LEGACY_SEGMENT_NAMES,
    LEGACY_SKELETON_TYPE,
    V3_DIM,
    V3_SEGMENT_NAMES,
    V3_SKELETON_TYPE,
)

FORMAT_VERSION = "1.0"
JOINT_FORMAT = "xy_lines_flat"
#: input_dim -> (skeleton type, segment names), the only two layouts the format allows.
LAYOUTS: dict[int, tuple[str, tuple[str, ...]]] = {
    V3_DIM: (V3_SKELETON_TYPE, V3_SEGMENT_NAMES),
    LEGACY_DIM: (LEGACY_SKELETON_TYPE, LEGACY_SEGMENT_NAMES),
}
PHYSICS_DIM = 6
CAMERA_DIM = 3
DECIMALS = 4


def _stickgen_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("stickgen")
    except (ImportError, PackageNotFoundError):  # running from a source checkout
        from stickgen import __version__

        return __version__


# --------------------------------------------------------------------------------------------
# writing


def _flat_rounded(a: np.ndarray) -> list[float]:
    """Row-major flat list of Python floats rounded to 4 dp; `+ 0.0` turns -0.0 into 0.0 so the
    file never spells "-0.0"."""
    return (np.round(np.asarray(a, np.float64), DECIMALS) + 0.0).ravel().tolist()


def _check_array(name: str, a: Any, T: int, dims: Sequence[int]) -> np.ndarray:
    """[T, d] float64 with d in `dims`, all finite; MotionFormatError naming `name` otherwise."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in dims or (T >= 0 and arr.shape[0] != T):
        want = f"[{T if T >= 0 else 'T'}, {'|'.join(map(str, dims))}]"
        raise MotionFormatError("<to_motion_json>", f"field {name!r}: expected shape {want}, got {list(arr.shape)}",
                                reason="channel_count")
    if not np.isfinite(arr).all():
        f = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise MotionFormatError("<to_motion_json>", f"field {name!r}: non-finite value in frame {f}", reason="nan")
    return arr


def to_motion_json(
    motion: np.ndarray,
    *,
    fps: float = 25,
    description: str = "",
    actions: Sequence[str] | None = None,
    physics: np.ndarray | None = None,
    camera: np.ndarray | None = None,
    generator: str | None = None,
) -> dict:
    """Build the `.motion` document for `motion` [T, 48] (v3) or [T, 20] (legacy).

    actions: T per-frame action names, or None (written as []).
    physics: optional [T, 6]; camera: optional [T, 3]; both written flat, 4 dp.
    generator defaults to "stickgen <installed version>".
    """
    m = _check_array("motion", motion, -1, tuple(LAYOUTS))
    T, D = m.shape
    if T == 0:
        raise MotionFormatError("<to_motion_json>", "field 'motion': no frames", reason="too_short")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise MotionFormatError("<to_motion_json>", f"field 'meta.fps': must be a positive number, got {fps!r}")
    if actions is not None and len(actions) != T:
        raise MotionFormatError("<to_motion_json>", f"field 'actions': expected {T} entries, got {len(actions)}")
    skel_type, seg_names = LAYOUTS[D]
    # Published files store fps as an int (25); keep that type whenever the rate is integral.
    fps_out: int | float = int(fps) if float(fps).is_integer() else float(fps)
    doc: dict[str, Any] = {
        "meta": {
            "version": FORMAT_VERSION,
            "generator": generator or f"stickgen {_stickgen_version()}",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fps": fps_out,
            "duration": T / float(fps),
            "total_frames": T,
            "description": str(description),
        },
        "skeleton": {
            "type": skel_type,
            "joint_format": JOINT_FORMAT,
            "input_dim": D,
            "segments": list(seg_names),
        },
        "motion": _flat_rounded(m),
        "actions": [str(a) for a in actions] if actions is not None else [],
    }
    if physics is not None:
        doc["physics"] = _flat_rounded(_check_array("physics", physics, T, (PHYSICS_DIM,)))
    if camera is not None:
        doc["camera"] = _flat_rounded(_check_array("camera", camera, T, (CAMERA_DIM,)))
    return doc


def dumps_motion_json(doc: dict) -> str:
    """Minified JSON text (no spaces); NaN/Infinity are refused, as JSON has no spelling for them."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def write_motion_json(path: str | os.PathLike, motion: np.ndarray, **kwargs: Any) -> Path:
    """Write `to_motion_json(motion, **kwargs)` to `path` atomically (a reader never sees a
    half-written file). Returns the path."""
    path = Path(path)
    text = dumps_motion_json(to_motion_json(motion, **kwargs))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------
# reading


def _load(src: str | os.PathLike) -> Any:
    """Parse a file into JSON values, mapping every failure to a MotionFormatError."""
    try:
        raw = Path(src).read_bytes()
    except OSError as e:
        raise MotionFormatError(str(src), f"cannot read file: {e.strerror or e}", reason="io") from e
    if not raw.strip():
        raise MotionFormatError(str(src), "file is empty", reason="empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MotionFormatError(str(src), "not a text file (invalid UTF-8)", reason="binary") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # An error at the very end means the file was cut short, which is the common case.
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        reason = "truncated" if cut else "unsupported_format"
        raise MotionFormatError(str(src), f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                                reason=reason) from e


class _Reader:
    """Field access with errors that name the dotted field path."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str, reason: str = "unsupported_format") -> MotionFormatError:
        return MotionFormatError(self.where, f"field {field!r}: {problem}", reason=reason)

    def get(self, obj: dict, field: str, types: type | tuple[type, ...], *, optional: bool = False) -> Any:
        key = field.rsplit(".", 1)[-1]
        if key not in obj or (optional and obj[key] is None):  # optional fields may be null
            if optional:
                return None
            raise self.fail(field, "missing")
        v = obj[key]
        # bool is an int subclass in Python but never a valid number in this format.
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(field, f"expected {_type_names(types)}, got a boolean")
        if not isinstance(v, types):
            raise self.fail(field, f"expected {_type_names(types)}, got {_json_type(v)}")
        return v

    def numbers(self, field: str, values: list, length: int) -> np.ndarray:
        """A flat list of finite numbers of exactly `length` entries -> float64 array."""
        if len(values) != length:
            reason = "truncated" if len(values) < length else "channel_count"
            raise self.fail(field, f"expected {length} numbers, got {len(values)}", reason)
        for i, v in enumerate(values):
            if type(v) not in (int, float):  # exact types: rejects bool, None, str, lists
                raise self.fail(f"{field}[{i}]", f"expected a number, got {_json_type(v)}", "bad_number")
        arr = np.asarray(values, dtype=np.float64)
        if not np.isfinite(arr).all():  # Python's json accepts NaN/Infinity tokens
            i = int(np.argwhere(~np.isfinite(arr))[0, 0])
            raise self.fail(f"{field}[{i}]", f"non-finite value {values[i]!r}", "nan")
        return arr


def _type_names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(_JSON_NAMES.get(t, t.__name__) for t in ts)


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return _JSON_NAMES.get(type(v), type(v).__name__)


def read_motion_json(src: str | os.PathLike | dict) -> tuple[np.ndarray, dict]:
    """Read and validate a `.motion` document (a path, or an already-parsed dict).

    Returns (motion float32 [T, D] with D in {48, 20}, meta) where meta holds the file's `meta`
    fields plus: "skeleton" (the skeleton object), "actions" (list of T strings, or None when the
    file has none), "physics" (float32 [T, 6] or None), "camera" (float32 [T, 3] or None). physics is
    usually [T, 6]; any [T, k] is accepted because the published format leaves k open.
    Raises MotionFormatError naming the first wrong field.
    """
    where = "<dict>" if isinstance(src, dict) else str(src)
    doc = src if isinstance(src, dict) else _load(src)
    r = _Reader(where)
    if not isinstance(doc, dict):
        raise r.fail("(top level)", f"expected an object, got {_json_type(doc)}")

    meta = r.get(doc, "meta", dict)
    fps = r.get(meta, "meta.fps", (int, float))
    if not (math.isfinite(fps) and fps > 0):
        raise r.fail("meta.fps", f"must be positive, got {fps!r}")
    T = r.get(meta, "meta.total_frames", int)
    if T < 1:
        raise r.fail("meta.total_frames", f"must be at least 1, got {T}", "too_short")

    skel = r.get(doc, "skeleton", dict)
    D = r.get(skel, "skeleton.input_dim", int)
    if D not in LAYOUTS:
        raise r.fail("skeleton.input_dim", f"must be 48 (v3) or 20 (legacy), got {D}", "channel_count")
    skel_type = r.get(skel, "skeleton.type", str)
    if skel_type != LAYOUTS[D][0]:
        raise r.fail("skeleton.type", f"{skel_type!r} does not match input_dim {D} (expected {LAYOUTS[D][0]!r})")
    joint_format = r.get(skel, "skeleton.joint_format", str, optional=True)
    if joint_format is not None and joint_format != JOINT_FORMAT:
        raise r.fail("skeleton.joint_format", f"unsupported {joint_format!r} (expected {JOINT_FORMAT!r})")

    motion = r.numbers("motion", r.get(doc, "motion", list), T * D).reshape(T, D)

    actions = r.get(doc, "actions", list, optional=True)
    if actions:  # [] means "no labels", as the published exporter writes it
        if len(actions) != T:
            raise r.fail("actions", f"expected {T} per-frame strings or [], got {len(actions)} entries")
        bad = next((i for i, a in enumerate(actions) if not isinstance(a, str)), None)
        if bad is not None:
            raise r.fail(f"actions[{bad}]", f"expected a string, got {_json_type(actions[bad])}")
    extras: dict[str, np.ndarray | None] = {}
    for name, dim in (("physics", PHYSICS_DIM), ("camera", CAMERA_DIM)):
        flat = r.get(doc, name, list, optional=True)
        if name == "physics" and flat and len(flat) % T == 0:
            # The published format leaves the physics width open; accept any [T, k].
            dim = len(flat) // T
        extras[name] = r.numbers(name, flat, T * dim).reshape(T, dim).astype(np.float32) if flat else None

    out_meta = dict(meta)
    out_meta.update(skeleton=skel, actions=list(actions) if actions else None, **extras)
    return motion.astype(np.float32), out_meta
