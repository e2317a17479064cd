"""Rendering (GIF / MP4 / SVG / PNG) and the `.motion` JSON format."""

from .motion_json import read_motion_json, to_motion_json, write_motion_json
from .render import grid_png, render, render_frames

__all__ = ["grid_png", "read_motion_json", "render", "render_frames", "to_motion_json", "write_motion_json"]
