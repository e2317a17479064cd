"""`stickgen submit` / `stickgen jobs` against a real `ray start --head` node over HTTP (the
`ray_head` fixture: token auth on, free ports, its own temp dir)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stickgen import submit as sub

REPO = Path(__file__).resolve().parents[1]


def cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    from stickgen.motion.synth import synthesize_dataset

    d = tmp_path_factory.mktemp("synth-tiny")
    synthesize_dataset(d, n_per_action=1, seed=3, actions=("walk", "wave", "bow", "jump"))
    return d


# --- pure parts ---------------------------------------------------------------------------------


def test_address_resolution_order(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sub.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:8265")
    assert sub.resolve_address("auto") == "http://10.0.0.2:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://head:8443")
    assert sub.resolve_address(None) == "https://head:8443"  # API server address wins over RAY_ADDRESS
    assert sub.resolve_address("127.0.0.1:9999") == "http://127.0.0.1:9999"  # the flag wins, http by default


def test_package_keeps_code_and_drops_heavy_paths():
    files, _ = sub.package_files()
    names = {p for p, _ in files}
    assert "cli.py" in names and "stickgen/data/pipeline.py" in names and "jobs/preprocess.py" in names
    assert not any(p.startswith((".git/", ".venv/")) or p.endswith((".pt", ".safetensors", ".parquet")) for p in names)
    assert sum(s for _, s in files) < sub.UPLOAD_LIMIT_BYTES
    env = sub.runtime_env()
    assert env["working_dir"] == str(sub.PROJECT_ROOT) and "/.git" in env["excludes"]


def test_kinds_map_to_job_modules():
    assert sub.entrypoint("preprocess", ["a b", "--out", "x"]) == "python -m jobs.preprocess 'a b' --out x"
    assert sub.entrypoint("sft", []) == "python -m jobs.sft"
    with pytest.raises(sub.SubmitError, match="unknown job kind"):
        sub.entrypoint("train", [])
    assert sub.base_submission_id("preprocess", ["a"]) == sub.base_submission_id("preprocess", ["a"])
    assert sub.base_submission_id("preprocess", ["a"]) != sub.base_submission_id("preprocess", ["b"])


# --- a real head node -----------------------------------------------------------------------------


def test_submit_preprocess_succeeds_and_logs_show_progress(ray_head, tiny_synth, tmp_path):
    out = tmp_path / "out"
    host_port = ray_head.address.removeprefix("http://")
    r = cli(ray_head.env, "submit", "preprocess", "--cluster", host_port, "--follow", "--",
            str(tiny_synth), "--out", str(out), "--set", "embedding.encoder=hash-384")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout
    job_id = r.stdout.split("submitted ", 1)[1].split()[0]
    assert job_id.startswith("stickgen-preprocess-")

    logs = cli(ray_head.env, "jobs", "logs", job_id, "--cluster", ray_head.address)
    assert logs.returncode == 0, logs.stderr
    assert "[stickgen preprocess] 1/4 convert: 4 input files" in logs.stdout  # phase progress lines
    assert "[stickgen preprocess] 4/4 write" in logs.stdout
    assert "stickgen preprocess ->" in logs.stdout                   # the final table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"]["total"] == 4 and summary["windows"]["pretrain"] >= 4
    assert (out / "manifest.parquet").exists() and list((out / "pretrain").glob("*.parquet"))

    listed = cli(ray_head.env, "jobs", "list", "--cluster", ray_head.address)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout


def test_jobs_stop_stops_a_running_job(ray_head, tiny_synth, tmp_path, monkeypatch):
    """Also the other way in: `stickgen preprocess ... --cluster` submits the same job module."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)  # for the in-process status calls
    args = [str(tiny_synth), "--out", str(tmp_path / "out"), "--set", "embedding.encoder=hash-384",
            "--set", "parallelism.max_files_per_task=1", "--cluster", ray_head.address, "--no-follow"]
    r = cli(ray_head.env, "preprocess", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = r.stdout.split("submitted ", 1)[1].split()[0]
    # the same job again while it runs attaches instead of starting a duplicate
    again = cli(ray_head.env, "preprocess", *args)
    assert f"attached to running job {job_id}" in again.stdout, again.stdout + again.stderr

    deadline = time.monotonic() + 60
    while sub.status(job_id, ray_head.address) == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sub.status(job_id, ray_head.address) == "RUNNING"
    stopped = cli(ray_head.env, "jobs", "stop", job_id, "--cluster", ray_head.address)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"job {job_id}: STOPPED" in stopped.stdout
    assert sub.status(job_id, ray_head.address) == "STOPPED"
    status = cli(ray_head.env, "jobs", "status", job_id, "--cluster", ray_head.address)
    assert '"status": "STOPPED"' in status.stdout and "python -m jobs.preprocess" in status.stdout
