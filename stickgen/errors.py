"""Typed errors. Every error that can reach a user names the file or field and the problem.

Batch jobs (preprocess, bulk generation) catch `StickgenError` per input and record its `reason`
code in their manifest, so one bad file never stops a job and nothing is lost silently.
"""

from __future__ import annotations


class StickgenError(Exception):
    """Base class. `reason` is a short stable code used in manifests and API errors."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MotionFormatError(StickgenError, ValueError):
    """A motion file cannot be read: `path` names the file, `problem` says what is wrong.

    reason codes: empty, truncated, binary, bad_number, nan, channel_count, hierarchy,
    unsupported_format, too_short, too_large, io.
    """

    reason = "format"

    def __init__(self, path: str, problem: str, *, reason: str | None = None):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}", reason=reason)


class UnknownRigError(MotionFormatError):
    """The skeleton's joint names could not be mapped to the canonical stick figure."""

    reason = "unknown_rig"

    def __init__(self, path: str, missing: list[str], joint_names: list[str]):
        self.missing = list(missing)
        self.joint_names = list(joint_names)
        shown = ", ".join(joint_names[:40]) + (" ..." if len(joint_names) > 40 else "")
        super().__init__(
            path,
            f"unknown rig: could not find canonical joints {', '.join(missing)} "
            f"among the file's joints [{shown}]",
        )


class MissingDependencyError(StickgenError, RuntimeError):
    """An optional package or model file is needed; the message says how to get it."""

    reason = "missing_dependency"


class ConfigError(StickgenError, ValueError):
    """A config file or value is invalid (unknown key, wrong type, bad combination)."""

    reason = "config"


class CheckpointError(StickgenError, ValueError):
    """A checkpoint is missing, malformed, unsafe to load, or does not fit the model."""

    reason = "checkpoint"
