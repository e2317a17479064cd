"""The trunk must be the published StickFigureTransformer: same keys, shapes, parameter counts and
outputs (shared/reference has the manifest and a golden file made with the published code)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from stickgen.model.transformer import ALL_HEADS, VARIANTS, ModelConfig, StickFigureTransformer

MANIFEST = "stickgen_state_dict_manifest.json"
GOLDEN = "stickgen_golden_tiny.safetensors"
VARIANT_KEYS = ["small_dim20", "small_dim48", "medium_dim20", "medium_dim48", "large_dim20", "large_dim48"]


@pytest.fixture(scope="module")
def manifest(shared_reference):
    return json.loads((shared_reference / MANIFEST).read_text())


@pytest.fixture(scope="module")
def golden(shared_reference):
    path = shared_reference / GOLDEN
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    tensors = load_file(str(path))
    group = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = StickFigureTransformer(**config).eval()
    model.load_state_dict(group("weights."), strict=True)
    return model, group("input."), group("output."), group("output_text_only.")


def _meta_model(cfg: dict) -> StickFigureTransformer:
    with torch.device("meta"):  # shapes only: no memory, no init time, even for large
        return StickFigureTransformer(**cfg)


@pytest.mark.parametrize("variant", VARIANT_KEYS)
def test_state_dict_matches_manifest(manifest, variant):
    entry = manifest[variant]
    model = _meta_model(entry["config"])
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    want = list(entry["state_dict"].items())
    assert [k for k, _ in got] == [k for k, _ in want]  # same keys in the same order
    assert got == want
    assert model.num_parameters() == entry["num_parameters"]


def test_medium_parameter_count():
    with torch.device("meta"):
        model = StickFigureTransformer.from_config(ModelConfig.variant("medium", input_dim=48, num_actions=64))
    assert model.num_parameters() == 20_611_802


def test_named_variants():
    assert {n: (v.d_model, v.num_layers, v.nhead) for n, v in VARIANTS.items()} == {
        "tiny": (64, 2, 4), "small": (256, 6, 8), "medium": (384, 8, 12), "large": (512, 10, 16),
    }  # fmt: skip
    cfg = ModelConfig.variant("small", input_dim=20)
    assert (cfg.d_model, cfg.input_dim, cfg.output_dim) == (256, 20, 48)
    with pytest.raises(ValueError, match="unknown model variant"):
        ModelConfig.variant("huge")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_golden_all_outputs(golden):
    model, inputs, outputs, _ = golden
    with torch.no_grad():
        got = model(**inputs, return_all_outputs=True)
    assert set(got) == set(outputs) == set(ALL_HEADS)
    for name, want in outputs.items():
        assert got[name].shape == want.shape, name
        torch.testing.assert_close(got[name], want, atol=1e-5, rtol=0, msg=name)


def test_golden_text_only(golden):
    model, inputs, _, text_only = golden
    with torch.no_grad():
        pose = model(inputs["motion"], inputs["text_embedding"])
    torch.testing.assert_close(pose, text_only["pose"], atol=1e-5, rtol=0)


def _tiny(seed=0, **kw) -> StickFigureTransformer:
    torch.manual_seed(seed)
    return StickFigureTransformer.from_config(ModelConfig.variant("tiny", embedding_dim=32, **kw)).eval()


def test_key_padding_mask_equals_shorter_sequence():
    model = _tiny()
    S, B, real = 12, 2, 7
    x, e = torch.randn(S, B, 48), torch.randn(B, 32)
    actions = torch.randint(0, 64, (S, B))
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[0, real:] = True  # clip 0 has 7 real frames, clip 1 is full length
    with torch.no_grad():
        full = model(x, e, action_sequence=actions, key_padding_mask=pad, return_all_outputs=True)
        short = model(x[:real, :1], e[:1], action_sequence=actions[:real, :1], return_all_outputs=True)
        unpadded = model(x[:, 1:], e[1:], action_sequence=actions[:, 1:], return_all_outputs=True)
        x2 = x.clone()
        x2[real:, 0] = 1e3  # garbage in padded frames must not leak into real ones
        garbage = model(x2, e, action_sequence=actions, key_padding_mask=pad, return_all_outputs=True)
    for name in ("pose", "action_logits", "physics"):
        torch.testing.assert_close(full[name][:real, :1], short[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(full[name][:, 1:], unpadded[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(garbage[name][:real], full[name][:real], atol=1e-5, rtol=0)
    for name in ("position", "velocity", "environment"):  # pooled over real frames only
        torch.testing.assert_close(full[name][:1], short[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(garbage[name], full[name], atol=1e-5, rtol=0)


def test_heads_selection_and_pose_only_path():
    model = _tiny()
    x, e = torch.randn(9, 3, 48), torch.randn(3, 32)
    with torch.no_grad():
        pose = model(x, e)
        everything = model(x, e, return_all_outputs=True)
        some = model(x, e, heads=("pose", "hidden"))
    assert pose.shape == (9, 3, 48)
    torch.testing.assert_close(pose, everything["pose"])
    assert set(some) == {"pose", "hidden"} and some["hidden"].shape == (9, 3, 64)
    torch.testing.assert_close(some["pose"], pose)
    with pytest.raises(AssertionError, match="unknown heads"):
        model(x, e, heads=("posture",))


def test_extra_text_bias_hook():
    model = _tiny()
    x, e, bias = torch.randn(6, 2, 48), torch.randn(2, 32), torch.randn(2, 32)
    with torch.no_grad():
        base = model(x, e)
        torch.testing.assert_close(model(x, e, extra_text_bias=torch.zeros(2, 32)), base, atol=0, rtol=0)
        torch.testing.assert_close(model(x, e, extra_text_bias=bias), model(x, e + bias))
        assert not torch.allclose(model(x, e, extra_text_bias=bias), base)
    # gradients reach the bias, so a wrapper's noise-level MLP can train through it
    bias.requires_grad_(True)
    model(x, e, extra_text_bias=bias).sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0


def test_rope_cache_is_not_persistent_and_survives_inference_mode():
    model = _tiny()
    keys = list(model.state_dict())
    assert not any("cached" in k for k in keys)
    assert sum(k.endswith("rope.inv_freq") for k in keys) == 2
    with torch.inference_mode():  # cache first built here...
        model(torch.randn(5, 1, 48), torch.randn(1, 32))
    model.train()  # ...must still work for a training step afterwards, and for longer sequences
    out = model(torch.randn(20, 2, 48), torch.randn(2, 32))
    out.square().mean().backward()
    assert model.transformer_encoder.layers[0].self_attn.q_proj.weight.grad is not None


def test_rope_cache_rebuilt_after_load():
    model, other = _tiny(0), _tiny(1)
    x, e = torch.randn(8, 1, 48), torch.randn(1, 32)
    sd = other.state_dict()
    for k in sd:
        if k.endswith("inv_freq"):
            sd[k] = sd[k] * 0.5  # a checkpoint whose buffer differs must take effect
    with torch.no_grad():
        model(x, e)  # builds the cache from the old inv_freq
        model.load_state_dict(sd)
        other.load_state_dict(sd)
        fresh = StickFigureTransformer.from_config(model.config).eval()
        fresh.load_state_dict(sd)
        torch.testing.assert_close(model(x, e), fresh(x, e), atol=0, rtol=0)


def test_padding_mask_shape_checked():
    model = _tiny()
    with pytest.raises(AssertionError, match="key_padding_mask"):
        model(torch.randn(4, 2, 48), torch.randn(2, 32), key_padding_mask=torch.zeros(4, 2, dtype=torch.bool))
