"""hf:// URIs resolve through huggingface_hub's cache (offline, revision-pinned), and pushing writes
exactly config.json, model.safetensors and a model card. No network: the cache is built here and the
remote Hub is replaced by a local fake."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml

from stickgen.errors import CheckpointError
from stickgen.model.checkpoint import (
    CONFIG_NAME,
    TRAIN_STATE_NAME,
    WEIGHTS_NAME,
    load_checkpoint,
    make_config,
    save_checkpoint,
)
from stickgen.model.hub import parse_hf_uri, push_checkpoint, render_model_card, resolve_checkpoint
from stickgen.model.transformer import ModelConfig, StickFigureTransformer

REPO = "acme/stickgen-tiny"
OLD_SHA = "1" * 40
NEW_SHA = "2" * 40


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def tiny(seed: int) -> StickFigureTransformer:
    torch.manual_seed(seed)
    return StickFigureTransformer.from_config(ModelConfig.variant("tiny", embedding_dim=32))


def tiny_config(model, **extra) -> dict:
    return make_config(model.config, text_encoder="hash-384", actions=["idle", "walk"], training_stage="sft",
                       data_hash="sha256:feed", extra=extra)  # fmt: skip


def add_snapshot(cache: Path, repo_id: str, sha: str, src: Path, subdir: str = "") -> None:
    """Lay out files the way huggingface_hub's cache does: content in blobs/, snapshots/<sha>/ holds
    relative symlinks to them."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo_dir / "blobs" / blob)
        link = repo_dir / "snapshots" / sha / subdir / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo_dir / "blobs" / blob, link.parent))


def set_ref(cache: Path, repo_id: str, ref: str, sha: str) -> None:
    path = cache / ("models--" + repo_id.replace("/", "--")) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sha)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hub cache with two commits of REPO: OLD (tag v1) and NEW (main); NEW also has `small/`."""
    cache = tmp_path / "hf-cache"
    old, new = tiny(1), tiny(2)
    save_checkpoint(tmp_path / "old", old, tiny_config(old))
    save_checkpoint(tmp_path / "new", new, tiny_config(new))
    add_snapshot(cache, REPO, OLD_SHA, tmp_path / "old")
    add_snapshot(cache, REPO, NEW_SHA, tmp_path / "new")
    add_snapshot(cache, REPO, NEW_SHA, tmp_path / "old", subdir="small")
    set_ref(cache, REPO, "main", NEW_SHA)
    set_ref(cache, REPO, "v1", OLD_SHA)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache, old.state_dict(), new.state_dict()


def test_parse_hf_uri():
    assert parse_hf_uri("hf://acme/m") == ("acme/m", None, None)
    assert parse_hf_uri("hf://acme/m@v1") == ("acme/m", "v1", None)
    assert parse_hf_uri("hf://acme/m@abc123/small/best") == ("acme/m", "abc123", "small/best")
    assert parse_hf_uri("hf://acme/m/small") == ("acme/m", None, "small")
    assert parse_hf_uri("hf://acme/m@refs%2Fpr%2F1") == ("acme/m", "refs/pr/1", None)
    for bad in ("hf://acme", "s3://acme/m", "hf://acme/m/../x"):
        with pytest.raises(CheckpointError):
            parse_hf_uri(bad)


def test_offline_resolution_and_revision_pinning(hub_cache):
    cache, old_sd, new_sd = hub_cache
    snaps = cache / "models--acme--stickgen-tiny" / "snapshots"
    assert resolve_checkpoint(f"hf://{REPO}") == snaps / NEW_SHA
    assert resolve_checkpoint(f"hf://{REPO}@main") == snaps / NEW_SHA
    assert resolve_checkpoint(f"hf://{REPO}@v1") == snaps / OLD_SHA
    assert resolve_checkpoint(f"hf://{REPO}@{OLD_SHA}") == snaps / OLD_SHA
    assert resolve_checkpoint(f"hf://{REPO}/small") == snaps / NEW_SHA / "small"

    def same(a, b):
        return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    assert same(load_checkpoint(f"hf://{REPO}")[0], new_sd)
    assert same(load_checkpoint(f"hf://{REPO}@v1")[0], old_sd)
    assert same(load_checkpoint(f"hf://{REPO}@{OLD_SHA}")[0], old_sd)
    assert same(load_checkpoint(f"hf://{REPO}/small")[0], old_sd)


def test_offline_cache_miss_says_what_to_do(hub_cache):
    with pytest.raises(CheckpointError, match="not in the local Hub cache.*HF_HUB_OFFLINE") as info:
        resolve_checkpoint(f"hf://{REPO}@v2")
    assert info.value.reason == "not_cached" and "huggingface-cli download" in str(info.value)
    with pytest.raises(CheckpointError, match="not in the local Hub cache"):
        load_checkpoint("hf://acme/never-downloaded")
    with pytest.raises(CheckpointError, match="subfolder 'large'"):
        resolve_checkpoint(f"hf://{REPO}/large")


class FakeHubApi:
    """Stands in for the remote Hub (huggingface_hub.HfApi): commits land in a local folder."""

    def __init__(self, root: Path):
        self.root = root
        self.calls = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **_):
        self.calls.append(("create_repo", repo_id, private, repo_type))
        (self.root / repo_id / "main").mkdir(parents=True, exist_ok=exist_ok)

    def create_branch(self, repo_id, *, branch, exist_ok=False, repo_type=None, **_):
        self.calls.append(("create_branch", repo_id, branch))
        (self.root / repo_id / branch).mkdir(parents=True, exist_ok=exist_ok)

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, repo_type=None, **_):
        self.calls.append(("create_commit", repo_id, revision, commit_message))
        dest = self.root / repo_id / (revision or "main")
        for op in operations:
            src = op.path_or_fileobj
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            (dest / op.path_in_repo).parent.mkdir(parents=True, exist_ok=True)
            (dest / op.path_in_repo).write_bytes(data)


def read_card(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_push_uploads_exact_files_and_card(tmp_path):
    model = tiny(3)
    cfg = tiny_config(model, training_data=["cmu", "bandai-namco-1"], recipe={"lr": 1e-4, "epochs": 20},
                      license="apache-2.0")  # fmt: skip
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model, cfg, train_state={"step": 10})
    api = FakeHubApi(tmp_path / "remote")
    metrics = {"fid": 12.3456789, "diversity": 4.5, "eval_clips": 512}
    files = push_checkpoint(ckpt, "acme/stickgen-tiny", revision="sft-v1", private=True, api=api, metrics=metrics)

    assert files == [CONFIG_NAME, WEIGHTS_NAME, "README.md"]
    remote = tmp_path / "remote" / "acme" / "stickgen-tiny" / "sft-v1"
    assert sorted(p.name for p in remote.iterdir()) == sorted(files)  # no train_state.pt
    assert (ckpt / TRAIN_STATE_NAME).exists()
    assert (remote / CONFIG_NAME).read_bytes() == (ckpt / CONFIG_NAME).read_bytes()
    assert (remote / WEIGHTS_NAME).read_bytes() == (ckpt / WEIGHTS_NAME).read_bytes()
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0] == ("create_repo", "acme/stickgen-tiny", True, "model")

    front, body = read_card(remote / "README.md")
    assert front["library_name"] == "pytorch" and front["pipeline_tag"] == "text-to-video"
    assert front["license"] == "apache-2.0" and "stickgen" in front["tags"]
    assert front["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert front["model_variant"] == "tiny"
    assert front["datasets"] == ["cmu", "bandai-namco-1"]
    results = front["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in results} == {"fid": 12.3457, "diversity": 4.5, "eval_clips": 512}
    assert "TBD" not in (remote / "README.md").read_text()
    assert "| lr | 0.0001 |" in body and "| epochs | 20 |" in body
    assert "`hash-384` (32-d)" in body and "sha256:feed" in body and "| training stage | sft |" in body
    assert f"{front['num_parameters']:,}" in body
    # what was pushed loads back
    state, config = load_checkpoint(remote)
    assert config == cfg and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_card_without_metrics_says_not_measured():
    cfg = tiny_config(tiny(0))
    card = render_model_card(cfg, None, num_parameters=123)
    front, body = read_card_text(card)
    assert "model-index" not in front and "metrics" not in front
    assert "## Evaluation\n\nnot measured" in body and "TBD" not in card
    assert "## Training recipe\n\nnot recorded" in body
    with pytest.raises(TypeError, match="measured number"):
        render_model_card(cfg, {"fid": "TBD"})


def read_card_text(card: str) -> tuple[dict, str]:
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_push_refuses_non_checkpoint(tmp_path):
    model = tiny(0)
    (tmp_path / "pub").mkdir()
    torch.save(model.state_dict(), tmp_path / "pub" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="save_checkpoint first"):
        push_checkpoint(tmp_path / "pub", "acme/x", api=FakeHubApi(tmp_path / "remote"))
