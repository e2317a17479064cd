"""Sentence encoders for prompts."""

from stickgen.text.encoders import DEFAULT_ENCODER, TextEncoder, get_text_encoder

__all__ = ["DEFAULT_ENCODER", "TextEncoder", "get_text_encoder"]
