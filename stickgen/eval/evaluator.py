"""The frozen evaluator: stickgen's own motion encoder + action classifier + text-motion
contrastive pair, trained by the project on the *train* split only, saved in the checkpoint format.

Why our own: the standard evaluator of the text-to-motion field (Guo et al. 2022,
`text_mot_match`, a BiGRU over HumanML3D-263 features with GloVe text) cannot be obtained here and
would not read 2D stick figures anyway. Numbers computed in this evaluator's feature space are
therefore **not comparable** to the HumanML3D table; they compare stickgen checkpoints with each
other and with real motion, under one fixed, versioned evaluator.

Design (version `EVALUATOR_VERSION`):

- Input features per frame (96): the denoiser's pelvis-relative v3 features
  (`model.denoiser.motion_to_features`: every point relative to the pelvis, the pelvis slot holding
  forward speed and height, so the figure's x position does not matter) and their frame-to-frame
  differences, standardised with mean/std buffers measured on the training windows.
- Motion encoder: average pooling by `pool` (2) and a strided 1D-conv stem (T -> T/4, 6.25
  feature frames per second: semantics, not jitter, which has its own metric), `blocks` pre-norm
  residual dilated convs (dilation 1, 2, 4, 8: the whole 10 s window in view), then masked mean +
  max pooling over valid frames and an MLP to a `hidden`-d motion feature.
- Heads: action logits over the classes present in the training data (`wrapper.classes`, by
  name), and a projection to the `embed_dim` co-embedding (L2-normalised).
- Text side (TMR-style, Petrovich et al. 2023): the *frozen* sentence embedding of the dataset's
  text encoder (MiniLM, 384-d) through a 2-layer MLP to the same co-embedding.
- Loss: cross-entropy (label smoothing 0.1) + symmetric InfoNCE at temperature `temperature`;
  like TMR, negatives whose sentences are near-duplicates of the positive (cosine >
  `negative_filter`) or come from the same clip are removed from the softmax.
- Augmentation: mirror (x -> -x with left/right joints swapped via `skeleton.mirror_v3`; the
  action label and the words left/right swap with it), random time crops (50-100% of the valid
  frames), and a random sentence among the clip's `all_descriptions` each step.
- Reproducible: one seed drives the torch and numpy generators; same data + seed -> same weights.

The checkpoint is config.json + model.safetensors (`model_type` = "stickgen_evaluator"); the
train clip ids are recorded in `extra.train_clip_ids` so anyone can check that no test clip was
seen (`check_no_test_leak`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import from_dict as config_from_dict
from ..errors import ConfigError
from ..model.denoiser import motion_to_features
from ..motion.skeleton import mirror_v3
from ..motion.timing import WINDOW

MODEL_TYPE = "stickgen_evaluator"
EVALUATOR_VERSION = "stickgen-eval-v1"
FEATURES = "pelvis_relative_v1+delta"

#: Actions that swap under a left/right mirror.
MIRROR_ACTIONS = {"walk_left": "walk_right", "walk_right": "walk_left"}
_LR = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass(frozen=True)
class EvaluatorConfig:
    channels: int = 128
    blocks: int = 4
    kernel: int = 5
    hidden: int = 256
    embed_dim: int = 32
    pool: int = 2              # average-pool frames by this before the stride-2 stem
    text_dim: int = 384
    dropout: float = 0.1
    temperature: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> EvaluatorConfig:
        return config_from_dict(cls, d, "evaluator config")


@dataclass(frozen=True)
class TrainRecipe:
    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: int = 30
    contrastive_weight: float = 1.0
    label_smoothing: float = 0.1
    negative_filter: float = 0.85
    min_crop: float = 0.5
    p_mirror: float = 0.5
    seed: int = 0
    threads: int | None = None


# --- features ---------------------------------------------------------------------------------

def evaluator_features(motion: torch.Tensor) -> torch.Tensor:
    """[B, T, 48] v3 -> [B, T, 96]: pelvis-relative features and their frame differences."""
    f = motion_to_features(motion)
    d = torch.zeros_like(f)
    d[:, 1:] = f[:, 1:] - f[:, :-1]
    d[..., 10] = 0.0  # the pelvis-speed slot's difference is an acceleration; keep only speed
    return torch.cat([f, d], dim=-1)


def mirror_text(s: str) -> str:
    return _LR.sub(lambda m: ("right" if m.group(1).lower() == "left" else "left")
                   if m.group(1).islower() else ("Right" if m.group(1).lower() == "left" else "Left"), s)


# --- the network ------------------------------------------------------------------------------

class _Block(nn.Module):
    def __init__(self, c: int, k: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.conv = nn.Conv1d(c, c, k, padding=dilation * (k // 2), dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.drop(self.conv(F.gelu(self.norm(x))))


class MotionEvaluator(nn.Module):
    """Motion encoder (+ action head, co-embedding) and text projection. See the module docstring."""

    def __init__(self, cfg: EvaluatorConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.register_buffer("feat_mean", torch.zeros(96))
        self.register_buffer("feat_std", torch.ones(96))
        self.stem = nn.Conv1d(96, c, cfg.kernel, stride=2, padding=cfg.kernel // 2)
        self.blocks = nn.ModuleList(_Block(c, cfg.kernel, 2 ** i, cfg.dropout) for i in range(cfg.blocks))
        self.norm = nn.GroupNorm(8, c)
        self.mlp = nn.Sequential(nn.Linear(2 * c, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
        self.action_head = nn.Linear(cfg.hidden, num_classes)
        self.motion_proj = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.hidden), nn.GELU(),
                                       nn.Linear(cfg.hidden, cfg.embed_dim))

    def encode_features(self, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """feats [B, T, 96] (raw, normalised here), mask [B, T] bool -> hidden, logits, emb."""
        x = ((feats - self.feat_mean) / self.feat_std).transpose(1, 2)
        if self.cfg.pool > 1:
            x = F.avg_pool1d(x, self.cfg.pool, ceil_mode=True)
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        x = F.gelu(self.norm(x))                          # [B, C, T']
        m = mask[:, :: 2 * self.cfg.pool][:, : x.shape[-1]].to(x.dtype)  # pooling and the stem shrink time
        m = m.clone()
        m[m.sum(1) == 0, 0] = 1.0                           # an all-padding clip still pools frame 0
        w = m[:, None, :]
        mean = (x * w).sum(-1) / w.sum(-1)
        mx = x.masked_fill(w == 0, float("-inf")).amax(-1)
        h = self.mlp(torch.cat([mean, mx], dim=-1))
        return {"hidden": h, "logits": self.action_head(h), "emb": F.normalize(self.motion_proj(h), dim=-1)}

    def encode_motion(self, motion: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encode_features(evaluator_features(motion), mask)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text), dim=-1)


# --- checkpoint integration -------------------------------------------------------------------

def _build(config: dict) -> MotionEvaluator:
    w = config["wrapper"]
    return MotionEvaluator(EvaluatorConfig.from_dict(w["arch"]), len(w["classes"]))


def _register() -> None:
    from ..model.checkpoint import register_model_type

    register_model_type(MODEL_TYPE, _build)


_register()


def evaluator_checkpoint_config(cfg: EvaluatorConfig, classes: Sequence[str], *, text_encoder: str,
                                data_hash: str, extra: dict) -> dict:
    """config.json of an evaluator. `model` (the trunk's ModelConfig, required by the format)
    carries the sizes the evaluator shares with the generator contract — input_dim 48, the text
    encoder's dim, the action slots — and its conv width/depth as d_model/num_layers; the
    evaluator's own architecture is `wrapper.arch`."""
    from ..model.checkpoint import make_config
    from ..model.transformer import ModelConfig

    mc = ModelConfig(input_dim=48, output_dim=48, d_model=cfg.channels, nhead=4, num_layers=cfg.blocks,
                     embedding_dim=cfg.text_dim, dropout=cfg.dropout, num_actions=max(64, len(classes)))
    wrapper = {"evaluator_version": EVALUATOR_VERSION, "features": FEATURES, "fps": 25, "window": WINDOW,
               "arch": asdict(cfg), "classes": list(classes)}
    return make_config(mc, text_encoder=text_encoder, actions=list(classes), model_type=MODEL_TYPE,
                       wrapper=wrapper, training_stage="evaluator", data_hash=data_hash, extra=extra)


def weights_fingerprint(path: str | Path) -> str:
    h = hashlib.sha256(Path(path, "model.safetensors").read_bytes())
    return h.hexdigest()[:16]


class Evaluator:
    """A loaded, frozen evaluator with a numpy API (batched, no grad, eval mode)."""

    def __init__(self, model: MotionEvaluator, config: dict, path: Path | None = None, batch_size: int = 256):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = config
        self.path = path
        self.batch_size = batch_size
        self.classes: list[str] = list(config["wrapper"]["classes"])
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.text_encoder_name: str = config["text_encoder"]["name"]
        self.version: str = config["wrapper"]["evaluator_version"]
        self.fingerprint = weights_fingerprint(path) if path is not None else "unsaved"
        self._encoder = None

    # motion side
    @torch.no_grad()
    def encode(self, motion: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """motion [N, T, 48] (+ mask [N, T]) -> {"emb": [N, D], "logits": [N, C], "hidden": [N, H]}."""
        motion = np.asarray(motion, np.float32)
        if mask is None:
            mask = np.ones(motion.shape[:2], bool)
        outs: dict[str, list] = {"emb": [], "logits": [], "hidden": []}
        for s in range(0, len(motion), self.batch_size):
            o = self.model.encode_motion(torch.from_numpy(np.array(motion[s:s + self.batch_size])),
                                         torch.from_numpy(np.array(mask[s:s + self.batch_size], bool)))
            for k in outs:
                outs[k].append(o[k].numpy())
        D, C, H = self.model.cfg.embed_dim, len(self.classes), self.model.cfg.hidden
        empty = {"emb": (0, D), "logits": (0, C), "hidden": (0, H)}
        return {k: np.concatenate(v) if v else np.zeros(empty[k], np.float32) for k, v in outs.items()}

    def embed_motion(self, motion: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.encode(motion, mask)["emb"]

    def classify(self, motion: np.ndarray, mask: np.ndarray | None = None) -> list[str]:
        logits = self.encode(motion, mask)["logits"]
        return [self.classes[i] for i in logits.argmax(1)]

    # text side
    @torch.no_grad()
    def embed_text(self, sentence_embeddings: np.ndarray) -> np.ndarray:
        """Frozen sentence embeddings [N, E] (the evaluator's text encoder) -> [N, D]."""
        x = torch.from_numpy(np.asarray(sentence_embeddings, np.float32))
        return self.model.encode_text(x).numpy() if len(x) else np.zeros((0, self.model.cfg.embed_dim), np.float32)

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """Raw sentences -> [N, D] through the evaluator's own text encoder (a blank prompt gets
        the zero sentence vector, as the generators' unconditional input)."""
        from ..text.encoders import get_text_encoder

        if self._encoder is None:
            self._encoder = get_text_encoder(self.text_encoder_name)
        E = self.model.cfg.text_dim
        vec = np.zeros((len(prompts), E), np.float32)
        idx = [i for i, p in enumerate(prompts) if p.strip()]
        if idx:
            vec[idx] = self._encoder.encode([prompts[i] for i in idx])
        return self.embed_text(vec)

    @property
    def train_clip_ids(self) -> set[str]:
        return set(self.config["extra"].get("train_clip_ids") or [])

    def describe(self) -> dict:
        ex = self.config["extra"]
        return {"path": str(self.path) if self.path else None, "version": self.version,
                "fingerprint": self.fingerprint, "text_encoder": self.text_encoder_name,
                "classes": self.classes, "train_windows": ex.get("train_windows"),
                "train_clips": len(ex.get("train_clip_ids") or []), "data_hash": self.config["data_hash"],
                "recipe": ex.get("recipe"), "val": ex.get("val")}


def load_evaluator(path: str | Path) -> Evaluator:
    from ..model.checkpoint import load_model

    model, config = load_model(path)
    if config["model_type"] != MODEL_TYPE:
        raise ConfigError(f"{path}: model_type {config['model_type']!r} is not an evaluator ({MODEL_TYPE})")
    return Evaluator(model, config, Path(path))


def check_no_test_leak(evaluator: Evaluator, test_clip_ids: Sequence[str]) -> None:
    """Raise if any clip of the evaluation set was among the evaluator's training clips."""
    leak = evaluator.train_clip_ids & set(test_clip_ids)
    if leak:
        raise ConfigError(f"evaluator {evaluator.path} was trained on {len(leak)} clip(s) of the evaluation set, "
                          f"e.g. {sorted(leak)[:3]}: evaluate on its held-out split only")


# --- training ---------------------------------------------------------------------------------

def _sentence_table(windows, encoder_name: str | None) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Embed every description (and its left/right mirror) once. Returns per-window index lists
    into the table for the original and mirrored sentences, and the table [S, E]."""
    from ..text.encoders import get_text_encoder

    sents: dict[str, int] = {}

    def idx(s: str) -> int:
        return sents.setdefault(s, len(sents))

    orig = [[idx(s) for s in ds] for ds in windows.all_descriptions]
    mirr = [[idx(mirror_text(s)) for s in ds] for ds in windows.all_descriptions]
    if encoder_name is None:
        raise ConfigError("the dataset does not name its text encoder (metadata stickgen.text_encoder)")
    enc = get_text_encoder(encoder_name)
    table = enc.encode(list(sents)).astype(np.float32)
    return orig, mirr, table


def train_evaluator(data_dir: str | Path, out_dir: str | Path, *, subset: str = "pretrain",
                    cfg: EvaluatorConfig = EvaluatorConfig(), recipe: TrainRecipe = TrainRecipe(),
                    log: Callable[[str], None] | None = print) -> Path:
    """Train the evaluator on the `train` split of a dataset folder and save it to `out_dir`.
    Never reads a test window's motion (only the split and clip id columns, to check that no
    training clip also has windows in val/test)."""
    prev_threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        return _train(data_dir, out_dir, subset, cfg, recipe, log or (lambda s: None))
    finally:
        torch.set_num_threads(prev_threads)


def _train(data_dir, out_dir, subset: str, cfg: EvaluatorConfig, recipe: TrainRecipe, log) -> Path:
    from ..model.checkpoint import save_checkpoint
    from .data import load_windows, split_clip_ids

    t0 = time.perf_counter()
    train = load_windows(data_dir, ("train",), subset=subset)
    assert set(train.splits) == {"train"}, "the evaluator must be trained on the train split only"
    clips = split_clip_ids(data_dir, subset)
    overlap = set(train.clip_ids) & (clips.get("val", set()) | clips.get("test", set()))
    if overlap:
        raise ConfigError(f"{data_dir}: clips with windows in train and val/test: {sorted(overlap)[:5]}")
    val = load_windows(data_dir, ("val",), subset=subset) if clips.get("val") else None

    classes = sorted(set(train.action_labels) | {MIRROR_ACTIONS[a] for a in train.action_labels if a in MIRROR_ACTIONS})
    cidx = {c: i for i, c in enumerate(classes)}
    y = np.array([cidx[a] for a in train.action_labels])
    y_m = np.array([cidx[MIRROR_ACTIONS.get(a, a)] for a in train.action_labels])
    s_orig, s_mirr, sent = _sentence_table(train, train.text_encoder)
    if sent.shape[1] != cfg.text_dim:
        cfg = EvaluatorConfig(**{**asdict(cfg), "text_dim": int(sent.shape[1])})
    log(f"evaluator: {len(train)} train windows ({len(set(train.clip_ids))} clips, {train.source_counts()}), "
        f"{len(classes)} classes, {len(sent)} sentences")

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    N, T = train.mask.shape
    motion = torch.from_numpy(np.array(train.motion, np.float32))
    mirrored = torch.from_numpy(mirror_v3(train.motion).astype(np.float32))
    with torch.no_grad():
        feats = torch.stack([evaluator_features(motion), evaluator_features(mirrored)])  # [2, N, T, 96]
    valid = torch.from_numpy(train.mask)
    n_valid = train.mask.sum(1)

    model = MotionEvaluator(cfg, len(classes))
    with torch.no_grad():
        fv = feats[:, valid]  # [2, M, 96] valid frames of both views
        model.feat_mean.copy_(fv.reshape(-1, 96).mean(0))
        model.feat_std.copy_(fv.reshape(-1, 96).std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / recipe.warmup)
                                              * 0.5 * (1 + np.cos(np.pi * min(s, recipe.steps) / recipe.steps)))
    clip_code = np.unique(np.asarray(train.clip_ids), return_inverse=True)[1]
    sent_t = torch.from_numpy(sent)
    ar = torch.arange(T)
    B = min(recipe.batch_size, N)
    model.train()
    losses = []
    for step in range(recipe.steps):
        idx = rng.choice(N, B, replace=False)
        mir = rng.random(B) < recipe.p_mirror
        n = n_valid[idx]
        L = np.maximum(np.minimum(n, 10), np.round(n * rng.uniform(recipe.min_crop, 1.0, B))).astype(np.int64)
        start = np.floor(rng.random(B) * (n - L + 1)).astype(np.int64)
        gather = torch.from_numpy(start)[:, None] + ar[None]                       # [B, T]
        gather = gather.clamp_max(T - 1)
        f = feats[torch.from_numpy(mir.astype(np.int64)), torch.from_numpy(idx)]    # [B, T, 96]
        f = torch.gather(f, 1, gather[..., None].expand(-1, -1, 96))
        m = ar[None] < torch.from_numpy(L)[:, None]
        sid = [int(rng.choice(s_mirr[i] if mi else s_orig[i])) for i, mi in zip(idx, mir)]
        txt = sent_t[sid]
        target = torch.from_numpy(np.where(mir, y_m[idx], y[idx]))

        out = model.encode_features(f, m)
        ce = F.cross_entropy(out["logits"], target, label_smoothing=recipe.label_smoothing)
        t_emb = model.encode_text(txt)
        logits = out["emb"] @ t_emb.T / cfg.temperature                             # [B, B] motion x text
        with torch.no_grad():
            same = (txt @ txt.T > recipe.negative_filter) | torch.from_numpy(clip_code[idx][:, None] == clip_code[idx][None])
            same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        lab = torch.arange(B)
        nce = 0.5 * (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab))
        loss = ce + recipe.contrastive_weight * nce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append((float(ce.detach()), float(nce.detach())))
        if log and (step + 1) % max(1, recipe.steps // 5) == 0:
            c, e = np.mean(losses[-20:], axis=0)
            log(f"  step {step + 1}/{recipe.steps}: action CE {c:.3f}, InfoNCE {e:.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()

    ev = Evaluator(model, {"wrapper": {"classes": classes, "evaluator_version": EVALUATOR_VERSION},
                           "text_encoder": {"name": train.text_encoder}, "extra": {}, "data_hash": None})
    val_stats = _held_out_stats(ev, val) if val is not None else {}
    if val_stats:
        log(f"evaluator val: action acc {val_stats['action_accuracy']:.3f}, R@1 {val_stats['r_precision_top1']:.3f}, "
            f"R@3 {val_stats['r_precision_top3']:.3f} (batch {val_stats['r_precision_batch']}, n={val_stats['n']})")
    extra = {
        "recipe": asdict(recipe), "train_windows": len(train), "train_sources": train.source_counts(),
        "train_split": "train", "train_clip_ids": sorted(set(train.clip_ids)),
        "val": val_stats, "train_seconds": round(time.perf_counter() - t0, 1),
        "final_loss": {"action_ce": float(np.mean([a for a, _ in losses[-20:]])),
                       "infonce": float(np.mean([b for _, b in losses[-20:]]))},
        "description": "stickgen's own frozen evaluator (motion encoder + action classifier + text-motion "
                       "contrastive pair); metrics in its space are not comparable to HumanML3D numbers",
    }
    config = evaluator_checkpoint_config(cfg, classes, text_encoder=train.text_encoder, data_hash=train.fingerprint(),
                                         extra=extra)
    out = save_checkpoint(out_dir, model, config)
    log(f"saved evaluator to {out} in {time.perf_counter() - t0:.0f} s")
    return out


def _held_out_stats(ev: Evaluator, w) -> dict:
    """Action accuracy and retrieval of an evaluator on held-out windows (val during training)."""
    from .metrics import r_precision

    enc = ev.encode(w.motion, w.mask)
    pred = [ev.classes[i] for i in enc["logits"].argmax(1)]
    known = [i for i, a in enumerate(w.action_labels) if a in ev.class_index]
    acc = float(np.mean([pred[i] == w.action_labels[i] for i in known])) if known else float("nan")
    r = r_precision(ev.embed_text(w.text_embedding), enc["emb"], batch_size=32, top_k=3, rng=np.random.default_rng(0))
    return {"n": len(w), "action_accuracy": acc, "r_precision_top1": r["top1"], "r_precision_top3": r["top3"],
            "mm_dist": r["mm_dist"], "r_precision_batch": r["batch_size"]}
