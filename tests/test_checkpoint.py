"""One checkpoint format (config.json + model.safetensors + train_state.pt), the published layouts,
refusing unsafe pickles, and loading a published trunk into a wrapper with an exact report."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from stickgen.errors import CheckpointError
from stickgen.model.checkpoint import (
    CONFIG_NAME,
    TRAIN_STATE_NAME,
    WEIGHTS_NAME,
    build_model,
    infer_model_config,
    load_checkpoint,
    load_model,
    load_train_state,
    load_trunk_into,
    make_config,
    read_config,
    register_model_type,
    save_checkpoint,
)
from stickgen.model.transformer import VARIANTS, ModelConfig, StickFigureTransformer

ACTIONS = ["idle", "walk", "run"]


def tiny_model(seed: int = 0, **kw) -> StickFigureTransformer:
    torch.manual_seed(seed)
    return StickFigureTransformer.from_config(ModelConfig.variant("tiny", embedding_dim=32, **kw)).eval()


def tiny_config(model: StickFigureTransformer, **kw) -> dict:
    kw.setdefault("text_encoder", "hash-384")
    kw.setdefault("text_encoder_dim", model.config.embedding_dim)
    return make_config(model.config, actions=ACTIONS, training_stage="sft", data_hash="sha256:abc", **kw)


def assert_same_state(a: dict, b: dict):
    assert set(a) == set(b)
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_round_trip(tmp_path):
    model = tiny_model()
    cfg = tiny_config(model, extra={"note": "hello"})
    save_checkpoint(tmp_path / "ckpt", model, cfg)
    assert sorted(os.listdir(tmp_path / "ckpt")) == [CONFIG_NAME, WEIGHTS_NAME]
    state, config = load_checkpoint(tmp_path / "ckpt")
    assert config == cfg
    assert_same_state(state, model.state_dict())
    assert read_config(str(tmp_path / "ckpt")) == cfg
    # a path to the weights file means its folder
    assert load_checkpoint(tmp_path / "ckpt" / WEIGHTS_NAME)[1] == cfg
    rebuilt, _ = load_model(tmp_path / "ckpt")
    x, e = torch.randn(5, 2, 48), torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, e), model(x, e), atol=0, rtol=0)


def test_config_json_fields(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, model, tiny_config(model))
    cfg = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert cfg["model_type"] == "stick_figure_transformer"
    assert cfg["model"] == model.config.to_dict()
    assert cfg["text_encoder"] == {"name": "hash-384", "dim": 32}
    assert cfg["representation"] == {
        "name": "stick_figure_12_segment_v3",
        "input_dim": 48,
        "fps": 25,
        "max_frames": 250,
    }
    assert cfg["actions"] == ACTIONS and cfg["training_stage"] == "sft" and cfg["data_hash"] == "sha256:abc"
    assert cfg["extra"] == {} and cfg["wrapper"] == {} and cfg["trunk_prefix"] == ""


def test_config_validation():
    model = tiny_model()
    cfg = tiny_config(model)
    with pytest.raises(CheckpointError, match="text_encoder.dim 384 != model.embedding_dim 32"):
        make_config(model.config, text_encoder="all-MiniLM-L6-v2", text_encoder_dim=384)
    with pytest.raises(CheckpointError, match="unknown keys"):
        save_checkpoint("/nonexistent-never-written", model, {**cfg, "learning_rate": 1e-4})
    with pytest.raises(CheckpointError, match="duplicate"):
        make_config(model.config, text_encoder="x", actions=["a", "a"])


def test_train_state_round_trip(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 48), torch.randn(1, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    train_state = {
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 7, "epoch": 1,
        "rng": {"torch": torch.get_rng_state()}, "best_val_loss": 0.25,
    }  # fmt: skip
    save_checkpoint(tmp_path, model, tiny_config(model), train_state=train_state)
    back = load_train_state(tmp_path)
    assert back["step"] == 7 and back["best_val_loss"] == 0.25
    assert torch.equal(back["rng"]["torch"], train_state["rng"]["torch"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(opt2.state_dict()["state"][0][k], v)
    save_checkpoint(tmp_path / "no_state", model, tiny_config(model))
    assert load_train_state(tmp_path / "no_state") is None
    save_checkpoint(tmp_path, model, tiny_config(model))  # re-saving weights only drops the stale state
    assert load_train_state(tmp_path) is None


def test_train_state_refuses_objects_at_save_time(tmp_path):
    import numpy as np

    model = tiny_model()
    with pytest.raises(CheckpointError, match=r"train_state\['rng'\]\['numpy'\].*numpy"):
        save_checkpoint(tmp_path, model, tiny_config(model), train_state={"rng": {"numpy": np.zeros(3)}})
    assert not (tmp_path / TRAIN_STATE_NAME).exists()


def test_published_raw_state_dict(tmp_path):
    model = tiny_model()
    (tmp_path / "pub").mkdir()
    torch.save(model.state_dict(), tmp_path / "pub" / "pytorch_model.bin")
    state, cfg = load_checkpoint(tmp_path / "pub")
    assert_same_state(state, model.state_dict())
    assert cfg["extra"]["inferred"] is True
    assert ModelConfig.from_dict(cfg["model"]) == model.config
    rebuilt, _ = load_model(tmp_path / "pub" / "pytorch_model.bin")
    assert_same_state(rebuilt.state_dict(), model.state_dict())


def test_published_training_dict(tmp_path):
    model = tiny_model(input_dim=20, output_dim=20)
    opt = torch.optim.AdamW(model.parameters())
    ddp_keys = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from a DDP model
    torch.save(
        {"epoch": 4, "global_step": 1000, "model_state_dict": ddp_keys, "optimizer_state_dict": opt.state_dict(),
         "scheduler_state_dict": {"base_lrs": [1e-4], "last_epoch": 4}, "best_val_loss": 0.5,
         "training_stage": "sft", "lora_enabled": False},
        tmp_path / "model_checkpoint_best.pth",
    )  # fmt: skip
    state, cfg = load_checkpoint(tmp_path / "model_checkpoint_best.pth")
    assert_same_state(state, model.state_dict())
    assert cfg["training_stage"] == "sft"
    assert cfg["representation"]["name"] == "stick_figure_5_segment"  # legacy 20-D
    assert cfg["extra"]["source"]["epoch"] == 4
    assert load_checkpoint(tmp_path)[1]["model"] == cfg["model"]  # the folder finds the .pth too


def test_published_lora_checkpoint_is_merged(tmp_path):
    model = tiny_model()
    sd = dict(model.state_dict())
    name = "transformer_encoder.layers.0.self_attn.q_proj"
    base_w, base_b = sd.pop(f"{name}.weight"), sd.pop(f"{name}.bias")
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    sd.update({f"{name}.base_layer.weight": base_w, f"{name}.base_layer.bias": base_b,
               f"{name}.lora_A.weight": a, f"{name}.lora_B.weight": b})  # fmt: skip
    torch.save({"model_state_dict": sd, "lora_config": {"rank": 4, "alpha": 8}}, tmp_path / "lora.pth")
    state, _ = load_checkpoint(tmp_path / "lora.pth")
    assert set(state) == set(model.state_dict())
    torch.testing.assert_close(state[f"{name}.weight"], base_w + 2.0 * b @ a)
    torch.save({"model_state_dict": sd}, tmp_path / "lora_noconf.pth")
    with pytest.raises(CheckpointError, match="lora_config"):
        load_checkpoint(tmp_path / "lora_noconf.pth")


@pytest.mark.parametrize("variant", ["small", "medium", "large"])
@pytest.mark.parametrize("input_dim", [20, 48])
def test_variant_inference(variant, input_dim):
    cfg = ModelConfig.variant(variant, input_dim=input_dim, output_dim=input_dim)
    with torch.device("meta"):
        state = StickFigureTransformer.from_config(cfg).state_dict()
    assert infer_model_config(state) == cfg
    # older dumps without rope.inv_freq: nhead comes from the published size table
    no_rope = {k: v for k, v in state.items() if not k.endswith("inv_freq")}
    assert infer_model_config(no_rope).nhead == VARIANTS[variant].nhead


class Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["raw", "model_state_dict"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, layout):
    marker = tmp_path / "PWNED"
    payload = {"text_projection.0.weight": torch.zeros(2, 2), "evil": Evil(marker)}
    if layout == "model_state_dict":
        payload = {"model_state_dict": payload}
    torch.save(payload, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert info.value.reason == "unsafe_pickle"
    assert "refused" in str(info.value) and "system" in str(info.value)  # says what it refused
    assert not marker.exists()


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no-such-dir"):
        load_checkpoint(tmp_path / "no-such-dir")
    model = tiny_model()
    save_checkpoint(tmp_path / "c", model, tiny_config(model))
    (tmp_path / "c" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_checkpoint(tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_checkpoint(tmp_path / "empty")


def test_corrupt_and_mismatched(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "c", model, tiny_config(model))
    (tmp_path / "c" / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "c")
    other = tiny_model(num_actions=32)
    save_checkpoint(tmp_path / "m", other, tiny_config(other))
    cfg = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    cfg["model"]["num_actions"] = 64  # config.json lies about the weights
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_actions"):
        load_checkpoint(tmp_path / "m")


class StandInWrapper(nn.Module):
    """What a denoiser wrapper looks like to the loader: the trunk under `trunk`, plus new modules."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.trunk = StickFigureTransformer.from_config(cfg)
        self.noise_mlp = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, cfg.embedding_dim))

    def forward(self, x, e, sigma):
        return self.trunk(x, e, extra_text_bias=self.noise_mlp(sigma[:, None]))


def test_load_trunk_into_wrapper_reports_exactly():
    published = tiny_model(seed=1)
    wrapper = StandInWrapper(published.config)
    report = load_trunk_into(wrapper, published.state_dict())
    assert report.prefix == "trunk."
    assert report.loaded == [f"trunk.{k}" for k in published.state_dict()]
    assert report.new == ["noise_mlp.0.weight", "noise_mlp.0.bias", "noise_mlp.2.weight", "noise_mlp.2.bias"]
    assert report.missing == [] and report.unexpected == [] and report.ok
    assert_same_state({k[6:]: v for k, v in wrapper.state_dict().items() if k.startswith("trunk.")},
                      published.state_dict())  # fmt: skip
    assert "new (4)" in str(report)


def test_load_trunk_into_missing_unexpected_and_shapes():
    published = tiny_model(seed=1)
    wrapper = StandInWrapper(published.config)
    sd = dict(published.state_dict())
    del sd["environment_decoder.3.bias"]
    sd["image_encoder.conv.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="not clean"):
        load_trunk_into(wrapper, sd)
    report = load_trunk_into(wrapper, sd, strict=False)
    assert report.missing == ["trunk.environment_decoder.3.bias"]
    assert report.unexpected == ["image_encoder.conv.weight"]
    assert not report.ok
    bad = dict(published.state_dict())
    bad["pose_decoder.3.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"shape mismatch: trunk.pose_decoder.3.bias"):
        load_trunk_into(wrapper, bad)


def test_wrapper_checkpoint_round_trip_via_registry(tmp_path):
    published = tiny_model(seed=1)
    torch.save(published.state_dict(), tmp_path / "pytorch_model.bin")
    wrapper = StandInWrapper(published.config)
    report = load_trunk_into(wrapper, tmp_path / "pytorch_model.bin")  # a path works too
    assert report.ok and len(report.new) == 4
    register_model_type("stand_in_denoiser", lambda cfg: StandInWrapper(ModelConfig.from_dict(cfg["model"])))
    cfg = tiny_config(published, model_type="stand_in_denoiser", trunk_prefix="trunk.", wrapper={"sigma_max": 80.0})
    save_checkpoint(tmp_path / "w", wrapper, cfg)
    loaded, config = load_model(tmp_path / "w")
    assert isinstance(loaded, StandInWrapper) and config["wrapper"] == {"sigma_max": 80.0}
    assert_same_state(loaded.state_dict(), wrapper.state_dict())
    # a saved wrapper state dict (already prefixed) also goes through load_trunk_into: nothing is new
    fresh = StandInWrapper(published.config)
    report = load_trunk_into(fresh, load_checkpoint(tmp_path / "w")[0])
    assert report.ok and report.new == []
    with pytest.raises(CheckpointError, match="not registered"):
        build_model({**cfg, "model_type": "nope"})
