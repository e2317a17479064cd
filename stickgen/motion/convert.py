"""One file in, training windows out: read -> canonical joints -> one camera -> 25 fps -> v3 ->
250-frame windows -> physics + quality. This is the per-file function Ray Data maps over every
input; it is pure (same file + config -> same rows) and fails with a typed error per file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MotionFormatError
from ..text.actions import ACTION_ID
from ..text.describe import bandai_labels, cmu_description, describe, describe_clip
from .clip import Clip
from .physics import root_physics
from .projection import choose_view, project
from .quality import QualityThresholds, quality_report
from .skeleton import joints_to_v3, regularize_head
from .timing import FPS, WINDOW, cut_window, resample, window_starts


@dataclass(frozen=True)
class ConvertConfig:
    view: str = "auto"            # auto | side | front
    window: int = WINDOW          # frames per window (10 s at 25 fps)
    stride: int = WINDOW // 2     # frames between window starts for long clips
    min_seconds: float = 0.5      # shorter clips are rejected (reason too_short)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / val / test by clip
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)


@dataclass
class Labels:
    action: str
    style: str
    description: str
    descriptions: list[str]
    source: str | None = None  # a sidecar may name the dataset (e.g. "synthetic")


def split_of(clip_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic split by source clip: a hash of the clip id alone, so adding files never
    moves an existing clip and the windows of one clip never straddle splits."""
    u = int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=8).digest(), "little") / 2 ** 64
    tr, va, _ = fractions
    return "train" if u < tr else ("val" if u < tr + va else "test")


def labels_for(path: str, clip: Clip) -> Labels:
    """Action, style and text for a clip, from (in order) a JSON sidecar with a description,
    Bandai file-name labels, CMU texts, else idle with a generic sentence."""
    p = Path(path)
    side = p.with_suffix(".json")
    stem = p.stem
    if clip.source == "bandai" or bandai_labels(stem):
        lab = bandai_labels(stem)
        if lab:
            action, style = lab
            d, ds = describe_clip(stem, action, style)
            return Labels(action, style, d, ds)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            meta = {}
        if isinstance(meta, dict) and meta.get("description"):
            action = meta.get("action") if meta.get("action") in ACTION_ID else "idle"
            ds = [str(s) for s in meta.get("descriptions") or [meta["description"]]]
            src = meta.get("source")
            return Labels(action, str(meta.get("style", "normal")), str(meta["description"]), ds,
                          str(src) if isinstance(src, str) and src.isidentifier() else None)
    cmu_id = stem.split(".")[0]
    if clip.source == "cmu" or cmu_id.replace("_", "").isdigit():
        found = cmu_description(cmu_id)
        if found:
            d, ds, action = found
            return Labels(action, "normal", d, ds)
    ds = describe("idle")
    return Labels("idle", "normal", ds[0], ds)


def clip_to_windows(clip: Clip, path: str, cfg: ConvertConfig = ConvertConfig(),
                    labels: Labels | None = None) -> tuple[list[dict], dict]:
    """Convert a read `Clip` into window rows (dicts in the dataset schema, minus the text
    embedding and the curation columns) plus clip-level info. Raises MotionFormatError."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if clip.n_frames < 2 or clip.duration < cfg.min_seconds:
        raise MotionFormatError(path, f"clip is {clip.duration:.2f} s long; minimum is {cfg.min_seconds} s",
                                reason="too_short")
    j3 = clip.canonical()
    if np.isfinite(j3).all():
        j3 = regularize_head(j3)
    else:
        bad = int(np.argwhere(~np.isfinite(j3).reshape(len(j3), -1).all(axis=1))[0, 0])
        raise MotionFormatError(path, f"non-finite joint position at frame {bad}", reason="nan")
    try:
        view = choose_view(j3, cfg.view)
    except ValueError as e:
        raise MotionFormatError(path, str(e), reason="degenerate") from None
    j2, cam3 = project(j3, view)
    both = resample(np.concatenate([j2, cam3], axis=-1), clip.fps, FPS)  # [T', 16, 5]
    j2r, cam3r = both[..., :2], both[..., 2:]
    v3 = joints_to_v3(j2r)
    timings["convert_ms"] = (time.perf_counter() - t0) * 1e3

    t1 = time.perf_counter()
    lab = labels or labels_for(path, clip)
    aid = ACTION_ID[lab.action]
    ext = Path(path).suffix.lstrip(".").lower()
    source = lab.source or clip.source
    clip_id = f"{source}/{Path(path).stem}"
    split = split_of(clip_id, cfg.split_fractions)
    rows = []
    for start in window_starts(len(v3), cfg.window, cfg.stride):
        seg, mask = cut_window(v3, start, cfg.window)
        seg[:, 0::2] -= seg[0, 10]  # every window starts with the pelvis at x = 0
        n = int(mask.sum())
        q = quality_report(seg[:n], FPS, joints3d=cam3r[start:start + n], th=cfg.thresholds)
        actions = np.where(mask, aid, 0).astype(np.int16)
        rows.append({
            "id": f"{source}/{Path(path).stem}.{ext}:{start:05d}",
            "source": source,
            "file": str(path),
            "clip_id": clip_id,
            "window_start": start,
            "fps": FPS,
            "n_frames": n,
            "mask": mask,
            "motion": seg.astype(np.float32),
            "actions": actions,
            "physics": root_physics(seg, FPS, mask),
            "camera": None,
            "description": lab.description,
            "all_descriptions": list(lab.descriptions),
            "action_label": lab.action,
            "style": lab.style,
            "view": view.name,
            "view_angle": float(view.angle_deg),
            "split": split,
            **q,
        })
    timings["score_ms"] = (time.perf_counter() - t1) * 1e3
    info = {"clip_id": clip_id, "frames_in": clip.n_frames, "fps_in": float(clip.fps),
            "frames_25": int(len(v3)), "view": view.as_dict(), "windows": len(rows),
            "action": lab.action, "split": split, **timings}
    return rows, info


def convert_file(path: str, cfg: ConvertConfig = ConvertConfig(), *, max_bytes: int = 256 << 20) -> tuple[list[dict], dict]:
    """Read and convert one file (see `clip_to_windows`). Raises MotionFormatError naming it."""
    from .readers import read_clip

    t0 = time.perf_counter()
    clip = read_clip(path, max_bytes=max_bytes)
    read_ms = (time.perf_counter() - t0) * 1e3
    rows, info = clip_to_windows(clip, path, cfg)
    info["read_ms"] = read_ms
    return rows, info
