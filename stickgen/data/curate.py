"""Curation: which windows go to the pretrain set, which to the SFT set, and why the rest don't.

Everything here is a pure function of a row (plus, for balancing, a small global plan), so the
same code decides a window's fate inside a Ray Data task and on the driver for the manifest.

    pretrain = windows that pass `pretrain_verdict` (validity: finite, long enough, no explosion,
               bones hold their length, not frozen, quality floor).
    SFT      = pretrain windows that pass `sft_verdict` (combined quality >= sft.min_quality and,
               with sft.strict_physics, `physics_valid`), then *balanced*:
               1. a global aggregate counts eligible windows per (action, source);
               2. `allocate` turns the counts into a keep count per group: every action gets
                  min(action_cap, what its data allows) windows, and no source exceeds
                  max_source_fraction of the *final* SFT set (not of the pre-balance total: the
                  published merge did that, so its output broke the cap it claimed);
               3. a seeded per-row hash u(id) in [0, 1) keeps a row iff u <= its group's
                  threshold, the k-th smallest u of the group, so counts are exact, the kept
                  fraction of every group is k/n, and reruns pick the same rows.
    SFT rows are also pretrain rows (SFT is a curated subset; the manifest says `sft` for them).

A max source fraction f cannot hold with fewer than 1/f sources (with one source, that source is
100% of anything); the effective cap is then 1/S (sources balanced as evenly as the data allows)
and the plan says so. The published curation cut a lone source to 30% for nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PretrainRule:
    """Validity of a window (checked in this order; the first failure is the reject reason)."""

    min_frames: int = 25               # valid frames (1 s at 25 fps); shorter windows carry too little motion
    max_explosion_ratio: float = 0.02  # fraction of frames with a joint faster than explosion_speed (glitches)
    max_limb_error: float = 0.5        # relative 3D bone-length change: above this the rig mapping is broken
    max_static_ratio: float = 0.95     # fraction of frozen frames: a T-pose or a dropped take
    min_quality: float = 0.2           # combined quality floor (see motion/quality.py)

    def __post_init__(self):
        if self.min_frames < 2:
            raise ValueError("curation.pretrain.min_frames must be >= 2")
        for k in ("max_explosion_ratio", "max_static_ratio", "min_quality"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"curation.pretrain.{k} must be in [0, 1], got {getattr(self, k)}")


@dataclass(frozen=True)
class SftRule:
    """The SFT card: quality >= 0.5, strict physics validation, uniform actions, source cap."""

    min_quality: float = 0.5
    strict_physics: bool = True        # require `physics_valid` (root speed/accel, no explosion, bones)
    action_cap: int | None = 1000      # windows per action; null = the smallest action's count (strictly uniform)
    max_source_fraction: float = 0.3   # of the final SFT set; below 1/#sources it cannot hold (see module doc)

    def __post_init__(self):
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError(f"curation.sft.min_quality must be in [0, 1], got {self.min_quality}")
        if self.action_cap is not None and self.action_cap < 1:
            raise ValueError(f"curation.sft.action_cap must be >= 1 or null, got {self.action_cap}")
        if not 0.0 < self.max_source_fraction <= 1.0:
            raise ValueError(f"curation.sft.max_source_fraction must be in (0, 1], got {self.max_source_fraction}")


@dataclass(frozen=True)
class CurationConfig:
    seed: int = 0                      # seeds the per-row hash of the balancing filter
    pretrain: PretrainRule = field(default_factory=PretrainRule)
    sft: SftRule = field(default_factory=SftRule)


#: columns the verdicts read (the manifest/aggregate stage reads only these from the windows)
VERDICT_COLUMNS = ("id", "source", "action_label", "n_frames", "finite", "explosion_ratio", "limb_error",
                   "static_ratio", "quality", "physics_valid")

#: window reject reason codes, in check order
PRETRAIN_REASONS = ("duplicate_id", "non_finite", "too_few_frames", "explosion", "limb_error", "static",
                    "low_quality")
#: why a pretrain window is not in SFT
SFT_REASONS = ("sft_low_quality", "sft_physics", "balance")

# ----------------------------------------------------------------------------- per-row verdicts


def pretrain_verdict(row: Mapping, rule: PretrainRule) -> tuple[str, str] | None:
    """None if the window is valid for pretraining, else (reason code, message)."""
    if not row["finite"]:
        return "non_finite", "window has non-finite coordinates"
    if row["n_frames"] < rule.min_frames:
        return "too_few_frames", f"{row['n_frames']} valid frames < pretrain.min_frames {rule.min_frames}"
    if row["explosion_ratio"] > rule.max_explosion_ratio:
        return "explosion", (f"explosion_ratio {row['explosion_ratio']:.3f} > pretrain.max_explosion_ratio "
                             f"{rule.max_explosion_ratio}")
    if row["limb_error"] > rule.max_limb_error:
        return "limb_error", f"limb_error {row['limb_error']:.3f} > pretrain.max_limb_error {rule.max_limb_error}"
    if row["static_ratio"] > rule.max_static_ratio:
        return "static", f"static_ratio {row['static_ratio']:.3f} > pretrain.max_static_ratio {rule.max_static_ratio}"
    if row["quality"] < rule.min_quality:
        return "low_quality", f"quality {row['quality']:.3f} < pretrain.min_quality {rule.min_quality}"
    return None


def sft_verdict(row: Mapping, rule: SftRule) -> tuple[str, str] | None:
    """None if a pretrain window is eligible for SFT (before balancing), else (reason, message)."""
    if row["quality"] < rule.min_quality:
        return "sft_low_quality", f"quality {row['quality']:.3f} < sft.min_quality {rule.min_quality}"
    if rule.strict_physics and not row["physics_valid"]:
        return "sft_physics", "physics_valid is false (root speed/accel, explosion or bone length out of limits)"
    return None


def row_uniform(row_id: str, seed: int) -> float:
    """A seeded hash of the window id, uniform in [0, 1): the balancing filter's coin."""
    h = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


# ----------------------------------------------------------------------------- global balancing


def _cap_total(x: np.ndarray, total: float) -> np.ndarray:
    """Lower the largest entries of x (water-filling) until sum(x) <= total."""
    if x.sum() <= total + 1e-9:
        return x
    xs = np.sort(x)[::-1]
    csum = np.cumsum(xs)
    for c in range(1, len(xs) + 1):  # c largest entries cut to a common level m
        rest = xs.sum() - csum[c - 1]
        m = (total - rest) / c
        nxt = xs[c] if c < len(xs) else 0.0
        if m >= nxt - 1e-12:
            return np.minimum(x, max(m, 0.0))
    return np.zeros_like(x)


def _cut_by_totals(col: np.ndarray, totals: np.ndarray, amount: float) -> np.ndarray:
    """Remove `amount` from a source's column, taking from the actions whose totals are largest
    (water-filling on the totals): max-min fair to the per-action counts."""
    if amount <= 1e-12:
        return col
    lo, hi = 0.0, float(totals.max())
    for _ in range(100):  # removed(m) is decreasing in the level m
        m = 0.5 * (lo + hi)
        if np.minimum(col, np.maximum(totals - m, 0.0)).sum() > amount:
            lo = m
        else:
            hi = m
    return col - np.minimum(col, np.maximum(totals - hi, 0.0))


def _source_level(q: np.ndarray, f: float) -> float:
    """Largest level L with L <= f * sum(min(q, L)): capping every source at L makes each
    capped source exactly the fraction f of the capped total."""
    if q.max() <= f * q.sum() + 1e-9:
        return math.inf
    qs = np.sort(q)[::-1]
    S = len(qs)
    for c in range(1, S):
        if c * f >= 1.0:
            break
        L = f * qs[c:].sum() / (1.0 - c * f)
        if qs[c] - 1e-9 <= L <= qs[c - 1] + 1e-9:
            return L
    return float(qs[-1])  # f == 1/S: every source at the level of the smallest


@dataclass
class Allocation:
    """Keep counts per (action, source) and how they were derived (goes into summary.json)."""

    keep: dict[tuple[str, str], int]
    eligible: dict[tuple[str, str], int]
    action_target: int
    source_cap_requested: float
    source_cap_effective: float
    note: str = ""

    def to_json(self) -> dict:
        by_action: dict[str, dict] = defaultdict(lambda: {"eligible": 0, "kept": 0})
        by_source: dict[str, dict] = defaultdict(lambda: {"eligible": 0, "kept": 0})
        for (a, s), n in self.eligible.items():
            k = self.keep.get((a, s), 0)
            for d, key in ((by_action, a), (by_source, s)):
                d[key]["eligible"] += n
                d[key]["kept"] += k
        return {
            "action_target": self.action_target,
            "source_cap_requested": self.source_cap_requested,
            "source_cap_effective": self.source_cap_effective,
            "note": self.note,
            "by_action": dict(sorted(by_action.items())),
            "by_source": dict(sorted(by_source.items())),
            "groups": [{"action": a, "source": s, "eligible": n, "kept": self.keep.get((a, s), 0),
                        "keep_fraction": round(self.keep.get((a, s), 0) / n, 6) if n else 0.0}
                       for (a, s), n in sorted(self.eligible.items())],
        }


def allocate(eligible: Mapping[tuple[str, str], int], rule: SftRule) -> Allocation:
    """Keep counts per (action, source) group from the eligible counts.

    Alternates two cuts until neither changes anything (both only lower counts, so it converges):
    every action's total is capped at the target (its largest source cells first, which also
    helps the source cap), and every source above the level L = f * (capped total) is cut to L,
    taking from the actions with the largest totals first (so the per-action counts stay as even
    as the data allows). Counts are then rounded to integers keeping each source's total
    (largest remainders), any source the rounding pushed over floor(f * N) loses rows from its
    largest cell, finally `_fill` tops actions up with any row
    that still fits.
    """
    groups = sorted((g for g, n in eligible.items() if n > 0))
    if not groups:
        return Allocation({}, dict(eligible), 0, rule.max_source_fraction, rule.max_source_fraction,
                          "no window is eligible for SFT")
    actions = sorted({a for a, _ in groups})
    sources = sorted({s for _, s in groups})
    ai = {a: i for i, a in enumerate(actions)}
    si = {s: i for i, s in enumerate(sources)}
    n = np.zeros((len(actions), len(sources)))
    for a, s in groups:
        n[ai[a], si[s]] = eligible[(a, s)]
    per_action = n.sum(axis=1)
    target = int(rule.action_cap) if rule.action_cap is not None else int(per_action.min())
    f = max(rule.max_source_fraction, 1.0 / len(sources))
    note = ""
    if f > rule.max_source_fraction:
        note = (f"max_source_fraction {rule.max_source_fraction} cannot hold with {len(sources)} source(s); "
                f"sources are capped at 1/{len(sources)} = {f:.3f} of the SFT set instead")

    k = n.copy()
    for _ in range(1000):
        prev = k.copy()
        for i in range(len(actions)):
            k[i] = _cap_total(k[i], target)
        L = _source_level(k.sum(axis=0), f)
        if math.isfinite(L):
            for j in range(len(sources)):
                k[:, j] = _cut_by_totals(k[:, j], k.sum(axis=1), k[:, j].sum() - L)
        if np.abs(k - prev).max() < 1e-9:
            break
    ki = _round_columns(k, n)
    while True:  # rounding can leave an action over the target or a source over the cap: trim
        N = ki.sum()
        over_a = np.flatnonzero(ki.sum(axis=1) > target)
        over_s = [j for j in range(len(sources)) if ki[:, j].sum() > math.floor(f * N + 1e-9)]
        if len(over_a):
            i = over_a[0]
            ki[i, int(np.argmax(ki[i]))] -= 1
        elif over_s and N > 0:
            j = over_s[0]
            ki[int(np.argmax(ki[:, j])), j] -= 1
        else:
            break
    _fill(ki, n.astype(np.int64), target, f)
    keep = {(a, s): int(ki[ai[a], si[s]]) for a, s in groups}
    return Allocation(keep, {g: int(eligible[g]) for g in groups}, target, rule.max_source_fraction, f, note)


def _round_columns(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Integer counts keeping each source's total (largest remainders): flooring every cell
    would zero a source spread thinly over many actions."""
    ki = np.floor(k + 1e-6).astype(np.int64)
    for j in range(k.shape[1]):
        want = int(np.floor(k[:, j].sum() + 1e-6))
        frac = np.where(ki[:, j] < n[:, j], k[:, j] - ki[:, j], -1.0)
        for i in np.argsort(-frac, kind="stable")[: max(0, want - int(ki[:, j].sum()))]:
            if frac[i] > 0:
                ki[i, j] += 1
    return ki


def _fill(k: np.ndarray, n: np.ndarray, target: int, f: float) -> None:
    """Greedy top-up in place: the cuts above can overshoot (each lowers the total the source
    cap is measured on), so add rows back -- to the action with the fewest rows, from the source
    with the fewest that stays within the cap -- until no row fits. When no single row fits, one
    row per source at once (a balanced round) may still fit."""
    while True:
        blocked = np.zeros(k.shape[0], dtype=bool)
        while True:
            K = k.sum(axis=1)
            open_ = np.flatnonzero((K < target) & ~blocked)
            if len(open_) == 0:
                break
            a = open_[np.argmin(K[open_])]
            Q = k.sum(axis=0)
            ok = np.flatnonzero((k[a] < n[a]) & (Q + 1 <= f * (Q.sum() + 1) + 1e-9))
            if len(ok) == 0:
                blocked[a] = True
                continue
            k[a, ok[np.argmin(Q[ok])]] += 1
            blocked[:] = False  # a larger total may have opened room for a blocked action
        trial = k.copy()
        for j in np.argsort(trial.sum(axis=0), kind="stable"):
            K = trial.sum(axis=1)
            cand = np.flatnonzero((K < target) & (trial[:, j] < n[:, j]))
            if len(cand):
                trial[cand[np.argmin(K[cand])], j] += 1
        Q = trial.sum(axis=0)
        if Q.sum() == k.sum() or (Q > f * Q.sum() + 1e-9).any():
            return
        k[:] = trial


def group_thresholds(uniforms: Mapping[tuple[str, str], np.ndarray], keep: Mapping[tuple[str, str], int]
                     ) -> dict[tuple[str, str], float]:
    """Per group, the k-th smallest u: `u <= threshold` keeps exactly k rows (-1 keeps none)."""
    out = {}
    for g, u in uniforms.items():
        k = keep.get(g, 0)
        out[g] = -1.0 if k <= 0 else float(np.sort(np.asarray(u))[min(k, len(u)) - 1])
    return out


@dataclass
class CurationPlan:
    """The global part of curation, computed once from the metadata and shipped to every task."""

    cfg: CurationConfig
    thresholds: dict[tuple[str, str], float]
    allocation: Allocation
    duplicates: dict[str, str] = field(default_factory=dict)  # window id -> the file that keeps it

    def to_json(self) -> dict:
        return {"config": asdict(self.cfg), "balance": self.allocation.to_json(),
                "duplicate_ids": len(self.duplicates)}


def window_fate(row: Mapping, plan: CurationPlan) -> tuple[str, str | None, str | None, str | None, str | None]:
    """(fate, reason, message, sft_reason, sft_message) of one window row.

    fate: "sft" (in the SFT set *and* the pretrain set), "pretrain" (pretrain only; sft_reason
    says why not SFT) or "rejected" (in neither; reason/message say why).
    """
    kept_file = plan.duplicates.get(row["id"])
    if kept_file is not None and kept_file != row["file"]:
        return "rejected", "duplicate_id", f"window id {row['id']} also comes from {kept_file}", None, None
    bad = pretrain_verdict(row, plan.cfg.pretrain)
    if bad:
        return "rejected", bad[0], bad[1], None, None
    not_sft = sft_verdict(row, plan.cfg.sft)
    if not_sft:
        return "pretrain", None, None, not_sft[0], not_sft[1]
    g = (row["action_label"], row["source"])
    if row_uniform(row["id"], plan.cfg.seed) <= plan.thresholds.get(g, -1.0):
        return "sft", None, None, None, None
    kept = plan.allocation.keep.get(g, 0)
    return "pretrain", None, None, "balance", (
        f"balanced out: group (action={g[0]}, source={g[1]}) keeps {kept} of {plan.allocation.eligible.get(g, 0)}")


def build_plan(windows: list[Mapping], cfg: CurationConfig) -> CurationPlan:
    """The global aggregate: duplicates, SFT eligibility counts per (action, source), keep counts
    and exact hash thresholds. `windows` are the metadata rows of every window (VERDICT_COLUMNS
    plus `file`), a small table: no motion arrays."""
    first_file: dict[str, str] = {}
    dup: set[str] = set()
    for r in sorted(windows, key=lambda r: r["file"]):
        if r["id"] in first_file:
            dup.add(r["id"])
        else:
            first_file[r["id"]] = r["file"]
    duplicates = {i: first_file[i] for i in dup}
    uniforms: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in windows:
        if r["id"] in duplicates and duplicates[r["id"]] != r["file"]:
            continue
        if pretrain_verdict(r, cfg.pretrain) or sft_verdict(r, cfg.sft):
            continue
        uniforms[(r["action_label"], r["source"])].append(row_uniform(r["id"], cfg.seed))
    alloc = allocate({g: len(u) for g, u in uniforms.items()}, cfg.sft)
    thr = group_thresholds({g: np.asarray(u) for g, u in uniforms.items()}, alloc.keep)
    return CurationPlan(cfg, thr, alloc, duplicates)
