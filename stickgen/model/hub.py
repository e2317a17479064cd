"""Hugging Face Hub integration: `hf://` checkpoint URIs, pushing checkpoints, model cards.

    hf://owner/repo                  latest `main`
    hf://owner/repo@v1.2             a tag or branch
    hf://owner/repo@3f2c...e1/small  a pinned commit, checkpoint in subfolder `small`

Revisions that contain '/' (e.g. refs/pr/1) are written URL-encoded: `@refs%2Fpr%2F1`.

Resolution goes through `huggingface_hub.snapshot_download`, so its cache, revision pinning and
offline mode apply: with HF_HUB_OFFLINE=1 nothing touches the network and a revision resolves
from the local cache (refs/<branch> -> snapshots/<sha>). HF_HUB_OFFLINE, HF_HUB_CACHE and HF_HOME
are read at call time, not at import, so a process (or test) may set them late.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

import yaml

from stickgen.errors import CheckpointError, MissingDependencyError
from stickgen.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, build_model, read_config

HF_SCHEME = "hf://"
CARD_NAME = "README.md"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_hf_uri(uri: str) -> tuple[str, str | None, str | None]:
    """'hf://owner/repo[@revision][/subdir]' -> (repo_id, revision or None, subdir or None)."""
    if not uri.startswith(HF_SCHEME):
        raise CheckpointError(f"{uri}: not an hf:// URI", reason="bad_uri")
    rest = uri[len(HF_SCHEME) :].strip("/")
    parts = rest.split("/")
    if len(parts) < 2:
        raise CheckpointError(f"{uri}: expected hf://owner/repo[@revision][/subdir]", reason="bad_uri")
    owner, repo, sub = parts[0], parts[1], parts[2:]
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
        revision = unquote(revision) or None
    repo_id = f"{owner}/{repo}"
    if not _REPO_RE.match(repo_id):
        raise CheckpointError(f"{uri}: {repo_id!r} is not a valid owner/repo", reason="bad_uri")
    if any(p in ("", ".", "..") for p in sub):
        raise CheckpointError(f"{uri}: bad subfolder {'/'.join(sub)!r}", reason="bad_uri")
    return repo_id, revision, "/".join(sub) or None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str | None:
    """HF_HUB_CACHE, else $HF_HOME/hub, else None (huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def resolve_checkpoint(uri: str, *, cache_dir: str | os.PathLike | None = None, token: str | None = None) -> Path:
    """Local folder holding the checkpoint named by an hf:// URI (downloaded or from the cache)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            IncompleteSnapshotError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )  # fmt: skip
    except ImportError as e:  # pragma: no cover - huggingface_hub is a hard dependency
        raise MissingDependencyError("hf:// checkpoints need huggingface_hub: pip install huggingface_hub") from e

    repo_id, revision, subdir = parse_hf_uri(uri)
    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir or hub_cache_dir(),
            local_files_only=offline,
            allow_patterns=[f"{subdir}/*"] if subdir else None,
            token=token,
            library_name="stickgen",
        )
    except (LocalEntryNotFoundError, IncompleteSnapshotError) as e:
        where = "HF_HUB_OFFLINE is set, so only the local cache was searched" if offline else "the Hub was unreachable"
        raise CheckpointError(
            f"{uri}: revision {revision or 'main'} of {repo_id} is not in the local Hub cache "
            f"({cache_dir or hub_cache_dir() or 'default cache'}) and {where}. Download it where the Hub is "
            f"reachable (`huggingface-cli download {repo_id}"
            f"{' --revision ' + revision if revision else ''}`) and copy the cache / set HF_HUB_CACHE.",
            reason="not_cached",
        ) from e
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
        raise CheckpointError(f"{uri}: {type(e).__name__}: {e}", reason="not_found") from e
    except HfHubHTTPError as e:
        raise CheckpointError(f"{uri}: Hub error: {e}", reason="hub_error") from e
    path = Path(folder) / subdir if subdir else Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"{uri}: subfolder {subdir!r} does not exist at that revision", reason="missing")
    return path


# -----------------------------------------------------------------------------
# pushing


def push_checkpoint(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    api=None,
    metrics: Mapping[str, float] | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> list[str]:
    """Upload config.json, model.safetensors and a generated README.md model card in one commit.

    train_state.pt (optimizer state) is never uploaded. `metrics` are measured numbers for the card
    (e.g. from the eval job); without them the card says "not measured". `api` defaults to
    `huggingface_hub.HfApi(token=token)`; anything with the same create_repo / create_branch /
    create_commit methods works (tests pass a local fake). Returns the uploaded paths in the repo.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    directory = Path(directory)
    config = read_config(directory)
    if config["extra"].get("inferred"):
        raise CheckpointError(
            f"{directory}: has no {CONFIG_NAME}; save it with save_checkpoint first", reason="missing"
        )
    weights = directory / WEIGHTS_NAME
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing", reason="missing")
    card = render_model_card(config, metrics, num_parameters=_count_parameters(config, weights), repo_id=repo_id)

    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    ops = [
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(directory / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(weights)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode("utf-8")),
    ]
    api.create_commit(
        repo_id,
        operations=ops,
        commit_message=commit_message or f"stickgen checkpoint ({config['model_type']}, {_variant(config)})",
        revision=revision,
        repo_type="model",
    )
    return [op.path_in_repo for op in ops]


def _count_parameters(config: dict, weights: Path) -> int:
    """Trainable-parameter count: build the model on the meta device (no memory) when its type is
    registered; otherwise count the tensors in the file minus known buffers."""
    import torch

    try:
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(config).parameters())
    except Exception:  # noqa: BLE001 - an unregistered or meta-unfriendly wrapper: count the file instead
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            return sum(
                int(torch.Size(f.get_slice(k).get_shape()).numel()) for k in f.keys() if not k.endswith("inv_freq")
            )


def _variant(config: dict) -> str:
    from stickgen.model.transformer import ModelConfig, variant_name

    return variant_name(ModelConfig.from_dict(config["model"])) or "custom"


# -----------------------------------------------------------------------------
# model card


def render_model_card(
    config: dict, metrics: Mapping[str, float] | None = None, *, num_parameters: int | None = None,
    repo_id: str | None = None,
) -> str:  # fmt: skip
    """README.md for a checkpoint: YAML front matter like the published Stick-Gen cards, then facts
    from config.json. Reads from config["extra"], when present: "license" (default apache-2.0),
    "training_data" (list of dataset names), "recipe" (dict of training settings), "base_model",
    "description". Only measured numbers appear; missing ones are "not measured", never "TBD".
    """
    mc, extra = config["model"], config["extra"]
    variant = _variant(config)
    metrics = {k: v for k, v in (metrics or {}).items() if v is not None}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"metric {k!r} must be a measured number, got {v!r}")
    data = extra.get("training_data") or []
    data = [data] if isinstance(data, str) else list(data)
    recipe = extra.get("recipe") or {}
    title = f"Stick-Gen {variant} ({config['model_type']})"

    front = {
        "language": "en",
        "license": extra.get("license", "apache-2.0"),
        "library_name": "pytorch",
        "pipeline_tag": "text-to-video",
        "tags": ["stickgen", "text-to-animation", "text-to-motion", "stick-figures", "motion-generation",
                 "transformer", "safetensors"],
        "model_variant": variant,
        "num_parameters": num_parameters,
    }  # fmt: skip
    if data:
        front["datasets"] = data
    if extra.get("base_model"):
        front["base_model"] = extra["base_model"]
    if metrics:
        front["metrics"] = sorted(metrics)
        front["model-index"] = [{
            "name": repo_id or title,
            "results": [{
                "task": {"type": "text-to-animation", "name": "Text-to-Animation Generation"},
                "dataset": {"name": ", ".join(data) or "held-out split", "type": "motion-capture"},
                "metrics": [{"type": k, "value": _num(v), "name": k} for k, v in sorted(metrics.items())],
            }],
        }]  # fmt: skip
    if num_parameters is None:
        del front["num_parameters"]

    rep, te = config["representation"], config["text_encoder"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {title}", ""]
    if extra.get("description"):
        lines += [str(extra["description"]), ""]
    lines += [
        "Generated by stickgen from the checkpoint's `config.json`.", "",
        "## Model", "",
        "| field | value |", "|---|---|",
        f"| model type | `{config['model_type']}` |",
        f"| variant | {variant} (d_model {mc['d_model']}, {mc['num_layers']} layers, {mc['nhead']} heads) |",
        f"| parameters | {f'{num_parameters:,}' if num_parameters is not None else 'not counted'} |",
        f"| text encoder | `{te['name']}` ({te['dim']}-d) |",
        (
            f"| representation | `{rep['name']}`, {rep['input_dim']}-D per frame, {rep['fps']} fps, "
            f"up to {rep['max_frames']} frames |"
        ),
        f"| actions | {len(config['actions'])} named ({mc['num_actions']} slots) |",
        f"| training stage | {config['training_stage'] or 'not recorded'} |",
        f"| training data | {', '.join(data) or 'not recorded'} |",
        f"| data hash | `{config['data_hash']}` |" if config["data_hash"] else "| data hash | not recorded |",
        "",
        "## Training recipe", "",
    ]  # fmt: skip
    if recipe:
        lines += ["| setting | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in recipe.items()]
    else:
        lines.append("not recorded")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_num(v)} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("not measured")
    uri = f"hf://{repo_id}" if repo_id else "hf://OWNER/REPO"
    lines += [
        "", "## Usage", "", "```python",
        "from stickgen.model.checkpoint import load_model",
        f'model, config = load_model("{uri}")',
        "```", "",
    ]  # fmt: skip
    return "\n".join(lines)


def _num(v):
    return int(v) if isinstance(v, int) else float(f"{v:.6g}")


def _cell(v) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)
