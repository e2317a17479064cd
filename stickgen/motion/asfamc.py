"""Acclaim ASF/AMC (the CMU database's original format): skeleton (.asf) + motion (.amc).

ASF: `:units` (length = scale factor, CMU: 0.45 => 1 unit = 1/0.45 inch; angle deg|rad),
`:root` (order of the AMC root values, axis order, position, orientation), `:bonedata` (per
bone: direction (world, at rest), length, axis angles + order, dof), `:hierarchy`.
AMC: per frame a frame number, then one line per bone: name and its dof values.

Kinematics (the ASF definition, x applied first for "XYZ"/"rx ry rz"):
  C_b = R(axis_b),  M_b = R(dof values),  G_b = G_parent · C_b · M_b · C_b^-1,
  end_b = start_b + length_b · G_b · direction_b.
We walk the tree with W_b = G_b · C_b instead, W_b = W_parent · (C_parent^-1 C_b) · M_b, whose
local factor is a constant times an Euler rotation, and bone vectors become constants in the
bone's own frame (C_b^-1 · direction_b · length_b): the BVH FK machinery then applies as is.

Only rotation dofs move bones; translation/length dofs (tx ty tz l, unused by CMU) are read
and ignored, and the AMC root translation is absolute (the ASF root `position` is not added).

Points: "root" plus one point per bone at the bone's *start* (named after the bone), plus
"<bone>_end" for leaf bones. So "lfemur" = end of lhipjoint = the hip, "ltibia" = the knee,
"lfoot" = the ankle, "lhumerus" = end of lclavicle = the shoulder, "lradius" = the elbow,
"lwrist" = the wrist, exactly like CMU's BVH conversion (LeftUpLeg = start of the femur ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MotionFormatError
from .bvh import build_skeleton, euler_components, euler_matrices, fk_walk
from .clip import Clip
from .formats import MAX_BYTES, check_frames, looks_binary, read_bytes, reading, split_lines, to_float
from .rig import UNIT_SCALES, make_clip

CMU_FPS = 120.0
_AXIS = {"x": 0, "y": 1, "z": 2}


@dataclass
class AsfBone:
    name: str
    direction: np.ndarray          # [3] unit vector, world frame at rest
    length: float                  # ASF length units
    axis: np.ndarray = field(default_factory=lambda: np.zeros(3))  # angles about X, Y, Z
    axis_order: str = "XYZ"
    dof: tuple[str, ...] = ()      # e.g. ("rx", "ry", "rz"); values appear in this order
    parent: str = "root"


@dataclass
class AsfSkeleton:
    bones: dict[str, AsfBone]
    order: list[str]               # bones, parents before children
    length_unit: float = 1.0       # ASF `:units length`
    angle_unit: str = "deg"
    root_order: tuple[str, ...] = ("tx", "ty", "tz", "rx", "ry", "rz")
    root_axis_order: str = "XYZ"
    root_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    root_orientation: np.ndarray = field(default_factory=lambda: np.zeros(3))


def _floats(path, toks, n, where):
    if len(toks) < n:
        raise MotionFormatError(path, f"{where}: expected {n} numbers, got {len(toks)}", reason="truncated")
    try:
        return np.array([float(t) for t in toks[:n]])
    except ValueError:
        raise MotionFormatError(path, f"{where}: not a number in {' '.join(toks[:n])!r}",
                                reason="bad_number") from None


def parse_asf(text: str, path="<asf>") -> AsfSkeleton:
    """ASF text -> AsfSkeleton (raises MotionFormatError, reason hierarchy/bad_number/truncated)."""
    bones: dict[str, AsfBone] = {}
    children: dict[str, list[str]] = {}
    sk = AsfSkeleton(bones={}, order=[])
    section, cur = None, None
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        toks = s.split()
        if s.startswith(":"):
            section = toks[0][1:].lower()
            continue
        key = toks[0].lower()
        where = f"line {ln}"
        if section == "units":
            if key == "length":
                sk.length_unit = float(_floats(path, toks[1:], 1, where)[0])
            elif key == "angle":
                sk.angle_unit = toks[1].lower()[:3] if len(toks) > 1 else "deg"
        elif section == "root":
            if key == "order":
                sk.root_order = tuple(t.lower() for t in toks[1:])
            elif key == "axis":
                sk.root_axis_order = toks[1].upper() if len(toks) > 1 else "XYZ"
            elif key == "position":
                sk.root_position = _floats(path, toks[1:], 3, where)
            elif key == "orientation":
                sk.root_orientation = _floats(path, toks[1:], 3, where)
        elif section == "bonedata":
            if key == "begin":
                cur = {}
            elif key == "end":
                if cur is None or "name" not in cur or "direction" not in cur or "length" not in cur:
                    raise MotionFormatError(path, f"{where}: bone without name/direction/length",
                                            reason="hierarchy")
                bones[cur["name"]] = AsfBone(**cur)
                cur = None
            elif cur is None:
                raise MotionFormatError(path, f"{where}: '{toks[0]}' outside begin/end", reason="hierarchy")
            elif key == "name":
                cur["name"] = toks[1]
            elif key == "direction":
                cur["direction"] = _floats(path, toks[1:], 3, where)
            elif key == "length":
                cur["length"] = float(_floats(path, toks[1:], 1, where)[0])
            elif key == "axis":
                cur["axis"] = _floats(path, toks[1:], 3, where)
                cur["axis_order"] = toks[4].upper() if len(toks) > 4 else "XYZ"
            elif key == "dof":
                cur["dof"] = tuple(t.lower() for t in toks[1:])
            # id, limits (and their continuation lines), bodymass, cofmass: not needed
        elif section == "hierarchy":
            if key in ("begin", "end"):
                continue
            children.setdefault(toks[0], []).extend(toks[1:])
    if cur is not None:
        raise MotionFormatError(path, "ASF ends inside a bone's begin/end", reason="truncated")
    if not bones:
        raise MotionFormatError(path, "no :bonedata bones", reason="hierarchy")
    if sk.angle_unit not in ("deg", "rad"):
        raise MotionFormatError(path, f"unknown angle unit {sk.angle_unit!r}", reason="hierarchy")
    # parents-first order by walking the hierarchy from the root
    order, queue, seen = [], ["root"], {"root"}
    while queue:
        p = queue.pop(0)
        for c in children.get(p, []):
            if c not in bones:
                raise MotionFormatError(path, f":hierarchy names unknown bone '{c}'", reason="hierarchy")
            if c in seen:
                raise MotionFormatError(path, f":hierarchy lists bone '{c}' twice (cycle?)", reason="hierarchy")
            seen.add(c)
            bones[c].parent = p
            order.append(c)
            queue.append(c)
    loose = [b for b in bones if b not in seen]
    if loose:
        raise MotionFormatError(path, f"bones not connected to the root: {', '.join(loose[:10])}",
                                reason="hierarchy")
    sk.bones, sk.order = bones, order
    return sk


def _axis_rotation(angles, order: str, unit: str) -> np.ndarray:
    """ASF `axis ax ay az ORDER` -> 3x3 C; "XYZ" means X applied first: C = Rz · Ry · Rx."""
    order = order.upper()
    ang = np.array([angles["XYZ".index(a)] for a in reversed(order)], np.float64)
    if unit == "rad":
        ang = np.rad2deg(ang)
    return euler_matrices(ang, np.array([_AXIS[a.lower()] for a in reversed(order)]))


_FRAME_LINE = re.compile(rb"^[ \t]*\d+[ \t]*\r?$", re.M)


def find_asf(amc_path) -> Path:
    """The ASF for an AMC: "<subject>.asf" beside it (CMU: 01_01.amc -> 01.asf), else
    "<stem>.asf". Raises MotionFormatError(reason="io") naming the places it looked."""
    amc = Path(amc_path)
    subject = amc.stem.split("_")[0]
    names = [f"{subject}.asf", f"{amc.stem}.asf"]
    if subject.isdigit():
        names += [f"{int(subject)}.asf", f"{int(subject):02d}.asf"]
    for n in dict.fromkeys(names):
        for cand in (amc.with_name(n), amc.with_name(n[:-4] + ".ASF")):
            if cand.is_file():
                return cand
    raise MotionFormatError(amc, f"no ASF skeleton found beside it (looked for {', '.join(dict.fromkeys(names))})",
                            reason="io")


def read_asf_amc(asf_path, amc_path=None, *, fps: float = CMU_FPS, max_bytes: int = MAX_BYTES) -> Clip:
    """ASF skeleton + AMC motion -> Clip (metres, +Y up).

    read_asf_amc("01.asf", "01_01.amc"), or read_asf_amc("01_01.amc") to find the ASF beside
    it. AMC files carry no frame rate: `fps` (CMU: 120). Lengths are ASF units / `length`
    inches (CMU: 1/0.45 in); if that does not give a human-sized rig the unit is inferred.
    """
    if amc_path is None:
        amc_path, asf_path = asf_path, None
    if asf_path is None:
        asf_path = find_asf(amc_path)
    path = str(amc_path)
    with reading(path):
        asf_raw = read_bytes(asf_path, max_bytes)
        if looks_binary(asf_raw[:4096]):
            raise MotionFormatError(asf_path, "binary data, not a text ASF file", reason="binary")
        sk = parse_asf(asf_raw.decode("latin-1"), asf_path)
        amc_raw = read_bytes(amc_path, max_bytes)
        if looks_binary(amc_raw[:4096]):
            raise MotionFormatError(path, "binary data, not a text AMC file", reason="binary")
        values = _parse_amc(amc_raw, path, sk)
        joints, names, parents = _asf_fk(sk, values)
        declared = 0.0254 / sk.length_unit
        unit = "cmu" if abs(declared / UNIT_SCALES["cmu"] - 1) < 1e-6 else f"in/{sk.length_unit:g}"
        meta = {"format": "asf_amc", "asf": str(asf_path), "n_frames": int(len(joints)),
                "fps_assumed": True, "asf_length_unit": sk.length_unit}
        clip = make_clip(joints, names, fps, path=path, parents=parents, units=(unit, declared), meta=meta)
        if not 0.5 <= clip.meta["chain_height_m"] <= 3.0:  # not inches after all: infer
            clip = make_clip(joints, names, fps, path=path, parents=parents, units="auto", meta=meta)
        return clip


def _parse_amc(raw: bytes, path: str, sk: AsfSkeleton) -> dict[str, np.ndarray]:
    """AMC bytes -> {bone or "root": [T, n_values] float64}. Vectorised: all lines are
    tokenised and converted in C; the per-frame layout (bone order) is checked with array ops."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = _FRAME_LINE.search(raw)
    if m is None:
        raise MotionFormatError(path, "no frames (no frame-number line)", reason="truncated")
    header = raw[:m.start()].decode("latin-1")
    radians = ":RADIANS" in header.upper() or sk.angle_unit == "rad"
    tokens, line_no = split_lines(path, raw[m.start():])
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    frame_rows = np.flatnonzero(counts == 1)
    F, L = len(frame_rows), len(counts)
    first_line = raw[:m.start()].count(b"\n") + 1
    if F < 2:
        raise MotionFormatError(path, f"{F} frame(s); need at least 2", reason="too_short")
    k = int(frame_rows[1] - frame_rows[0])             # lines per frame (number + bones)
    bad = np.flatnonzero(np.diff(frame_rows) != k)
    if bad.size:
        f = int(bad[0])
        raise MotionFormatError(path, f"frame {f + 1} (line {first_line + int(line_no[frame_rows[f]])}) has "
                                f"{int(frame_rows[f + 1] - frame_rows[f]) - 1} bone lines, frame 1 has {k - 1}",
                                reason="channel_count")
    if L - frame_rows[-1] != k:
        raise MotionFormatError(path, f"last frame has {L - frame_rows[-1] - 1} of {k - 1} bone lines",
                                reason="truncated")
    heads = pc.list_element(tokens, 0)
    names = heads.slice(1, k - 1).to_pylist()
    expect = {"root": len(sk.root_order), **{b: len(sk.bones[b].dof) for b in sk.bones}}
    unknown = [n for n in names if n not in expect]
    if unknown or len(set(names)) != len(names):
        raise MotionFormatError(path, f"AMC bones not in the ASF or repeated: {unknown or names}",
                                reason="hierarchy")
    # every frame must list the same bones in the same order
    idx = pc.fill_null(pc.index_in(heads, value_set=pa.array(names)), -1).to_numpy(zero_copy_only=False)
    want = np.tile(np.r_[-1, np.arange(k - 1)], F)
    if not np.array_equal(idx, want):
        r = int(np.argmax(idx != want))
        raise MotionFormatError(path, f"line {first_line + int(line_no[r])}: bone order differs from frame 1",
                                reason="hierarchy")
    n_vals = np.array([expect[n] for n in names])
    got = counts.reshape(F, k)[:, 1:] - 1
    wrong = np.argwhere(got != n_vals)
    if wrong.size:
        f, b = (int(x) for x in wrong[0])
        raise MotionFormatError(path, f"frame {f + 1}: bone '{names[b]}' has {got[f, b]} values, "
                                f"the ASF says {n_vals[b]}", reason="channel_count")
    flat = to_float(path, pc.list_slice(tokens, 1).flatten(), "AMC: ")
    vals = flat.reshape(F, int(n_vals.sum()))
    check_frames(path, vals, "AMC value")
    if radians:
        vals = vals.copy()
    out, col = {}, 0
    for n, w in zip(names, n_vals):
        v = vals[:, col:col + w]
        dofs = sk.root_order if n == "root" else sk.bones[n].dof
        if radians:  # convert rotation values to degrees (translations untouched)
            rot = [i for i, d in enumerate(dofs) if d.startswith("r")]
            v[:, rot] = np.rad2deg(v[:, rot])
        out[n] = v
        col += w
    return out


def _asf_fk(sk: AsfSkeleton, values: dict[str, np.ndarray]):
    """World positions [T, J, 3] (ASF units), point names and parents."""
    T = len(next(iter(values.values())))
    bones = [sk.bones[b] for b in sk.order]
    leaf = {b.name for b in bones} - {b.parent for b in bones}
    names = ["root"] + [b.name for b in bones] + [f"{b.name}_end" for b in bones if b.name in leaf]
    index = {n: i for i, n in enumerate(names)}
    J = len(names)
    parents = [-1] + [index[b.parent] for b in bones] + [index[b.name] for b in bones if b.name in leaf]
    C = {"root": _axis_rotation(sk.root_orientation, sk.root_axis_order, sk.angle_unit)}
    for b in bones:
        C[b.name] = _axis_rotation(b.axis, b.axis_order, sk.angle_unit)
    # constant local translations: a bone's start is its parent's end, expressed in the parent
    # bone's frame (C_p^-1 · length · direction); bones hanging off the root start at the root.
    offsets = np.zeros((J, 3))
    for b in bones:
        if b.name in leaf:
            offsets[index[f"{b.name}_end"]] = C[b.name].T @ (b.direction * b.length)
        if b.parent != "root":
            p = sk.bones[b.parent]
            offsets[index[b.name]] = C[p.name].T @ (p.direction * p.length)
    skel = build_skeleton(names, parents, offsets, [()] * J)
    lvl = np.empty(J, np.int64)
    lvl[skel.order] = np.arange(J)                       # point -> level order

    # local rotations, level order: root C·M, bone (C_p^-1 C_b)·M_b, ends identity
    R = np.zeros((3, 3, J, T))
    R[0, 0] = R[1, 1] = R[2, 2] = 1.0
    groups: dict[tuple, list] = {}
    for n in ["root"] + [b.name for b in bones]:
        dofs = sk.root_order if n == "root" else sk.bones[n].dof
        A = C["root"] if n == "root" else C[sk.bones[n].parent].T @ C[n]
        rot = tuple((i, _AXIS[d[1]]) for i, d in enumerate(dofs) if d in ("rx", "ry", "rz"))
        groups.setdefault(tuple(a for _, a in rot), []).append((n, A, [i for i, _ in rot]))
    for axes, members in groups.items():
        js = np.array([lvl[index[n]] for n, _, _ in members])
        A = np.stack([A for _, A, _ in members])           # [n, 3, 3]
        if not axes:                                      # no rotation dofs: constant A
            R[:, :, js] = A.transpose(1, 2, 0)[..., None]
            continue
        # dof values in application order (first listed first): M = R_last ... R_first,
        # i.e. intrinsic composition over the reversed axis list
        ang = np.stack([np.stack([values[n][:, cols[::-1][k]] if n in values else np.zeros(T)
                                  for n, _, cols in members]) for k in range(len(axes))])  # [K, n, T]
        M = euler_components(axes[::-1], ang)
        M = [np.broadcast_to(np.float64(m), (len(members), T)) if isinstance(m, float) else m for m in M]
        for i in range(3):
            for k in range(3):
                R[i, k, js] = sum(A[:, i, j, None] * M[3 * j + k] for j in range(3))
    t = np.empty((3, J, T))
    t[:] = skel.offsets[skel.order].T[:, :, None]
    root_vals = values.get("root")
    if root_vals is not None:
        for i, d in enumerate(sk.root_order):
            if d in ("tx", "ty", "tz"):
                t[_AXIS[d[1]], lvl[0]] = root_vals[:, i]
    return fk_walk(skel, R, t), names, parents
