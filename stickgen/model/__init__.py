"""The Stick-Gen trunk, its checkpoint format and Hub integration."""

from stickgen.model.checkpoint import (
    LoadReport,
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
from stickgen.model.hub import parse_hf_uri, push_checkpoint, render_model_card, resolve_checkpoint
from stickgen.model.transformer import VARIANTS, ModelConfig, StickFigureTransformer

__all__ = [
    "VARIANTS", "LoadReport", "ModelConfig", "StickFigureTransformer", "build_model", "infer_model_config",
    "load_checkpoint", "load_model", "load_train_state", "load_trunk_into", "make_config", "parse_hf_uri",
    "push_checkpoint", "read_config", "register_model_type", "render_model_card", "resolve_checkpoint",
    "save_checkpoint",
]  # fmt: skip

# registers the "motion_denoiser" model type with the checkpoint loader
from stickgen.model import denoiser  # noqa: E402,F401
