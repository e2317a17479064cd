"""Text in, animation out: a loaded checkpoint + its text encoder.

`MotionGenerator` is what the CLI (`stickgen generate`), bulk generation (Ray Data actors) and the
Serve replicas all hold. It renders *the generated motion* (the published generator rendered a
procedural scene instead).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, StickgenError
from ..motion.physics import root_physics
from ..model.denoiser import DEFAULT_SAMPLER
from ..text.actions import ACTIONS, NULL_ACTION, parse_timeline

FPS = 25
MAX_SECONDS = 10.0
MIN_SECONDS = 0.4
MAX_PROMPT_CHARS = 1000


class GenerationError(StickgenError, ValueError):
    """A bad generation request (names the field and the problem)."""

    reason = "bad_request"


@dataclass
class Animation:
    """One generated clip. motion [T, 48] v3 body units, +Y up, 25 fps, pelvis starting at x = 0."""

    prompt: str
    seed: int
    motion: np.ndarray
    actions: list[str] | None = None
    steps: int = 0
    guidance: float = 1.0
    checkpoint_id: str = ""
    timings: dict = field(default_factory=dict)

    @property
    def physics(self) -> np.ndarray:
        return root_physics(self.motion, FPS)

    def to_motion_json(self) -> dict:
        from ..render.motion_json import to_motion_json

        return to_motion_json(self.motion, fps=FPS, description=self.prompt, actions=self.actions,
                              physics=self.physics)

    def save(self, path: str | Path) -> Path:
        """Write .json/.motion (the published `.motion` format) or render .gif/.mp4/.svg/.png."""
        from ..render import render
        from ..render.motion_json import write_motion_json

        p = Path(path)
        if p.suffix.lower() in (".json", ".motion"):
            return write_motion_json(p, self.motion, fps=FPS, description=self.prompt, actions=self.actions,
                                     physics=self.physics)
        return render(self.motion, p, fps=FPS, title=self.prompt[:60] or None)


def checkpoint_fingerprint(ckpt_dir: Path) -> str:
    """A short content hash of the weights: the checkpoint id recorded with generated data."""
    h = hashlib.sha256()
    with open(ckpt_dir / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def validate_request(prompt: str, seconds: float, steps: int | None, guidance: float | None) -> None:
    if not isinstance(prompt, str):
        raise GenerationError("prompt: must be a string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GenerationError(f"prompt: {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if not (MIN_SECONDS <= float(seconds) <= MAX_SECONDS):
        raise GenerationError(f"seconds: {seconds} is out of range [{MIN_SECONDS}, {MAX_SECONDS}]")
    if steps is not None and not (1 <= int(steps) <= 100):
        raise GenerationError(f"steps: {steps} is out of range [1, 100]")
    if guidance is not None and not (0.0 <= float(guidance) <= 20.0):
        raise GenerationError(f"guidance: {guidance} is out of range [0, 20]")


class MotionGenerator:
    """A checkpoint (folder or hf://owner/repo[@rev]) ready to generate. Thread-compatible: one
    instance per process/actor/replica."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", threads: int | None = None):
        from ..model.checkpoint import load_model
        from ..model.hub import resolve_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        src = str(checkpoint)
        self.path = Path(resolve_checkpoint(src)) if src.startswith("hf://") else Path(src)
        if not (self.path / "model.safetensors").exists():
            raise CheckpointError(f"{self.path}: not a stickgen checkpoint folder (no model.safetensors)",
                                  reason="not_found")
        self.model, self.config = load_model(self.path, map_location=device)
        if self.config["model_type"] != "motion_denoiser":
            raise CheckpointError(
                f"{self.path}: model_type {self.config['model_type']!r} cannot generate; it is a bare "
                "published trunk (trained as a next-frame copier). Fine-tune it first: "
                "`stickgen train sft --init-from ...`", reason="not_generative")
        self._encoder = None  # loaded on first use: bulk actors get embeddings from their own stage
        sampler = self.config["wrapper"].get("sampler", {})
        self.default_steps = int(sampler.get("steps", DEFAULT_SAMPLER["steps"]))
        self.default_guidance = float(sampler.get("guidance", DEFAULT_SAMPLER["guidance"]))
        self.checkpoint_id = checkpoint_fingerprint(self.path)
        self.vocab = list(self.config.get("actions") or ACTIONS)

    @property
    def encoder(self):
        """The checkpoint's text encoder (per-text cached), loaded on first use."""
        if self._encoder is None:
            from ..text.encoders import get_text_encoder

            self._encoder = get_text_encoder(self.config["text_encoder"]["name"], device=self.device)
        return self._encoder

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """[B, E]; a blank prompt is the unconditional (zero) embedding the model was trained with."""
        E = self.config["text_encoder"]["dim"]
        out = np.zeros((len(prompts), E), np.float32)
        idx = [i for i, p in enumerate(prompts) if p.strip()]
        if idx:
            out[idx] = self.encoder.encode([prompts[i] for i in idx])
        return torch.from_numpy(out).to(self.device)

    def timeline(self, spec: str | None, n_frames: int) -> np.ndarray | None:
        if not spec:
            return None
        try:
            ids = parse_timeline(spec, n_frames / FPS, FPS)
        except ValueError as e:
            raise GenerationError(f"actions: {e}") from None
        return ids[:n_frames]

    def generate(self, prompts: list[str], *, seconds: float | list[float] = MAX_SECONDS,
                 seeds: list[int] | None = None, steps: int | None = None, guidance: float | None = None,
                 actions: list[str | None] | None = None,
                 text_embeddings: np.ndarray | torch.Tensor | None = None) -> list[Animation]:
        """Generate one animation per prompt, batched (prompts of equal length share a batch).

        seconds: one value or one per prompt (<= 10); seeds: one per prompt (default 0..B-1);
        actions: optional per-prompt timelines like "walk:0-4,wave:4-10"; text_embeddings: optional
        [B, E] precomputed `embed(prompts)` (bulk generation embeds in its own stage)."""
        from ..model.denoiser import sample

        B = len(prompts)
        secs = [float(seconds)] * B if not isinstance(seconds, (list, tuple)) else [float(s) for s in seconds]
        seeds = list(range(B)) if seeds is None else [int(s) for s in seeds]
        acts = list(actions) if actions is not None else [None] * B
        if not (len(secs) == len(seeds) == len(acts) == B):
            raise GenerationError("seconds/seeds/actions must have one entry per prompt")
        for p, s in zip(prompts, secs):
            validate_request(p, s, steps, guidance)
        steps = int(steps or self.default_steps)
        guidance = float(self.default_guidance if guidance is None else guidance)

        t0 = time.perf_counter()
        if text_embeddings is None:
            text = self.embed(prompts)
        else:
            text = torch.from_numpy(np.array(text_embeddings, np.float32)).to(self.device)  # a writable copy
            if tuple(text.shape) != (B, self.config["text_encoder"]["dim"]):
                raise GenerationError(f"text_embeddings: shape {tuple(text.shape)}, expected "
                                      f"({B}, {self.config['text_encoder']['dim']})")
        t_embed = time.perf_counter() - t0
        out: list[Animation | None] = [None] * B
        frames = [int(round(s * FPS)) for s in secs]
        for n in sorted(set(frames)):
            idx = [i for i in range(B) if frames[i] == n]
            tl = [self.timeline(acts[i], n) for i in idx]
            act_t = None
            if any(x is not None for x in tl):
                act_t = torch.tensor(np.stack([x if x is not None else np.full(n, NULL_ACTION) for x in tl]),
                                     dtype=torch.long, device=self.device)
            t1 = time.perf_counter()
            motion = sample(self.model, text[idx], n, steps=steps, guidance=guidance,
                            seeds=[seeds[i] for i in idx], actions=act_t).cpu().numpy()
            t_sample = time.perf_counter() - t1
            for k, i in enumerate(idx):
                names = None if tl[k] is None else [self.vocab[a] if a < len(self.vocab) else "none" for a in tl[k]]
                out[i] = Animation(prompts[i], seeds[i], motion[k].astype(np.float32), names, steps, guidance,
                                   self.checkpoint_id,
                                   {"embed_s": t_embed / B, "sample_s": t_sample / len(idx)})
        return out  # type: ignore[return-value]
