"""The one checkpoint format for train, eval and serve, plus loaders for the published layouts.

A stickgen checkpoint is a folder:

    config.json         everything needed to rebuild and use the model (see `make_config`)
    model.safetensors   the module's state dict (persistent buffers included, e.g. rope.inv_freq)
    train_state.pt      optional: optimizer / scheduler / step / RNG state, for resuming only

Weights are safetensors so loading them never runs code. `train_state.pt` is a `torch.save` of plain
containers of tensors and primitives, checked at save time and read back with
`torch.load(weights_only=True)`. It is never uploaded to the Hub (the published push script shipped
the optimizer inside pytorch_model.bin).

The published Stick-Gen weights come as a raw state dict (`pytorch_model.bin`, `model_checkpoint.pth`)
or as a training dict holding `model_state_dict` (`model_checkpoint_best.pth`, `checkpoint_*.pth`).
They carry no config, so `infer_model_config` reads the architecture off the tensor shapes. Every
pickle is opened with `weights_only=True`: a file that needs arbitrary globals (e.g. a
`__reduce__` that calls os.system) is refused with a CheckpointError and nothing in it runs.

Anywhere a path is accepted, `hf://owner/repo[@revision][/subdir]` works too (stickgen.model.hub).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stickgen.errors import CheckpointError
from stickgen.model.transformer import VARIANTS, ModelConfig, StickFigureTransformer

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAIN_STATE_NAME = "train_state.pt"
FORMAT = "stickgen-checkpoint"
FORMAT_VERSION = 1
TRUNK_MODEL_TYPE = "stick_figure_transformer"

# The representation a model consumes/produces; saved so serve never has to guess.
REPRESENTATION_V3 = {"name": "stick_figure_12_segment_v3", "input_dim": 48, "fps": 25, "max_frames": 250}
REPRESENTATION_V1 = {"name": "stick_figure_5_segment", "input_dim": 20, "fps": 25, "max_frames": 250}  # legacy 20-D
PUBLISHED_TEXT_ENCODER = "BAAI/bge-large-en-v1.5"  # 1024-d, CLS pooling + L2 norm (notes §4.1)

# Published checkpoint file names, in the order we look for them inside a folder.
PUBLISHED_WEIGHT_FILES = ("pytorch_model.bin", "model_checkpoint_best.pth", "model_checkpoint.pth")

_CONFIG_KEYS = {
    "format", "format_version", "model_type", "trunk_prefix", "model", "wrapper", "text_encoder",
    "representation", "actions", "training_stage", "data_hash", "extra",
}  # fmt: skip


# -----------------------------------------------------------------------------
# config.json


def make_config(
    model: ModelConfig | dict,
    *,
    text_encoder: str,
    text_encoder_dim: int | None = None,
    actions: Iterable[str] = (),
    model_type: str = TRUNK_MODEL_TYPE,
    trunk_prefix: str = "",
    wrapper: dict | None = None,
    representation: dict | None = None,
    training_stage: str | None = None,
    data_hash: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Build a validated config.json dict.

    model: the trunk's ModelConfig. model_type: what `build_model` constructs; the bare trunk is
    "stick_figure_transformer", a wrapper registers its own (see `register_model_type`) and says
    where the trunk lives in its state dict with `trunk_prefix` (e.g. "trunk."); `wrapper` holds the
    wrapper's own constructor arguments. text_encoder/text_encoder_dim: the sentence encoder the
    model was trained with (dim must equal model.embedding_dim). actions: the action vocabulary,
    index = action id. representation defaults to v3 (48-D) or legacy v1 (20-D) by input_dim.
    """
    mc = model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)
    if representation is None:
        representation = dict(REPRESENTATION_V1 if mc.input_dim == 20 else REPRESENTATION_V3)
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        "trunk_prefix": trunk_prefix,
        "model": mc.to_dict(),
        "wrapper": dict(wrapper or {}),
        "text_encoder": {"name": text_encoder, "dim": int(text_encoder_dim or mc.embedding_dim)},
        "representation": dict(representation),
        "actions": list(actions),
        "training_stage": training_stage,
        "data_hash": data_hash,
        "extra": dict(extra or {}),
    }
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict, *, source: str = "config") -> ModelConfig:
    """Check a config.json dict; raise CheckpointError naming the bad field. Returns the ModelConfig."""

    def bad(msg):
        raise CheckpointError(f"{source}: {msg}", reason="bad_config")

    if not isinstance(cfg, dict):
        bad(f"expected a JSON object, got {type(cfg).__name__}")
    missing, unknown = _CONFIG_KEYS - set(cfg), set(cfg) - _CONFIG_KEYS
    if missing:
        bad(f"missing keys {sorted(missing)}")
    if unknown:
        bad(f"unknown keys {sorted(unknown)} (free-form data goes under 'extra')")
    if cfg["format"] != FORMAT:
        bad(f"format is {cfg['format']!r}, expected {FORMAT!r}")
    if cfg["format_version"] != FORMAT_VERSION:
        bad(f"format_version {cfg['format_version']!r} is not supported (this code reads {FORMAT_VERSION})")
    try:
        mc = ModelConfig.from_dict(cfg["model"])
    except (TypeError, ValueError, AssertionError) as e:
        bad(f"model: {e}")
    te = cfg["text_encoder"]
    if not (isinstance(te, dict) and set(te) == {"name", "dim"} and isinstance(te["name"], str)):
        bad("text_encoder must be {'name': str, 'dim': int}")
    if te["dim"] != mc.embedding_dim:
        bad(f"text_encoder.dim {te['dim']} != model.embedding_dim {mc.embedding_dim}")
    rep = cfg["representation"]
    if not (isinstance(rep, dict) and {"name", "input_dim", "fps", "max_frames"} <= set(rep)):
        bad("representation must have name, input_dim, fps, max_frames")
    if rep["input_dim"] != mc.input_dim:
        bad(f"representation.input_dim {rep['input_dim']} != model.input_dim {mc.input_dim}")
    acts = cfg["actions"]
    if not (isinstance(acts, list) and all(isinstance(a, str) for a in acts)):
        bad("actions must be a list of names")
    if len(set(acts)) != len(acts):
        bad("actions has duplicate names")
    if len(acts) > mc.num_actions:
        bad(f"{len(acts)} action names but model.num_actions is {mc.num_actions}")
    if not isinstance(cfg["trunk_prefix"], str) or (cfg["trunk_prefix"] and not cfg["trunk_prefix"].endswith(".")):
        bad(f"trunk_prefix must be '' or end with '.', got {cfg['trunk_prefix']!r}")
    for key in ("wrapper", "extra"):
        if not isinstance(cfg[key], dict):
            bad(f"{key} must be an object")
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as e:
        bad(f"not JSON-serialisable: {e}")
    return mc


# -----------------------------------------------------------------------------
# save


def save_checkpoint(
    directory: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor], config: dict,
    train_state: dict | None = None,
) -> Path:  # fmt: skip
    """Write config.json + model.safetensors (+ train_state.pt) into `directory`; returns it.

    Each file is written to a temp name and renamed, so a crash never leaves a half-written file
    under the real name; config.json goes last. Call it on one rank only (rank 0 under Ray Train). `model` may be a module (DDP/compile wrappers are unwrapped) or a state dict.
    """
    directory = Path(directory)
    validate_config(config, source=str(directory / CONFIG_NAME))
    directory.mkdir(parents=True, exist_ok=True)
    state = _unwrap_state_dict(model.state_dict() if isinstance(model, nn.Module) else dict(model))
    # clone: safetensors refuses tensors that share storage (tied weights) and needs contiguous CPU data
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))
    if train_state is not None:
        _check_weights_only_safe(train_state, "train_state")
        _atomic_write(directory / TRAIN_STATE_NAME, lambda p: torch.save(train_state, p))
    elif (directory / TRAIN_STATE_NAME).exists():
        # an optimizer state left from an older save must never be resumed with these weights
        (directory / TRAIN_STATE_NAME).unlink()
    return directory


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_PRIMITIVES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _check_weights_only_safe(obj, where: str) -> None:
    """Refuse at save time anything `torch.load(weights_only=True)` would refuse at load time."""
    if isinstance(obj, (torch.Tensor, *_PRIMITIVES)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise CheckpointError(f"{where}: dict key {k!r} is a {type(k).__name__}", reason="unsafe_state")
            _check_weights_only_safe(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_weights_only_safe(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; train_state may hold only tensors, "
        "numbers, strings, None and dict/list/tuple of those (convert numpy arrays with torch.from_numpy)",
        reason="unsafe_state",
    )


# -----------------------------------------------------------------------------
# load


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load (state_dict, config) from a stickgen checkpoint folder, a published weight file or
    folder, or an `hf://owner/repo[@revision][/subdir]` URI.

    Published checkpoints get a config inferred from tensor shapes, with `extra.source` recording
    where it came from and `extra.inferred = True`.
    """
    p = _resolve(path)
    if p.is_file() and p.name == WEIGHTS_NAME and (p.parent / CONFIG_NAME).exists():
        p = p.parent  # a path to our weights file means its checkpoint folder
    if p.is_dir() and (p / CONFIG_NAME).exists():
        config = read_config(p)
        weights = p / WEIGHTS_NAME
        if not weights.exists():
            raise CheckpointError(
                f"{weights}: missing ({CONFIG_NAME} is there but the weights are not)", reason="missing"
            )
        state = _load_safetensors(weights, map_location)
        if config["model_type"] == TRUNK_MODEL_TYPE:
            _check_shapes_match_config(state, config, weights)
        return state, config
    weights = _find_published_weights(p)
    state, meta = _load_published(weights, map_location)
    return state, _inferred_config(state, weights, meta)


def read_config(path: str | os.PathLike) -> dict:
    """config.json of a stickgen checkpoint (validated), or the inferred config of a published one."""
    p = _resolve(path)
    cfg_path = p / CONFIG_NAME if p.is_dir() else None
    if cfg_path is not None and cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{cfg_path}: cannot read config: {e}", reason="bad_config") from e
        validate_config(cfg, source=str(cfg_path))
        return cfg
    return load_checkpoint(p)[1]


def load_train_state(path: str | os.PathLike, *, map_location="cpu") -> dict | None:
    """The train_state.pt next to a checkpoint (None if the checkpoint has none)."""
    p = _resolve(path)
    f = p / TRAIN_STATE_NAME if p.is_dir() else p
    if not f.exists():
        return None
    return _torch_load(f, map_location)


def _resolve(path) -> Path:
    if isinstance(path, str) and path.startswith("hf://"):
        from stickgen.model.hub import resolve_checkpoint  # hub imports us; import lazily

        return resolve_checkpoint(path)
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or folder", reason="missing")
    return p


def _load_safetensors(path: Path, map_location) -> dict[str, torch.Tensor]:
    device = str(map_location) if map_location is not None else "cpu"
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}", reason="corrupt") from e


def _torch_load(path: Path, map_location):
    """torch.load with weights_only=True, turning every failure into a CheckpointError that says why."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global outside torch's allow-list before calling it, so nothing ran.
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "Unsupported" in ln or "global" in ln.lower()), first[0] if first else "")
        raise CheckpointError(
            f"{path}: refused to load: the pickle asks to import/call objects that are not plain tensors or "
            f"containers ({detail.strip()}). Loading it could run arbitrary code, so it was not unpickled. "
            "If you trust its origin, re-save it as a plain state dict of tensors.",
            reason="unsafe_pickle",
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}", reason="corrupt") from e


def _find_published_weights(p: Path) -> Path:
    if p.is_file():
        return p
    for name in (WEIGHTS_NAME, *PUBLISHED_WEIGHT_FILES):
        if (p / name).exists():
            return p / name
    candidates = sorted([*p.glob("*.pth"), *p.glob("*.pt")])
    candidates = [c for c in candidates if c.name != TRAIN_STATE_NAME]
    if len(candidates) == 1:
        return candidates[0]
    wanted = ", ".join((CONFIG_NAME + " + " + WEIGHTS_NAME, *PUBLISHED_WEIGHT_FILES, "a single *.pth/*.pt"))
    found = ", ".join(c.name for c in candidates) or "none of them"
    raise CheckpointError(f"{p}: no checkpoint found (looked for {wanted}; found {found})", reason="missing")


def _load_published(path: Path, map_location) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict from a published file, plus the non-tensor metadata of a training dict."""
    if path.suffix == ".safetensors":
        return _unwrap_state_dict(_load_safetensors(path, map_location)), {}
    obj = _torch_load(path, map_location)
    meta = {}
    if isinstance(obj, dict) and "model_state_dict" in obj:  # train.py's training dict
        meta = {k: v for k, v in obj.items() if k in ("epoch", "global_step", "training_stage", "lora_config")}
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not a state dict (expected tensors or a dict with 'model_state_dict'; got {keys})",
            reason="bad_layout",
        )
    state = _unwrap_state_dict(obj)
    if any(".base_layer." in k for k in state):
        state = _merge_lora(state, meta.get("lora_config"), path)
    return state, meta


def _unwrap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP saves "module.*", torch.compile "_orig_mod.*"; the weights are the same.
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _merge_lora(state: dict, lora_config: dict | None, path: Path) -> dict:
    """Fold published LoRA adapters (`X.base_layer.*`, `X.lora_A`, `X.lora_B`) into plain `X.*`:
    W = W_base + (alpha / rank) * B @ A. The published pretraining configs trained with LoRA on."""
    if not lora_config or "alpha" not in lora_config or "rank" not in lora_config:
        raise CheckpointError(
            f"{path}: LoRA-wrapped weights (keys '*.base_layer.*') but no lora_config with rank/alpha to merge them",
            reason="bad_layout",
        )
    scale = float(lora_config["alpha"]) / float(lora_config["rank"])
    out, used = {}, set()
    for k, v in state.items():
        if ".base_layer." not in k:
            continue
        mod, _, leaf = k.partition(".base_layer.")
        out[f"{mod}.{leaf}"] = v
        if leaf == "weight":
            a = state.get(f"{mod}.lora_A.weight", state.get(f"{mod}.lora_A"))
            b = state.get(f"{mod}.lora_B.weight", state.get(f"{mod}.lora_B"))
            if a is None or b is None:
                raise CheckpointError(f"{path}: {mod} has base_layer but no lora_A/lora_B", reason="bad_layout")
            out[f"{mod}.weight"] = v + scale * (b.to(v.dtype) @ a.to(v.dtype))
            used |= {f"{mod}.lora_A", f"{mod}.lora_A.weight", f"{mod}.lora_B", f"{mod}.lora_B.weight"}
        used.add(k)
    for k, v in state.items():
        if k not in used and ".lora_" not in k:
            out[k] = v
    return out


# -----------------------------------------------------------------------------
# architecture inference (published checkpoints carry no config)


def infer_model_config(state: Mapping[str, torch.Tensor], prefix: str = "") -> ModelConfig:
    """Read the trunk architecture off tensor shapes. `dropout` is not stored anywhere; the
    published default 0.1 is assumed (it does not affect eval-mode outputs)."""

    def shape(key):
        if prefix + key not in state:
            raise CheckpointError(
                f"cannot infer the architecture: missing tensor {prefix + key!r}", reason="bad_layout"
            )
        return tuple(state[prefix + key].shape)

    d_model = shape("text_projection.3.weight")[0]  # Linear(2d, d)
    embedding_dim = shape("text_projection.0.weight")[1]  # Linear(E, 2d)
    input_dim = shape("motion_embedding.0.weight")[1]  # Linear(in, d/2)
    output_dim = shape("pose_decoder.3.weight")[0]  # Linear(d/2, out)
    num_actions = shape("action_embedding.weight")[0]  # Embedding(A, 64)
    layer_re = re.compile(re.escape(prefix) + r"transformer_encoder\.layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in state if (m := layer_re.match(k))}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"cannot infer num_layers: encoder layer indices {sorted(layers)}", reason="bad_layout")
    rope_key = prefix + "transformer_encoder.layers.0.self_attn.rope.inv_freq"
    if rope_key in state:  # inv_freq has head_dim / 2 entries
        nhead = d_model // (2 * state[rope_key].numel())
    else:  # older dumps without the buffer: fall back to the published size table
        nhead = next((v.nhead for v in VARIANTS.values() if v.d_model == d_model), None)
        if nhead is None:
            raise CheckpointError(
                f"cannot infer nhead for d_model={d_model} without rope.inv_freq", reason="bad_layout"
            )
    return ModelConfig(
        input_dim=input_dim, output_dim=output_dim, d_model=d_model, nhead=nhead, num_layers=len(layers),
        embedding_dim=embedding_dim, num_actions=num_actions,
    )  # fmt: skip


def _inferred_config(state: dict, source: Path, meta: dict) -> dict:
    mc = infer_model_config(state)
    return make_config(
        mc,
        text_encoder=PUBLISHED_TEXT_ENCODER if mc.embedding_dim == 1024 else "unknown",
        training_stage=meta.get("training_stage"),
        extra={
            "inferred": True,
            "source": {"file": str(source), **{k: meta[k] for k in ("epoch", "global_step") if k in meta}},
        },
    )


def _check_shapes_match_config(state: dict, config: dict, where: Path) -> None:
    want = ModelConfig.from_dict(config["model"])
    got = infer_model_config(state, config["trunk_prefix"])
    diffs = {
        k: (getattr(want, k), getattr(got, k))
        for k in want.to_dict()
        if k != "dropout" and getattr(want, k) != getattr(got, k)
    }
    if diffs:
        raise CheckpointError(
            f"{where}: weights do not match config.json (config vs weights): {diffs}", reason="mismatch"
        )


# -----------------------------------------------------------------------------
# building models from a checkpoint


_MODEL_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    TRUNK_MODEL_TYPE: lambda cfg: StickFigureTransformer.from_config(cfg["model"]),
}


def register_model_type(name: str, builder: Callable[[dict], nn.Module]) -> None:
    """Let `build_model`/`load_model` construct a wrapper from its config.json (`model_type` = name).
    The builder gets the whole config dict and returns an un-loaded module."""
    _MODEL_BUILDERS[name] = builder


def build_model(config: dict) -> nn.Module:
    validate_config(config)
    builder = _MODEL_BUILDERS.get(config["model_type"])
    if builder is None:
        raise CheckpointError(
            f"model_type {config['model_type']!r} is not registered (known: {sorted(_MODEL_BUILDERS)}); "
            "import the module that calls register_model_type for it",
            reason="unknown_model_type",
        )
    return builder(config)


def load_model(path: str | os.PathLike, *, map_location="cpu") -> tuple[nn.Module, dict]:
    """Build the model named by the checkpoint's config and load its weights strictly; eval mode."""
    state, config = load_checkpoint(path, map_location=map_location)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {config['model_type']}: {e}", reason="mismatch") from e
    return model.to(map_location).eval(), config


@dataclass
class LoadReport:
    """What `load_trunk_into` did, key by key (names are the target module's state-dict keys)."""

    prefix: str
    loaded: list[str] = field(default_factory=list)  # trunk keys taken from the state dict
    new: list[str] = field(default_factory=list)  # wrapper keys outside the trunk: left at their init
    missing: list[str] = field(default_factory=list)  # trunk keys the state dict lacked: left at init
    unexpected: list[str] = field(default_factory=list)  # state-dict keys with no home in the module

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        def show(keys):
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} total)" if len(keys) > 8 else "")

        lines = [f"loaded {len(self.loaded)} trunk tensors into '{self.prefix or '<root>'}'"]
        for name in ("new", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"{name} ({len(keys)}): {show(keys)}")
        return "; ".join(lines)


def find_trunk_prefix(module: nn.Module) -> str:
    """State-dict prefix of the (single) StickFigureTransformer inside `module`: '' or e.g. 'trunk.'."""
    names = [name for name, m in module.named_modules() if isinstance(m, StickFigureTransformer)]
    if len(names) != 1:
        raise CheckpointError(
            f"{type(module).__name__} contains {len(names)} StickFigureTransformer modules ({names}); pass prefix=",
            reason="mismatch",
        )
    return names[0] + "." if names[0] else ""


def load_trunk_into(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor] | str | os.PathLike, *, prefix: str | None = None,
    strict: bool = True,
) -> LoadReport:  # fmt: skip
    """Load a published/trunk state dict (or a checkpoint path) into the trunk inside a wrapper.

    Keys may come bare (`text_projection.0.weight`, a published checkpoint) or already prefixed
    (`trunk.text_projection.0.weight`, a saved wrapper); keys of the wrapper's own modules that the
    state dict does have are loaded too. Shape mismatches always raise. With strict=True, missing or
    unexpected keys raise CheckpointError; `new` keys (the wrapper's own modules absent from the
    state dict) never do, since a fresh wrapper around published weights has them by design. The
    report is always logged, so nothing is silent.
    """
    if not isinstance(state_dict, Mapping):
        state_dict = load_checkpoint(state_dict)[0]
    if prefix is None:
        prefix = find_trunk_prefix(module)
    target = module.state_dict()
    trunk_keys = [k for k in target if k.startswith(prefix)]
    incoming = {}
    for k, v in _unwrap_state_dict(state_dict).items():
        incoming[prefix + k if (prefix + k) in target and not k.startswith(prefix) else k] = v

    report = LoadReport(prefix=prefix)
    report.unexpected = sorted(k for k in incoming if k not in target)
    report.loaded = [k for k in trunk_keys if k in incoming]
    report.missing = [k for k in trunk_keys if k not in incoming]
    report.new = [k for k in target if not k.startswith(prefix) and k not in incoming]
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs module {tuple(target[k].shape)}"
        for k, v in incoming.items() if k in target and v.shape != target[k].shape
    ]  # fmt: skip
    if shape_errors:
        raise CheckpointError("shape mismatch: " + "; ".join(shape_errors[:10]), reason="mismatch")
    if strict and not report.ok:
        raise CheckpointError(f"trunk load is not clean: {report}", reason="mismatch")
    module.load_state_dict({k: v for k, v in incoming.items() if k in target}, strict=False)
    (log.info if report.ok else log.warning)("load_trunk_into: %s", report)
    return report
