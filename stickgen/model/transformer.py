"""The Stick-Gen trunk: a bidirectional pre-norm transformer over stick-figure frames.

This file re-implements the published `StickFigureTransformer` (gestura-ai/stick-gen,
src/model/transformer.py) from its documented layout, so the published weights load with
`load_state_dict(strict=True)`. Module names and their order are the published ones; renaming
anything here breaks checkpoint compatibility (tests/test_model_trunk.py checks every key and shape
against shared/reference/stickgen_state_dict_manifest.json and the outputs against a golden file).

Layout is sequence-first everywhere in the public API:

    motion          [S, B, input_dim]     S frames, B clips
    text_embedding  [B, embedding_dim]    one sentence vector per clip
    pose            [S, B, output_dim]

The encoder sees S + 1 tokens: the projected text vector is prepended as token 0 (RoPE position 0),
then the S motion frames (positions 1..S). There is no final norm after the stack, as published.

What we do differently from the published code (none of it changes the weights or the outputs
of an unmasked forward):
  * `key_padding_mask` is honoured (published: accepted and ignored).
  * RoPE cos/sin live in non-persistent buffers, rebuilt per device/dtype/length (published: plain
    attributes that stay on the first device).
  * `heads=` lets a caller compute only the heads it needs; the default pose-only call skips the
    five auxiliary heads entirely.
  * `extra_text_bias` and `motion_bias` are the hooks for a generation wrapper (see
    `StickFigureTransformer.forward`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

# The published model hard-codes these; they are part of the weight layout, not knobs.
ACTION_EMBED_DIM = 64  # nn.Embedding(num_actions, 64) before action_projection
CAMERA_DIM = 3  # (x, y, zoom) per frame
PHYSICS_DIM = 6  # (vx, vy, ax, ay, mx, my) per frame
ENVIRONMENT_DIM = 32  # pooled environment logits
ROPE_BASE = 10000.0
RMSNORM_EPS = 1e-6

ALL_HEADS = ("pose", "position", "velocity", "action_logits", "physics", "environment")


# -----------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ModelConfig:
    """Constructor arguments of `StickFigureTransformer`; saved verbatim in checkpoint config.json."""

    input_dim: int = 48  # 12 segments x (x1, y1, x2, y2), representation stick_figure_12_segment_v3
    output_dim: int = 48
    d_model: int = 384
    nhead: int = 12
    num_layers: int = 8
    embedding_dim: int = 1024  # BGE-large for the published weights
    dropout: float = 0.1
    num_actions: int = 64  # the published checkpoints (RunPod handler, finetune.py) use 64

    def __post_init__(self):
        assert self.d_model % self.nhead == 0, f"d_model {self.d_model} not divisible by nhead {self.nhead}"
        assert (self.d_model // self.nhead) % 2 == 0, "RoPE needs an even head_dim"
        assert self.d_model % 4 == 0, "camera/position heads use d_model // 4"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def variant(cls, name: str, **overrides) -> ModelConfig:
        """A named size: `ModelConfig.variant("medium", input_dim=20)`."""
        if name not in VARIANTS:
            raise ValueError(f"unknown model variant {name!r}; choose from {sorted(VARIANTS)}")
        return replace(VARIANTS[name], **overrides)


# d_model / num_layers / nhead as published (configs/{small,medium,large}.yaml); `tiny` is ours, for tests.
VARIANTS = {
    "tiny": ModelConfig(d_model=64, num_layers=2, nhead=4),
    "small": ModelConfig(d_model=256, num_layers=6, nhead=8),
    "medium": ModelConfig(d_model=384, num_layers=8, nhead=12),
    "large": ModelConfig(d_model=512, num_layers=10, nhead=16),
}


def variant_name(cfg: ModelConfig) -> str | None:
    """The named size whose d_model/num_layers/nhead match `cfg`, or None."""
    for name, v in VARIANTS.items():
        if (v.d_model, v.num_layers, v.nhead) == (cfg.d_model, cfg.num_layers, cfg.nhead):
            return name
    return None


# -----------------------------------------------------------------------------
# building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMSNORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class RotaryEmbedding(nn.Module):
    """GPT-NeoX ("rotate half") RoPE over the full head_dim.

    `inv_freq` is a *persistent* buffer because the published state dict contains it. cos/sin are
    derived caches: non-persistent, so they follow `.to(device)` but never enter a checkpoint, and
    they are rebuilt when a longer sequence, another device/dtype, or new inv_freq arrives.
    """

    def __init__(self, head_dim: int, base: float = ROPE_BASE):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=True)
        self.register_buffer("cos_cached", torch.empty(0), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0), persistent=False)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.cos_cached = self.sin_cached = torch.empty(0, device=self.inv_freq.device)  # inv_freq may have changed

    def cos_sin(self, seq_len: int, device: torch.device, dtype: torch.dtype):
        """cos, sin of shape [seq_len, head_dim] for positions 0..seq_len-1."""
        c = self.cos_cached
        if c.shape[0] < seq_len or c.device != device or c.dtype != dtype:
            # Built as ordinary tensors even inside torch.inference_mode(): an inference-mode
            # cache would make a later training forward fail ("Inference tensors cannot be saved
            # for backward").
            with torch.inference_mode(False), torch.no_grad():
                n = max(seq_len, c.shape[0])
                t = torch.arange(n, device=device, dtype=torch.float32)
                freqs = torch.outer(t, self.inv_freq.to(device=device, dtype=torch.float32))
                emb = torch.cat((freqs, freqs), dim=-1)  # [n, head_dim]
                self.cos_cached = emb.cos().to(dtype)
                self.sin_cached = emb.sin().to(dtype)
        return self.cos_cached[:seq_len], self.sin_cached[:seq_len]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE on q/k and fused SDPA. No causal mask: every frame sees
    every other frame (the published model is an encoder)."""

    def __init__(self, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rope = RotaryEmbedding(self.head_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape  # batch-first inside the stack (see StickFigureTransformer.forward)
        q = self.q_proj(x).view(B, T, self.nhead, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.nhead, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nhead, self.head_dim).transpose(1, 2)
        cos, sin = self.rope.cos_sin(T, x.device, x.dtype)  # (T, hs), broadcast over B, nh
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=False
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out_proj(y)


class SwiGLU(nn.Module):
    """out(silu(gate(x)) * value(x)); hidden = 4 * d_model as published (no 2/3 scaling), no biases."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        hidden = 4 * d_model
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.value_proj = nn.Linear(d_model, hidden, bias=False)
        self.output_proj = nn.Linear(hidden, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_proj(self.dropout(F.silu(self.gate_proj(x)) * self.value_proj(x)))


class EncoderLayer(nn.Module):
    """Pre-norm: x += drop(attn(norm1(x))); x += ffn(norm2(x))."""

    def __init__(self, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.self_attn = SelfAttention(d_model, nhead, dropout)
        self.ffn = SwiGLU(d_model, dropout)
        self.norm1 = RMSNorm(d_model)
        self.norm2 = RMSNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), attn_mask))
        x = x + self.ffn(self.norm2(x))
        return x


class Encoder(nn.Module):
    """Holds `layers` so the keys read `transformer_encoder.layers.N.*` as published. No final norm."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, dropout) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


def _mlp_head(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    # Linear -> GELU -> Dropout -> Linear: keys .0 and .3, as every published head.
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


def _input_mlp(d_in: int, d_hidden: int, d_model: int, dropout: float) -> nn.Sequential:
    # Linear -> GELU -> Linear -> LayerNorm -> Dropout: keys .0, .2, .3 (motion, camera, partner).
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_model), nn.LayerNorm(d_model), nn.Dropout(dropout)
    )


# -----------------------------------------------------------------------------
# the model


class StickFigureTransformer(nn.Module):
    def __init__(
        self,
        input_dim: int = 48,
        d_model: int = 384,
        nhead: int = 12,
        num_layers: int = 8,
        output_dim: int = 48,
        embedding_dim: int = 1024,
        dropout: float = 0.1,
        num_actions: int = 64,
    ):
        super().__init__()
        self.config = ModelConfig(
            input_dim=input_dim, output_dim=output_dim, d_model=d_model, nhead=nhead, num_layers=num_layers,
            embedding_dim=embedding_dim, dropout=dropout, num_actions=num_actions,
        )  # fmt: skip
        d = d_model
        # Registration order = published state-dict order.
        self.text_projection = nn.Sequential(
            nn.Linear(embedding_dim, 2 * d), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(2 * d, d), nn.LayerNorm(d), nn.Dropout(dropout),
        )  # fmt: skip
        self.motion_embedding = _input_mlp(input_dim, d // 2, d, dropout)
        self.action_embedding = nn.Embedding(num_actions, ACTION_EMBED_DIM)
        self.action_projection = nn.Sequential(nn.Linear(ACTION_EMBED_DIM, d), nn.LayerNorm(d), nn.Dropout(dropout))
        self.camera_projection = _input_mlp(CAMERA_DIM, d // 4, d, dropout)
        self.partner_projection = _input_mlp(input_dim, d // 2, d, dropout)
        self.transformer_encoder = Encoder(d, nhead, num_layers, dropout)
        self.pose_decoder = _mlp_head(d, d // 2, output_dim, dropout)
        self.position_decoder = _mlp_head(d, d // 4, 2, dropout)
        self.velocity_decoder = _mlp_head(d, d // 4, 2, dropout)
        self.action_predictor = _mlp_head(d, d // 2, num_actions, dropout)
        self.physics_decoder = _mlp_head(d, d // 2, PHYSICS_DIM, dropout)
        self.environment_decoder = _mlp_head(d, d // 2, ENVIRONMENT_DIM, dropout)
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> StickFigureTransformer:
        if isinstance(cfg, dict):
            cfg = ModelConfig.from_dict(cfg)
        return cls(**cfg.to_dict())

    def _init_weights(self):
        # Published: xavier_uniform_ on every parameter with dim > 1 (embeddings too); biases and
        # norm weights keep their PyTorch defaults. Only matters for training from scratch.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        motion: torch.Tensor,
        text_embedding: torch.Tensor,
        action_sequence: torch.Tensor | None = None,
        camera_data: torch.Tensor | None = None,
        partner_motion: torch.Tensor | None = None,
        return_all_outputs: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        extra_text_bias: torch.Tensor | None = None,
        heads: tuple[str, ...] | list[str] | None = None,
        motion_bias: torch.Tensor | None = None,
    ):
        """
        motion [S, B, input_dim]; text_embedding [B, embedding_dim];
        action_sequence [S, B] long; camera_data [S, B, 3]; partner_motion [S, B, input_dim];
        key_padding_mask [B, S] bool, True = padded frame (never attended to; the text token is
        never masked); extra_text_bias [B, embedding_dim], added to `text_embedding` before
        `text_projection`.

        `extra_text_bias` is the conditioning hook for a generation wrapper: e.g. a denoiser maps its
        noise level to a [B, embedding_dim] vector with its own (new) MLP and passes it here. It enters
        the network exactly where the sentence does, so the module tree, and therefore published-weight
        loading, is unchanged; with extra_text_bias=None the model is bit-identical to the published one.
        `motion_bias` [B, d_model] (or [B, S, d_model]) is added to every motion token after the input
        embeddings: a wrapper's conditioning (text + noise level) reaches every frame directly instead of
        only through attention to token 0, which a freshly trained model learns to use slowly.

        Returns pose [S, B, output_dim] by default. With `return_all_outputs=True` a dict with pose,
        position [B, 2], velocity [B, 2], action_logits [S, B, A], physics [S, B, 6], environment
        [B, 32]. `heads=` selects dict entries explicitly (any of ALL_HEADS, plus "hidden" =
        the final motion-token states [S, B, d_model]); only requested heads are computed.
        """
        if heads is None:
            heads = ALL_HEADS if return_all_outputs else None
        elif isinstance(heads, str):
            heads = (heads,)
        # (B, S, C): final states of the motion tokens only
        h = self.encode(motion, text_embedding, action_sequence, camera_data, partner_motion,
                        key_padding_mask, extra_text_bias, motion_bias)  # fmt: skip
        if heads is None:
            return self.pose_decoder(h).transpose(0, 1)  # (S, B, out)
        return self.decode(h, heads, key_padding_mask)

    def encode(
        self,
        motion: torch.Tensor,
        text_embedding: torch.Tensor,
        action_sequence: torch.Tensor | None = None,
        camera_data: torch.Tensor | None = None,
        partner_motion: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        extra_text_bias: torch.Tensor | None = None,
        motion_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Trunk only: returns the final motion-token states, *batch-first* (B, S, d_model)."""
        S, B, _ = motion.shape
        # The stack runs batch-first so q/k/v reshape to (B, nh, T, hs) with one transpose; the
        # public API stays sequence-first as published. One transpose in, one out.
        x = self.motion_embedding(motion.transpose(0, 1))  # (B, S, C)
        if action_sequence is not None:
            x = x + self.action_projection(self.action_embedding(action_sequence.transpose(0, 1)))
        if camera_data is not None:
            x = x + self.camera_projection(camera_data.transpose(0, 1))
        if partner_motion is not None:
            x = x + self.partner_projection(partner_motion.transpose(0, 1))
        if motion_bias is not None:
            x = x + (motion_bias.unsqueeze(1) if motion_bias.dim() == 2 else motion_bias)
        if extra_text_bias is not None:
            text_embedding = text_embedding + extra_text_bias
        t = self.text_projection(text_embedding).unsqueeze(1)  # (B, 1, C)
        x = torch.cat([t, x], dim=1)  # (B, 1 + S, C); the text token is RoPE position 0

        attn_mask = None
        if key_padding_mask is not None:
            assert key_padding_mask.shape == (B, S), f"key_padding_mask must be [B, S]=[{B}, {S}]"
            keep = torch.ones(B, S + 1, dtype=torch.bool, device=x.device)
            keep[:, 1:] = ~key_padding_mask.to(device=x.device, dtype=torch.bool)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, T): True = may attend; broadcast over heads, queries

        x = self.transformer_encoder(x, attn_mask)
        return x[:, 1:]  # drop the text token: heads read motion tokens only

    def decode(self, h: torch.Tensor, heads, key_padding_mask: torch.Tensor | None = None) -> dict:
        """Heads over batch-first motion states h (B, S, C); per-frame outputs come back [S, B, *]."""
        unknown = set(heads) - set(ALL_HEADS) - {"hidden"}
        assert not unknown, f"unknown heads {sorted(unknown)}; choose from {ALL_HEADS + ('hidden',)}"
        out = {}
        per_frame = {"pose": self.pose_decoder, "action_logits": self.action_predictor, "physics": self.physics_decoder}
        for name, head in per_frame.items():
            if name in heads:
                out[name] = head(h).transpose(0, 1)
        if "hidden" in heads:
            out["hidden"] = h.transpose(0, 1)
        pooled_heads = {"position": self.position_decoder, "velocity": self.velocity_decoder,
                        "environment": self.environment_decoder}  # fmt: skip
        if any(name in heads for name in pooled_heads):
            if key_padding_mask is None:
                pooled = h.mean(dim=1)  # (B, C), mean over motion tokens
            else:  # mean over real frames only
                w = (~key_padding_mask.to(device=h.device, dtype=torch.bool)).to(h.dtype).unsqueeze(-1)  # (B, S, 1)
                pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
            for name, head in pooled_heads.items():
                if name in heads:
                    out[name] = head(pooled)
        return out
