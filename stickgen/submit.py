"""Ray Jobs API client shared by every `stickgen submit KIND` and `stickgen jobs ...` command.

    stickgen submit preprocess --cluster http://head:8265 --follow -- /data/mocap --out /shared/data
    stickgen jobs list --cluster http://head:8265
    stickgen jobs logs stickgen-preprocess-1a2b3c4d5e --cluster http://head:8265 --follow

Address: the `--cluster` value; a bare `--cluster` (the CLI turns it into "auto") or none falls
back to RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, then http://127.0.0.1:8265. A scheme-less
`host:port` means http. RAY_ADDRESS is read last because `ray.init()` reads it too.

Auth: Ray 2.60 clusters may require a token. The client sends `Authorization: Bearer <token>`
from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's
own client only does this when RAY_AUTH_MODE=token was set before `import ray`).

Code shipping: the job runs `python -m jobs.<kind> ARGS` in a runtime_env whose working_dir is
this project, minus .git, virtualenvs, data, runs, checkpoints and any file over
LARGE_FILE_BYTES; the upload must stay under Ray's 100 MiB limit (checked here first, with the
largest files named). The cluster's image must have stickgen's dependencies (or pass `pip=`).

Submission ids are deterministic: `stickgen-<kind>-<hash of the arguments>`; submitting the same
job while it is pending or running attaches to it instead of starting a duplicate, and a rerun
after it finished gets the next attempt suffix (`-2`, `-3`, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StickgenError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
UPLOAD_LIMIT_BYTES = 100 * 2**20      # the dashboard's HTTP body limit (Ray issues #45602, #55877)
LARGE_FILE_BYTES = 10 * 2**20         # single files above this are never shipped (data, weights)
JOB_KINDS = ("preprocess", "pretrain", "sft", "generate")
#: gitignore syntax; a leading "/" anchors at the project root (a bare "data" would also drop
#: the stickgen/data package)
EXCLUDES = [
    "/.git", "/.venv", "/venv", "/.env", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    ".mypy_cache", "*.egg-info", "/build", "/dist", "/data", "/runs", "/checkpoints", "/out", "/outputs",
    "/demo-out", "/wandb", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.parquet", "*.npz", "*.npy",
    "*.bvh", "*.amc", "*.asf", "*.mp4", "*.gif", "*.log",
]
_AUTO = {None, "", "auto"}
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(StickgenError, RuntimeError):
    """A job could not be submitted or queried (unreachable cluster, auth, upload too large)."""

    reason = "submit"


def resolve_address(flag: str | None = None) -> str:
    """The Jobs API address: flag, then RAY_API_SERVER_ADDRESS, RAY_ADDRESS, the local default."""
    for cand in (flag, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if cand not in _AUTO:
            cand = cand.strip()
            return cand if "://" in cand else f"http://{cand}"
    return DEFAULT_ADDRESS


def auth_token() -> str | None:
    tok = os.environ.get("RAY_AUTH_TOKEN")
    if tok:
        return tok.strip()
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if p and Path(p).is_file():
            text = Path(p).read_text().strip()
            if text:
                return text
    return None


def client(address: str | None = None):
    """A JobSubmissionClient for `address` (see resolve_address), sending the auth token."""
    from ray.job_submission import JobSubmissionClient

    addr = resolve_address(address)
    tok = auth_token()
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    try:
        return JobSubmissionClient(addr, headers=headers)
    except Exception as e:  # noqa: BLE001 - connection, auth and version errors all surface here
        raise SubmitError(f"cannot reach the Ray Jobs API at {addr}: {type(e).__name__}: {e}") from None


def _pathspec(lines: list[str]):
    try:
        from ray._private.thirdparty.pathspec import PathSpec  # what Ray itself matches excludes with
    except ImportError:  # pragma: no cover - Ray always vendors it
        return None
    return PathSpec.from_lines("gitwildmatch", lines)


def package_files(root: Path = PROJECT_ROOT, excludes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(files that would be uploaded with their sizes, extra excludes for large files).

    Mirrors Ray's packaging: `excludes` plus the root .gitignore, gitignore syntax."""
    lines = list(excludes if excludes is not None else EXCLUDES)
    gi = root / ".gitignore"
    if gi.is_file():
        lines += [ln.strip() for ln in gi.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    spec = _pathspec(lines)
    files, large = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for d in sorted(dirnames):
            rel = d if rel_dir == "." else f"{rel_dir}/{d}"
            if spec is None or not (spec.match_file(rel) or spec.match_file(rel + "/")):
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if spec is not None and spec.match_file(rel):
                continue
            try:
                size = os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                continue
            if size > LARGE_FILE_BYTES:
                large.append("/" + rel)  # anchored: only this file
            else:
                files.append((rel, size))
    return files, large


def runtime_env(root: Path = PROJECT_ROOT, pip: list[str] | None = None, env_vars: dict | None = None) -> dict:
    """working_dir = the project (checked against the upload limit), with excludes."""
    files, large = package_files(root)
    total = sum(s for _, s in files)
    if total > UPLOAD_LIMIT_BYTES:
        biggest = ", ".join(f"{p} ({s / 2**20:.1f} MiB)" for p, s in sorted(files, key=lambda x: -x[1])[:5])
        raise SubmitError(f"{root}: the job package would be {total / 2**20:.1f} MiB, over Ray's "
                          f"{UPLOAD_LIMIT_BYTES // 2**20} MiB upload limit; largest files: {biggest}. "
                          "Add them to .gitignore / .rayignore or stickgen.submit.EXCLUDES.")
    env: dict = {"working_dir": str(root), "excludes": EXCLUDES + large}
    if pip:
        env["pip"] = list(pip)
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def entrypoint(kind: str, args: list[str]) -> str:
    if kind not in JOB_KINDS:
        raise SubmitError(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    return shlex.join(["python", "-m", f"jobs.{kind}", *args])


def base_submission_id(kind: str, args: list[str]) -> str:
    h = hashlib.sha256("\x00".join([kind, *args]).encode()).hexdigest()[:10]
    return f"stickgen-{kind}-{h}"


@dataclass
class Submitted:
    submission_id: str
    address: str
    attached: bool  # True: an identical job was already pending/running; no new job was made


def submit(kind: str, args: list[str], address: str | None = None, *, pip: list[str] | None = None,
           env_vars: dict | None = None, submission_id: str | None = None) -> Submitted:
    """Submit `python -m jobs.<kind> ARGS` (see the module docstring for ids and packaging)."""
    cmd = entrypoint(kind, args)
    c = client(address)
    addr = resolve_address(address)
    base = submission_id or base_submission_id(kind, args)
    try:
        existing = {j.submission_id: str(j.status) for j in c.list_jobs() if j.submission_id}
    except Exception as e:  # noqa: BLE001
        raise SubmitError(f"cannot list jobs at {addr}: {type(e).__name__}: {e}") from None
    attempts = [base] + [f"{base}-{n}" for n in range(2, 1000)]
    for sid in attempts:
        status = existing.get(sid)
        if status is None:
            break
        if _status_name(status) not in _TERMINAL:
            return Submitted(sid, addr, attached=True)
    try:
        c.submit_job(entrypoint=cmd, submission_id=sid, runtime_env=runtime_env(pip=pip, env_vars=env_vars),
                     metadata={"stickgen.kind": kind})
    except SubmitError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SubmitError(f"submitting {cmd!r} to {addr} failed: {type(e).__name__}: {e}") from None
    return Submitted(sid, addr, attached=False)


def _status_name(status) -> str:
    s = str(getattr(status, "value", status))
    return s.split(".")[-1].upper()


def status(job_id: str, address: str | None = None) -> str:
    try:
        return _status_name(client(address).get_job_status(job_id))
    except SubmitError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SubmitError(f"job {job_id}: {type(e).__name__}: {e}") from None


def info(job_id: str, address: str | None = None) -> dict:
    d = client(address).get_job_info(job_id)
    return {"submission_id": d.submission_id, "status": _status_name(d.status), "entrypoint": d.entrypoint,
            "message": d.message, "start_time": d.start_time, "end_time": d.end_time,
            "metadata": d.metadata}


def list_jobs(address: str | None = None) -> list[dict]:
    out = []
    for d in client(address).list_jobs():
        out.append({"submission_id": d.submission_id, "status": _status_name(d.status),
                    "entrypoint": d.entrypoint, "start_time": d.start_time})
    return sorted(out, key=lambda d: d["start_time"] or 0)


def logs(job_id: str, address: str | None = None) -> str:
    try:
        return client(address).get_job_logs(job_id)
    except Exception as e:  # noqa: BLE001
        raise SubmitError(f"job {job_id}: {type(e).__name__}: {e}") from None


def follow(job_id: str, address: str | None = None, out=None) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    out = out or sys.stdout
    c = client(address)

    async def _tail():
        async for chunk in c.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(_tail())
    except Exception as e:  # noqa: BLE001 - a dropped stream still ends with the status below
        out.write(f"\n[stickgen] log stream ended: {type(e).__name__}: {e}\n")
    return wait(job_id, address, timeout_s=60)


def wait(job_id: str, address: str | None = None, timeout_s: float = 3600, poll_s: float = 1.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        s = status(job_id, address)
        if s in _TERMINAL or time.monotonic() > deadline:
            return s
        time.sleep(poll_s)


def stop(job_id: str, address: str | None = None, wait_s: float = 30) -> str:
    """Ask the job to stop; returns its status after at most `wait_s` seconds."""
    try:
        client(address).stop_job(job_id)
    except Exception as e:  # noqa: BLE001
        raise SubmitError(f"stopping job {job_id}: {type(e).__name__}: {e}") from None
    return wait(job_id, address, timeout_s=wait_s, poll_s=0.5)
