"""Metrics for generated motion, each defined here with its reference. All are vectorised over
clips (NumPy / PyTorch); the embeddings come from stickgen's own frozen evaluator
(`stickgen.eval.evaluator`), so values are comparable between stickgen checkpoints evaluated with
the same evaluator and test set, and NOT comparable to published HumanML3D numbers.

Protocol (Guo et al., "Generating Diverse and Natural 3D Human Motions from Text", CVPR 2022, and
its code as used by MDM / MoMask): R-precision in shuffled batches of exactly 32, diversity over
300 random pairs, multimodality over pairs of samples of the same text, every metric repeated
with different generation seeds and reported as mean and 95% interval (`mean_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.stats

from ..motion.skeleton import J, v3_to_joints

FPS = 25


# --- summary statistics -----------------------------------------------------------------------

def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and the half-width of its `confidence` interval over repetitions:
    t_{(1+c)/2, n-1} * s / sqrt(n) with the sample standard deviation s (ddof=1). For n = 20 this
    is 2.09 s/sqrt(n); Guo et al.'s code reports 1.96 * std(ddof=0)/sqrt(n), slightly narrower.
    NaN values (a metric undefined in a repetition) are dropped; n = 1 gives ci95 = NaN."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "std": float("nan"), "n": 0, "values": []}
    s = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1) * s / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": half, "std": s, "n": n, "values": [float(x) for x in v]}


# --- distribution: FID --------------------------------------------------------------------------

def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (float64)."""
    f = np.asarray(feats, np.float64)
    if len(f) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID,
    Heusel et al. 2017):

        d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})

    with a true matrix square root (`scipy.linalg.sqrtm`), not the trace approximation
    2 sqrt(tr1 tr2) the published stick-gen code used. As in the reference implementation
    (pytorch-fid), a near-singular product (fewer samples than dimensions) is regularised with
    eps*I on both covariances, and a tiny imaginary part from rounding is dropped."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            raise ValueError(f"sqrtm: large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two sets of evaluator embeddings [N, D] and [M, D] (see `frechet_distance`).
    Generated vs real test; real train vs real test gives the floor for this sample size."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# --- text-motion matching: R-precision and multimodal distance ---------------------------------

def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [N, M] between rows of a [N, D] and b [M, D]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, *, batch_size: int = 32, top_k: int = 3,
                rng: np.random.Generator | None = None) -> dict:
    """R-precision (Guo et al. 2022, §4 "R precision"): shuffle the N (text_i, motion_i) pairs,
    cut them into batches of exactly `batch_size` (the remainder is dropped, as in the reference
    code); within a batch rank the batch's motions by Euclidean distance to each text; top-k is
    the fraction of texts whose own motion is among the k nearest (a tie with another motion counts
    against the match, so identical motions for every text score 0, not 1). Also returns MM-Dist, the mean
    distance between each text and its own motion over the same samples. With fewer than
    `batch_size` pairs one batch of all N is used and `batch_size` in the result says so."""
    t, m = np.asarray(text_emb), np.asarray(motion_emb)
    N = len(t)
    if N != len(m):
        raise ValueError(f"{N} texts for {len(m)} motions")
    if N < 2:
        nan = float("nan")
        return {**{f"top{k}": nan for k in range(1, top_k + 1)}, "mm_dist": nan, "batch_size": N, "n": N}
    bs = min(batch_size, N)
    order = (rng or np.random.default_rng(0)).permutation(N)
    nb = N // bs
    idx = order[: nb * bs].reshape(nb, bs)
    hits = np.zeros(top_k)
    mm = 0.0
    for b in idx:
        d = _pairwise(t[b], m[b])                                  # [bs, bs] text x motion
        own = np.diagonal(d)[:, None]
        rank = (d < own).sum(1) + (d == own).sum(1) - 1            # motions at least as close (ties count against)
        hits += [(rank < k).sum() for k in range(1, top_k + 1)]
        mm += np.trace(d)
    n = nb * bs
    return {**{f"top{k}": float(hits[k - 1] / n) for k in range(1, top_k + 1)}, "mm_dist": float(mm / n),
            "batch_size": bs, "n": n}


def multimodal_distance(text_emb: np.ndarray, motion_emb: np.ndarray) -> float:
    """MM-Dist (Guo et al. 2022, "multimodal distance"): mean Euclidean distance between each
    text's embedding and its motion's embedding in the evaluator's co-embedding space."""
    return float(np.linalg.norm(np.asarray(text_emb, np.float64) - np.asarray(motion_emb, np.float64), axis=1).mean())


# --- diversity and multimodality ----------------------------------------------------------------

def _pairs(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k index pairs (i, j), i != j, from range(n): without replacement on each side when n >= k
    (as the reference code), else with replacement."""
    if n < 2:
        raise ValueError("need at least 2 samples for a pair")
    rep = n < k
    i = rng.choice(n, k, replace=rep)
    j = rng.choice(n, k, replace=rep)
    same = i == j
    while same.any():  # redraw self-pairs (a distance of 0 is not a pair of samples)
        j[same] = rng.choice(n, int(same.sum()), replace=True)
        same = i == j
    return i, j


def diversity(emb: np.ndarray, n_pairs: int = 300, rng: np.random.Generator | None = None) -> float:
    """Diversity (Guo et al. 2022): mean Euclidean distance between the embeddings of `n_pairs`
    random pairs of *samples* (clips — the published stick-gen script paired frames). Should be
    close to real data's value; identical samples give 0."""
    e = np.asarray(emb, np.float64)
    i, j = _pairs(len(e), n_pairs, rng or np.random.default_rng(0))
    return float(np.linalg.norm(e[i] - e[j], axis=1).mean())


def multimodality(emb: np.ndarray, n_pairs: int = 10, rng: np.random.Generator | None = None) -> float:
    """MultiModality (Guo et al. 2022): emb [P, K, D] holds K samples generated for each of P
    prompts; for each prompt draw `n_pairs` pairs of its samples and average their embedding
    distance over pairs and prompts. How much generations of one text vary (0 = deterministic)."""
    e = np.asarray(emb, np.float64)
    P, K, _ = e.shape
    rng = rng or np.random.default_rng(0)
    pi, pj = zip(*(_pairs(K, n_pairs, rng) for _ in range(P)))
    rows = np.arange(P)[:, None]
    return float(np.linalg.norm(e[rows, np.stack(pi)] - e[rows, np.stack(pj)], axis=-1).mean())


# --- temporal consistency -----------------------------------------------------------------------

#: jitter at which smoothness is 0.5 (the quality report's comfortable limit, units/s^3)
SMOOTHNESS_SCALE = 30.0


def jitter(motion: np.ndarray, mask: np.ndarray | None = None, fps: float = FPS) -> np.ndarray:
    """Per clip: mean over valid frames and the 16 joints of |Δ³x| * fps³ (units/s³) — the third
    finite difference of joint positions, i.e. jerk, the "temporal consistency" of the published
    stick-gen metrics (`mean_jerk`) in body units per second³ so it means the same at any fps.
    Matches `motion.quality.quality_report(...)["jitter"]` clip by clip. motion [N, T, 48]."""
    j = v3_to_joints(np.asarray(motion, np.float64))                    # [N, T, 16, 2]
    d3 = np.linalg.norm(np.diff(j, n=3, axis=1), axis=-1).mean(-1)       # [N, T-3]
    if mask is None:
        return d3.mean(1) * fps ** 3
    m = np.asarray(mask, bool)
    ok = m[:, 3:] & m[:, 2:-1] & m[:, 1:-2] & m[:, :-3]
    return (d3 * ok).sum(1) / np.maximum(ok.sum(1), 1) * fps ** 3


def smoothness(jit: np.ndarray | float) -> np.ndarray | float:
    """Smoothness score in (0, 1]: 1 / (1 + jitter / 30), the published `1/(1 + mean_jerk)` form
    rescaled to body units per second³ (the published per-frame units made it ≈ 1 for any clip).
    1 = no jerk; 0.5 at the quality report's comfortable jitter limit."""
    return 1.0 / (1.0 + np.asarray(jit) / SMOOTHNESS_SCALE)


# --- physical plausibility -----------------------------------------------------------------------

def physics_summary(motion: np.ndarray, mask: np.ndarray | None = None, fps: float = FPS) -> dict:
    """Per-clip `motion.quality.quality_report` (the same checks the dataset curation uses),
    summarised over clips: physics_valid_rate (fraction of clips within root speed/acceleration
    limits, with no exploding joint and no stretched limb), foot_skate_ratio (mean fraction of
    ankle-contact frames sliding > 0.25 units/s), static_ratio (mean fraction of frozen frames —
    a frozen figure is "physically valid", this is what exposes it) and quality (mean combined
    score). Also returns the per-clip arrays."""
    from ..motion.quality import quality_report

    motion = np.asarray(motion)
    n = np.full(len(motion), motion.shape[1]) if mask is None else np.asarray(mask).sum(1)
    reps = [quality_report(motion[i, : int(n[i])], fps) for i in range(len(motion))]
    col = lambda k: np.array([r[k] for r in reps], np.float64)  # noqa: E731
    per = {k: col(k) for k in ("physics_valid", "foot_skate_ratio", "static_ratio", "quality", "jitter")}
    return {"physics_valid_rate": float(per["physics_valid"].mean()),
            "foot_skate_ratio": float(per["foot_skate_ratio"].mean()),
            "static_ratio": float(per["static_ratio"].mean()),
            "quality": float(per["quality"].mean()), "per_clip": per}


# --- action recognition --------------------------------------------------------------------------

def action_accuracy(pred: Sequence[str], target: Sequence[str | None], classes: Sequence[str] | None = None) -> dict:
    """Action accuracy: fraction of clips the evaluator's classifier assigns to the action the
    prompt asked for (for real clips: their label), counted only over targets the evaluator knows
    (`classes`); also per action. The analogue, for our action vocabulary, of the recognition
    accuracy used by action-conditioned generation work (e.g. Guo et al. 2020 Action2Motion)."""
    known = set(classes) if classes is not None else None
    per: dict[str, list[int]] = {}
    for p, t in zip(pred, target):
        if t is None or (known is not None and t not in known):
            continue
        per.setdefault(t, []).append(int(p == t))
    hits = [h for v in per.values() for h in v]
    return {"accuracy": float(np.mean(hits)) if hits else float("nan"), "n": len(hits),
            "per_action": {a: {"n": len(v), "accuracy": float(np.mean(v))} for a, v in sorted(per.items())}}


# --- validity of a generated clip ----------------------------------------------------------------

def valid_motion(motion: np.ndarray, n_frames: int | None = None) -> tuple[bool, str]:
    """Is this a usable clip: a [T, 48] finite array (T = n_frames when given) whose segments join
    up (`skeleton.validate_v3`)? Returns (ok, reason)."""
    from ..motion.skeleton import ConnectivityError, validate_v3

    m = np.asarray(motion)
    if m.ndim != 2 or m.shape[1] != 48:
        return False, f"shape {m.shape}, expected [T, 48]"
    if n_frames is not None and len(m) != n_frames:
        return False, f"{len(m)} frames, expected {n_frames}"
    if len(m) == 0:
        return False, "no frames"
    try:
        validate_v3(m, atol=1e-3)
    except ConnectivityError as e:
        return False, str(e)
    return True, ""


# --- denoising reconstruction --------------------------------------------------------------------

#: Noise levels t of the flow-matching path x_t = (1 - t) x0 + t eps at which Pose MSE is measured.
POSE_MSE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def pose_mse(model, motion: np.ndarray, mask: np.ndarray, text: np.ndarray, *,
             levels: Sequence[float] = POSE_MSE_LEVELS, seed: int = 0, batch_size: int = 32) -> dict:
    """Denoising / reconstruction Pose MSE of a `model.denoiser.MotionDenoiser` on held-out windows:
    for each fixed noise level t, noise the test window's normalised features on the model's own
    path x_t = (1 - t) x0 + t eps (eps from `seed`, the same for every checkpoint), let the model
    predict the clean motion (text given, no action), decode it to v3 and take the squared error
    against the real v3 motion (body units², mean over the 48 coordinates and valid frames).
    Returns the mean over levels and clips, per level, and per clip (for an interval over clips).
    The published stick-gen "mse" was a teacher-forced next-frame error; this is the model's
    actual objective, at stated noise levels."""
    import torch

    motion = np.asarray(motion, np.float32)
    mask = np.asarray(mask, bool)
    N = len(motion)
    g = torch.Generator().manual_seed(seed)
    per_level: dict[str, list[float]] = {}
    per_clip = np.zeros((len(levels), N))
    dev = next(model.parameters()).device
    with torch.no_grad():
        for li, t in enumerate(levels):
            for s in range(0, N, batch_size):
                x = torch.from_numpy(motion[s:s + batch_size]).to(dev)
                m = torch.from_numpy(mask[s:s + batch_size]).to(dev)
                x0 = model.encode_motion(x)
                eps = torch.randn(x0.shape, generator=g).to(dev)
                xt = (1 - t) * x0 + t * eps
                tt = torch.full((len(x),), float(t), device=dev)
                pred = model(xt, tt, torch.from_numpy(np.asarray(text[s:s + batch_size], np.float32)).to(dev),
                             None, ~m)["pose"]
                rec = model.decode_motion(pred)
                err = ((rec - x) ** 2).mean(-1)                  # [B, T]
                per_clip[li, s:s + len(x)] = ((err * m).sum(1) / m.sum(1).clamp_min(1)).cpu().numpy()
            per_level[f"{t:g}"] = float(per_clip[li].mean())
    return {"mean": float(per_clip.mean()), "per_level": per_level, "levels": [float(t) for t in levels],
            "per_clip": per_clip.mean(0), "n": N}


def body_height(motion: np.ndarray) -> float:
    """Median head-to-lowest-ankle height of [N, T, 48] clips (sanity scale for reports)."""
    j = v3_to_joints(np.asarray(motion))
    h = j[..., J["head"], 1] - np.minimum(j[..., J["l_ankle"], 1], j[..., J["r_ankle"], 1])
    return float(np.median(h))
