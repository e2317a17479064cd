"""BVH (Biovision hierarchy): a small fast reader, vectorised forward kinematics and a writer.

Conventions (as the format defines them):
- Each joint's CHANNELS line gives its channels in the order their values appear in a frame.
  Rotations are Euler angles in degrees, intrinsic in channel order: for "Zrotation Xrotation
  Yrotation", R = Rz · Rx · Ry acting on column vectors.
- A joint's local translation is its OFFSET, except that position channels, when the joint has
  them, *replace* the OFFSET (Bandai puts 6 channels on every joint and the values equal the
  offsets; root motion is on `Hips` under a static `joint_Root`, whose OFFSET would otherwise
  double the hip height).
- World: G_j = G_parent · R_j,  p_j = p_parent + G_parent · t_j.
- End Sites become extra joints named "<parent>_end" (always, even with a zero offset, so the
  joint list follows from the hierarchy alone); they have no channels.

Speed (one core, quiet machine; benchmarks/read_mocap.py): a typical Bandai file (190-240 KB,
~150-200 frames x 132 channels) reads in ~2.5 ms: parse ~1.4 ms (the MOTION text is tokenised
and converted in C by pyarrow; np.fromstring alone takes ~6 ms), FK ~0.6 ms, rig/units/up
~0.3 ms. The hierarchy is parsed once per distinct header (cached); FK runs over all frames
at once, one depth level of the tree at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MotionFormatError
from .clip import Clip
from .formats import MAX_BYTES, looks_binary, read_bytes, reading, split_lines, to_float
from .rig import make_clip

_AXIS = {"X": 0, "Y": 1, "Z": 2}
_CHANNELS = {f"{a}{k}": (k, _AXIS[a]) for a in "XYZ" for k in ("position", "rotation")}
_CHANNELS_LOWER = {k.lower(): k for k in _CHANNELS}

# Elementary rotations as BASE + cos·CMASK + sin·SMASK, indexed by axis (0=X, 1=Y, 2=Z).
_BASE = np.zeros((3, 3, 3))
_CMASK = np.zeros((3, 3, 3))
_SMASK = np.zeros((3, 3, 3))
for _a in range(3):
    _b, _c = (_a + 1) % 3, (_a + 2) % 3
    _BASE[_a, _a, _a] = 1.0
    _CMASK[_a, _b, _b] = _CMASK[_a, _c, _c] = 1.0
    _SMASK[_a, _c, _b], _SMASK[_a, _b, _c] = 1.0, -1.0


def euler_matrices(angles_deg: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Rotation matrices from intrinsic Euler angles.

    angles_deg: [..., K] degrees; axes: [..., K] ints (0=X, 1=Y, 2=Z), broadcastable to angles
    (typically [J, K] against [T, J, K]). Returns [..., 3, 3] float64 with
    R = R_axes[0](a0) · R_axes[1](a1) · ... (column vectors).
    """
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    axes = np.asarray(axes)
    c, s = np.cos(a)[..., None, None], np.sin(a)[..., None, None]
    R = None
    for k in range(a.shape[-1]):
        ax = axes[..., k]
        E = _BASE[ax] + c[..., k, :, :] * _CMASK[ax] + s[..., k, :, :] * _SMASK[ax]
        R = E if R is None else R @ E
    if R is None:
        R = np.broadcast_to(np.eye(3), a.shape[:-1] + (3, 3)).copy()
    return R


@dataclass(frozen=True, eq=False)
class BvhSkeleton:
    """A parsed HIERARCHY plus the FK plan. Arrays are read-only (skeletons are cached/shared).

    names:    J joint names (End Sites as "<parent>_end"); parents [J] int64, -1 for roots,
              parent index < child index; offsets [J, 3] (file units); channels: per joint the
              channel names in file order (() for End Sites); is_end [J] bool;
              n_channels: values per frame line.
    The FK plan works on joints sorted by tree depth ("level order") so that each depth level
    is a contiguous slice:
    order [J] level-order -> joint index; levels: ((slice of the level, slice of its non-leaf
    joints, parent level-order idx or None), ...);
    pos_level/pos_axis/pos_col: position channels (level-order joint, axis, frame column);
    rot_groups: ((axes tuple, level-order joints [n], frame columns [K, n]), ...), one group
    per distinct rotation-channel order.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    is_end: np.ndarray
    n_channels: int
    order: np.ndarray
    levels: tuple
    pos_level: np.ndarray
    pos_axis: np.ndarray
    pos_col: np.ndarray
    rot_groups: tuple


@dataclass
class Bvh:
    """A BVH file's content: skeleton, motion [T, C] (channel values in file order: file units
    and degrees) and the frame time in seconds."""

    skeleton: BvhSkeleton
    motion: np.ndarray
    frame_time: float
    extra_lines: int = 0  # non-empty lines after the declared frames (ignored)

    @property
    def names(self) -> list[str]:
        return list(self.skeleton.names)

    @property
    def parents(self) -> np.ndarray:
        return self.skeleton.parents

    @property
    def offsets(self) -> np.ndarray:
        return self.skeleton.offsets

    @property
    def channels(self) -> list[tuple[str, ...]]:
        return list(self.skeleton.channels)


class _Bad(Exception):
    """Hierarchy problem found by the (cached, path-free) parser; re-raised with the path."""

    def __init__(self, problem: str, reason: str = "hierarchy"):
        super().__init__(problem)
        self.problem, self.reason = problem, reason


# ----------------------------------------------------------------------------- hierarchy


@lru_cache(maxsize=128)
def _parse_hierarchy(header: bytes) -> BvhSkeleton:
    """HIERARCHY text -> BvhSkeleton (raises _Bad). Cached: files of one rig share headers."""
    toks: list[tuple[str, int]] = []
    for ln, line in enumerate(header.decode("latin-1").splitlines(), 1):
        toks.extend((t, ln) for t in line.replace("{", " { ").replace("}", " } ").split())
    n = len(toks)
    if n == 0 or toks[0][0].upper() != "HIERARCHY":
        raise _Bad("not a BVH file: it does not start with HIERARCHY")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...] | None] = []
    is_end: list[bool] = []
    stack: list[int] = []
    pending: int | None = None  # joint declared, waiting for its "{"

    def number(i: int, ln: int) -> float:
        if i >= n:
            raise _Bad(f"line {ln}: hierarchy ends inside a line")
        try:
            return float(toks[i][0])
        except ValueError:
            raise _Bad(f"line {toks[i][1]}: '{toks[i][0]}' is not a number", "bad_number") from None

    def add(name: str, parent: int, end: bool) -> int:
        names.append(name)
        parents.append(parent)
        offsets.append([0.0, 0.0, 0.0])
        channels.append(() if end else None)
        is_end.append(end)
        return len(names) - 1

    i = 1
    while i < n:
        t, ln = toks[i]
        key = t.upper()
        if pending is not None and t != "{":
            raise _Bad(f"line {ln}: expected '{{' after joint '{names[pending]}', got '{t}'")
        if key in ("ROOT", "JOINT"):
            j = i + 1
            while j < n and toks[j][1] == ln and toks[j][0] != "{":
                j += 1
            name = " ".join(x for x, _ in toks[i + 1:j])
            if not name:
                raise _Bad(f"line {ln}: {t} without a name")
            if key == "JOINT" and not stack:
                raise _Bad(f"line {ln}: JOINT '{name}' is outside any ROOT's braces (no parent)")
            if key == "ROOT" and stack:
                raise _Bad(f"line {ln}: ROOT '{name}' inside joint '{names[stack[-1]]}'")
            if stack and is_end[stack[-1]]:
                raise _Bad(f"line {ln}: JOINT '{name}' inside an End Site")
            pending = add(name, stack[-1] if stack else -1, False)
            i = j
            continue
        if key == "END":
            if i + 1 >= n or toks[i + 1][0].upper() != "SITE":
                raise _Bad(f"line {ln}: 'End' must be followed by 'Site'")
            if not stack or is_end[stack[-1]]:
                raise _Bad(f"line {ln}: End Site outside a joint")
            base = names[stack[-1]] + "_end"
            name, k = base, 1
            while name in names:
                name, k = f"{base}{k}", k + 1
            pending = add(name, stack[-1], True)
            i += 2
            continue
        if t == "{":
            if pending is None:
                raise _Bad(f"line {ln}: unexpected '{{'")
            stack.append(pending)
            pending = None
        elif t == "}":
            if not stack:
                raise _Bad(f"line {ln}: unbalanced '}}'")
            stack.pop()
        elif key == "OFFSET":
            if not stack:
                raise _Bad(f"line {ln}: OFFSET outside a joint")
            offsets[stack[-1]] = [number(i + 1, ln), number(i + 2, ln), number(i + 3, ln)]
            i += 4
            continue
        elif key == "CHANNELS":
            if not stack or is_end[stack[-1]]:
                raise _Bad(f"line {ln}: CHANNELS outside a joint")
            j = stack[-1]
            if channels[j] is not None:
                raise _Bad(f"line {ln}: second CHANNELS line for joint '{names[j]}'")
            k = number(i + 1, ln)
            if k != int(k) or not 0 <= k <= 64:
                raise _Bad(f"line {ln}: bad channel count '{toks[i + 1][0]}'")
            k = int(k)
            if i + 2 + k > n:
                raise _Bad(f"line {ln}: CHANNELS lists fewer than {k} names")
            chs = []
            for x, _ in toks[i + 2:i + 2 + k]:
                c = _CHANNELS_LOWER.get(x.lower())
                if c is None:
                    raise _Bad(f"line {ln}: unknown channel '{x}' for joint '{names[j]}'")
                chs.append(c)
            channels[j] = tuple(chs)
            i += 2 + k
            continue
        else:
            raise _Bad(f"line {ln}: unexpected '{t}' in HIERARCHY")
        i += 1
    if pending is not None or stack:
        open_name = names[pending if pending is not None else stack[-1]]
        raise _Bad(f"HIERARCHY ends inside joint '{open_name}' (missing '}}')")
    if not names:
        raise _Bad("HIERARCHY has no joints")
    return build_skeleton(names, parents, offsets, [c or () for c in channels], is_end)


def _ro(a, dtype=None) -> np.ndarray:
    a = np.array(a, dtype=dtype)
    a.setflags(write=False)
    return a


def build_skeleton(names, parents, offsets, channels, is_end=None) -> BvhSkeleton:
    """A BvhSkeleton (with its FK plan) from plain lists; parents must precede children.
    Frame columns follow joint order (= the order of the CHANNELS lines in a file)."""
    J = len(names)
    par = np.asarray(parents, np.int64).reshape(J)
    if (par >= np.arange(J)).any():
        raise ValueError("parents must precede their children")
    depth = np.zeros(J, np.int64)
    for j in range(J):  # parents precede children, so one pass suffices
        if par[j] >= 0:
            depth[j] = depth[par[j]] + 1
    leaf = np.ones(J, bool)
    leaf[par[par >= 0]] = False
    # level order: by depth, and within a depth the leaves last, so that world rotations
    # (which only children need) are computed for a prefix of each level's slice only.
    order = np.lexsort((leaf, depth))                 # level order -> joint
    inv = np.empty(J, np.int64)
    inv[order] = np.arange(J)                         # joint -> level order
    d_sorted = depth[order]
    levels = []
    for d in range(int(depth.max()) + 1 if J else 0):
        lo, hi = (int(x) for x in np.searchsorted(d_sorted, [d, d + 1]))
        inner = lo + int((~leaf[order[lo:hi]]).sum())
        levels.append((slice(lo, hi), slice(lo, inner),
                       None if d == 0 else _ro(inv[par[order[lo:hi]]])))

    pos_l, pos_a, pos_c = [], [], []
    groups: dict[tuple[int, ...], tuple[list, list]] = {}
    col = 0
    for j, chs in enumerate(channels):
        axes, cols = [], []
        for c in chs:
            kind, axis = _CHANNELS[c]
            if kind == "position":
                pos_l.append(inv[j]), pos_a.append(axis), pos_c.append(col)
            else:
                axes.append(axis), cols.append(col)
            col += 1
        if axes:
            g = groups.setdefault(tuple(axes), ([], []))
            g[0].append(inv[j]), g[1].append(cols)
    rot_groups = tuple(
        (axes, _ro(js, np.int64), _ro(np.asarray(cs, np.int64).T)) for axes, (js, cs) in groups.items())
    return BvhSkeleton(
        names=tuple(names), parents=_ro(par), offsets=_ro(np.asarray(offsets, np.float64).reshape(J, 3)),
        channels=tuple(tuple(c) for c in channels),
        is_end=_ro(np.zeros(J, bool) if is_end is None else is_end, bool),
        n_channels=col, order=_ro(order), levels=tuple(levels), pos_level=_ro(pos_l, np.int64),
        pos_axis=_ro(pos_a, np.int64), pos_col=_ro(pos_c, np.int64), rot_groups=rot_groups,
    )


# ----------------------------------------------------------------------------- forward kinematics


def _elementary(axis: int, c, s) -> list:
    """Row-major entries of the rotation about `axis`; constant entries are Python floats so
    that `_matmul_sparse` can skip them."""
    if axis == 0:
        return [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c]
    if axis == 1:
        return [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c]
    return [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]


def _matmul_sparse(A: list, B: list) -> list:
    """3x3 product of matrices given as 9 entries, each an array or a constant float; multiplies
    by constant 0/1 are skipped, so composing Euler rotations costs a few array ops."""
    out = []
    for i in range(3):
        for k in range(3):
            acc = 0.0
            for j in range(3):
                a, b = A[3 * i + j], B[3 * j + k]
                if (type(a) is float and a == 0.0) or (type(b) is float and b == 0.0):
                    continue
                term = b if (type(a) is float and a == 1.0) else a if (type(b) is float and b == 1.0) else a * b
                acc = term if (type(acc) is float and acc == 0.0) else acc + term
            out.append(acc)
    return out


def euler_components(axes, angles_deg: np.ndarray) -> list:
    """Closed-form intrinsic Euler rotation R = R_axes[0] · R_axes[1] · ... as 9 row-major
    entries, each an array shaped like angles_deg[0] (or a constant float).

    angles_deg: [K, ...] degrees, one row per axis in `axes` (K = len(axes) >= 1).
    sin/cos run in float32 (~1e-7 relative, 3x cheaper than float64; they dominate FK time).
    """
    ang = np.deg2rad(np.asarray(angles_deg, dtype=np.float32))
    c, s = np.cos(ang), np.sin(ang)
    M = _elementary(axes[0], c[0], s[0])
    for k in range(1, len(axes)):
        M = _matmul_sparse(M, _elementary(axes[k], c[k], s[k]))
    return M


def local_rotations(skel: BvhSkeleton, motion: np.ndarray) -> np.ndarray:
    """[3, 3, J, T] local rotation of every joint (level order) from the rotation channels."""
    mt = np.asarray(motion, dtype=np.float64).T              # [C, T]
    J, T = len(skel.names), mt.shape[1]
    R = np.zeros((3, 3, J, T))
    R[0, 0] = R[1, 1] = R[2, 2] = 1.0
    for axes, js, cols in skel.rot_groups:
        M = euler_components(axes, mt[cols])                 # 9 x [n, T]
        for e in range(9):
            R[e // 3, e % 3, js] = M[e]
    return R


def fk_walk(skel: BvhSkeleton, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """World positions [T, J, 3] from local rotations R [3, 3, J, T] and local translations
    t [3, J, T] (both in level order): G_j = G_parent · R_j, p_j = p_parent + G_parent · t_j.

    One depth level at a time, all of its joints and all frames in a handful of array ops;
    components-first layout so every op runs on long contiguous rows; world rotations are
    only formed for joints with children.
    """
    J, T = t.shape[1], t.shape[2]
    G = np.empty((3, 3, J, T))
    P = np.empty((3, J, T))
    for sl, inner, par in skel.levels:
        if par is None:
            G[:, :, inner], P[:, sl] = R[:, :, inner], t[:, sl]
            continue
        Gp, tl = G[:, :, par], t[:, sl]
        P[:, sl] = P[:, par] + Gp[:, 0] * tl[0] + Gp[:, 1] * tl[1] + Gp[:, 2] * tl[2]
        n = inner.stop - inner.start
        if n:
            Gp, Rl = Gp[:, :, :n], R[:, :, inner]
            G[:, :, inner] = Gp[:, 0, None] * Rl[0] + Gp[:, 1, None] * Rl[1] + Gp[:, 2, None] * Rl[2]
    out = np.empty((T, J, 3))
    out[:, skel.order] = P.transpose(2, 1, 0)
    return out


def forward_kinematics(skel: BvhSkeleton, motion: np.ndarray) -> np.ndarray:
    """World positions [T, J, 3] (float64, file units and axes) of every joint and End Site.

    motion: [T, C] channel values in file order. Local rotations are composed in closed form
    for all frames and joints at once, then the tree is walked level by level (`fk_walk`);
    the only Python loops are over rotation orders, matrix entries and tree depth.
    """
    motion = np.asarray(motion, dtype=np.float64)
    T, J = motion.shape[0], len(skel.names)
    R = local_rotations(skel, motion)
    t = np.empty((3, J, T))                                  # local translations, level order
    t[:] = skel.offsets[skel.order].T[:, :, None]
    if skel.pos_col.size:
        t[skel.pos_axis, skel.pos_level] = motion.T[skel.pos_col]  # position channels replace OFFSET
    return fk_walk(skel, R, t)


# ----------------------------------------------------------------------------- reading

_MOTION = re.compile(rb"^[ \t]*MOTION\b", re.M | re.I)
_MOTION_HEADER = re.compile(
    rb"\s*Frames\s*:[ \t]*(\S*)[ \t]*\r?\n\s*Frame\s*Time\s*:[ \t]*(\S*)[^\n]*(?:\n|\Z)", re.I)


def parse_bvh(raw: bytes, path="<bytes>") -> Bvh:
    """BVH file bytes -> Bvh. Raises MotionFormatError (reasons: empty, binary, hierarchy,
    truncated, bad_number, too_short, channel_count, nan)."""
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark (some Windows exporters)
        raw = raw[3:]
    if not raw or raw.isspace():
        raise MotionFormatError(path, "file is empty", reason="empty")
    if looks_binary(raw[:4096]):
        raise MotionFormatError(path, "binary data, not a text BVH file", reason="binary")
    m = _MOTION.search(raw)
    if m is None:
        if raw.lstrip()[:9].upper() == b"HIERARCHY":
            raise MotionFormatError(path, "no MOTION section (file cut short?)", reason="truncated")
        raise MotionFormatError(path, "not a BVH file: no HIERARCHY/MOTION", reason="hierarchy")
    try:
        skel = _parse_hierarchy(raw[:m.start()])
    except _Bad as e:
        raise MotionFormatError(path, e.problem, reason=e.reason) from None
    if skel.n_channels == 0:
        raise MotionFormatError(path, "no joint has CHANNELS", reason="hierarchy")

    h = _MOTION_HEADER.match(raw, m.end())
    if h is None:
        rest = raw[m.end():].strip()
        truncated = rest.count(b"\n") < 2
        raise MotionFormatError(path, "MOTION section lacks 'Frames:' / 'Frame Time:' lines",
                                reason="truncated" if truncated else "hierarchy")
    try:
        n_frames = int(h.group(1))
        frame_time = float(h.group(2))
    except ValueError:
        raise MotionFormatError(path, f"bad Frames/Frame Time values {h.group(1)!r}, {h.group(2)!r}",
                                reason="bad_number") from None
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise MotionFormatError(path, f"Frame Time must be > 0, got {frame_time}", reason="bad_number")
    if n_frames < 2:
        raise MotionFormatError(path, f"Frames: {n_frames}; need at least 2", reason="too_short")

    import pyarrow.compute as pc

    body = raw[h.end():]
    tokens, line_no = split_lines(path, body)
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    C, L = skel.n_channels, len(counts)
    first_line = raw[:h.end()].count(b"\n") + 1  # 1-based file line of the first frame
    if L < n_frames:
        raise MotionFormatError(path, f"header says {n_frames} frames but only {L} frame lines follow",
                                reason="truncated")
    wrong = np.flatnonzero(counts[:n_frames] != C)
    if wrong.size:
        f = int(wrong[0])
        where = f"frame {f} (line {first_line + int(line_no[f])})"
        if f == L - 1 and counts[f] < C:
            raise MotionFormatError(path, f"{where} is cut short: {counts[f]} of {C} values",
                                    reason="truncated")
        raise MotionFormatError(path, f"{where} has {counts[f]} values, the hierarchy has {C} channels",
                                reason="channel_count")
    try:
        motion = to_float(path, tokens.slice(0, n_frames).flatten(), "motion data: ").reshape(n_frames, C)
    except MotionFormatError as e:  # error path only: find the line for the message
        for f, toks in enumerate(tokens.slice(0, n_frames).to_pylist()):
            bad = next((x for x in toks if not _is_float(x)), None)
            if bad is not None:
                raise MotionFormatError(path, f"frame {f} (line {first_line + int(line_no[f])}): "
                                        f"{bad!r} is not a number", reason="bad_number") from None
        raise e
    finite = np.isfinite(motion)
    if not finite.all():
        f, col = (int(x) for x in np.argwhere(~finite)[0])
        joint, ch = _column_name(skel, col)
        raise MotionFormatError(path, f"non-finite value {motion[f, col]} in frame {f} "
                                f"(line {first_line + int(line_no[f])}), joint '{joint}' {ch}", reason="nan")
    return Bvh(skeleton=skel, motion=motion, frame_time=frame_time, extra_lines=L - n_frames)


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _column_name(skel: BvhSkeleton, col: int) -> tuple[str, str]:
    for name, chs in zip(skel.names, skel.channels):
        if col < len(chs):
            return name, chs[col]
        col -= len(chs)
    return "?", "?"


def load_bvh(path, *, max_bytes: int = MAX_BYTES) -> Bvh:
    """Read and parse a BVH file without FK (for tools that edit channels)."""
    with reading(path):
        return parse_bvh(read_bytes(path, max_bytes), path)


def read_bvh(path, *, max_bytes: int = MAX_BYTES) -> Clip:
    """A BVH file -> Clip: positions of every joint and End Site in metres, +Y up.

    Units are inferred from the rig's chain height (meta["units"]: cm, m, cmu, in, ...), the up
    axis from head - ankles (meta["up_axis"] is the file's; the Clip is always +Y up).
    """
    with reading(path):
        bvh = parse_bvh(read_bytes(path, max_bytes), path)
        pos = forward_kinematics(bvh.skeleton, bvh.motion)
        meta = {"format": "bvh", "frame_time": bvh.frame_time, "n_frames": int(len(bvh.motion))}
        if bvh.extra_lines:
            meta["ignored_lines"] = int(bvh.extra_lines)
        return make_clip(pos, bvh.skeleton.names, 1.0 / bvh.frame_time, path=path,
                         parents=bvh.skeleton.parents, meta=meta)


# ----------------------------------------------------------------------------- writing


def write_bvh(path, joint_names, parents, offsets, channels, motion, frame_time: float,
              *, precision: int = 6) -> Path:
    """Write a BVH file.

    joint_names: J names; parents: [J] parent index (-1 or None for roots); offsets: [J, 3] (any unit;
    the reader infers it); channels: per joint a list of channel names in the order their
    values appear (e.g. ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation",
    "Yrotation"]), empty for End Sites; motion: [T, sum(len(channels))] values with the columns
    in joint order; frame_time: seconds. A joint with no channels and no children is written
    as an End Site (read back as "<parent>_end"). Joints are written depth-first; the motion
    columns are reordered to match when the given order is not depth-first.
    """
    names = [str(n) for n in joint_names]
    J = len(names)
    par = [-1 if p is None or int(p) < 0 else int(p) for p in parents]
    off = np.asarray(offsets, dtype=np.float64).reshape(J, 3) if J else np.zeros((0, 3))
    chs = [tuple(_CHANNELS_LOWER.get(str(c).lower(), str(c)) for c in (ch or ())) for ch in channels]
    mot = np.asarray(motion, dtype=np.float64)
    if len(par) != J or len(chs) != J:
        raise MotionFormatError(path, "joint_names, parents and channels differ in length", reason="hierarchy")
    bad = [c for ch in chs for c in ch if c not in _CHANNELS]
    if bad:
        raise MotionFormatError(path, f"unknown channel names {bad}", reason="hierarchy")
    widths = np.array([len(c) for c in chs], np.int64)
    if mot.ndim != 2 or mot.shape[1] != widths.sum():
        raise MotionFormatError(path, f"motion has shape {mot.shape}, channels need {widths.sum()} columns",
                                reason="channel_count")
    if not np.isfinite(mot).all() or not np.isfinite(off).all():
        raise MotionFormatError(path, "non-finite motion or offset values", reason="nan")
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise MotionFormatError(path, f"frame_time must be > 0, got {frame_time}", reason="bad_number")
    children: list[list[int]] = [[] for _ in range(J)]
    roots = []
    for j, p in enumerate(par):
        if p < 0:
            roots.append(j)
        elif p >= J or p == j:
            raise MotionFormatError(path, f"joint '{names[j]}' has invalid parent {p}", reason="hierarchy")
        else:
            children[p].append(j)
    if not roots:
        raise MotionFormatError(path, "no root joint (parent -1)", reason="hierarchy")

    fmt = f"%.{precision}f"
    out: list[str] = ["HIERARCHY"]
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        o = " ".join(fmt % v for v in off[j])
        if par[j] >= 0 and not chs[j] and not children[j]:
            out.extend([f"{ind}End Site", f"{ind}{{", f"{ind}\tOFFSET {o}", f"{ind}}}"])
            return
        out.append(f"{ind}{'ROOT' if par[j] < 0 else 'JOINT'} {names[j]}")
        out.append(f"{ind}{{")
        out.append(f"{ind}\tOFFSET {o}")
        out.append(f"{ind}\tCHANNELS {len(chs[j])}" + "".join(" " + c for c in chs[j]))
        order.append(j)
        for c in children[j]:
            emit(c, depth + 1)
        out.append(f"{ind}}}")

    for r in roots:
        emit(r, 0)
    if len(order) + sum(1 for j in range(J) if par[j] >= 0 and not chs[j] and not children[j]) != J:
        raise MotionFormatError(path, "parents contain a cycle", reason="hierarchy")
    starts = np.concatenate([[0], np.cumsum(widths)])
    cols = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in order] + [np.zeros(0, np.int64)])
    mot = mot[:, cols.astype(np.int64)]
    T, C = mot.shape
    out += ["MOTION", f"Frames: {T}", f"Frame Time: {frame_time:.10g}"]
    head = "\n".join(out) + "\n"
    # One C-level format call for the whole matrix (no per-frame Python loop).
    row = " ".join([fmt] * C) + "\n"
    body = (row * T) % tuple(mot.ravel().tolist()) if C else "\n" * T
    path = Path(path)
    path.write_text(head + body, encoding="ascii")
    return path
