"""Shared fixtures. The real data lives in ../shared/data (CI has it); tests that need it skip
cleanly when it is absent. One local Ray instance is shared by the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread in the test process: the tests run Ray workers beside it on 2 cores, and
# OpenMP threads that spin while another process holds the core slow everything down by 10x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
SHARED_DATA = Path(os.environ.get("STICKGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_REFERENCE = SHARED_DATA.parent / "reference"
BANDAI_DIR = SHARED_DATA / "mocap" / "bandai-namco-1" / "data"
CMU_DIR = SHARED_DATA / "mocap" / "cmu"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def bandai_dir() -> Path:
    return _need(BANDAI_DIR)


@pytest.fixture(scope="session")
def cmu_dir() -> Path:
    return _need(CMU_DIR)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    return _need(SHARED_REFERENCE)


@pytest.fixture(scope="session")
def ray_local():
    """One in-process local Ray for the whole test session (Data, Train and Serve tests share
    it). `address="local"` never attaches to a stale cluster left by a killed `ray start`."""
    import ray

    if not ray.is_initialized():
        from stickgen.local_ray import init_local_ray

        init_local_ray(2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                       ignore_reinit_error=True)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
    yield ray
    # shut down at session end only; Serve tests clean up their own applications


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real `ray start --head` node (separate from `ray_local`) with the Jobs API, for tests
    that submit jobs over HTTP. Token auth is explicit (RAY_AUTH_MODE=token, a random token), all
    ports are free ones, and everything runs in a temp dir. Teardown kills exactly the processes
    this fixture started (their process group), never `ray stop`, which would kill every Ray on
    the machine.

    Yields a namespace: address (http://127.0.0.1:PORT), token, env (for CLI subprocesses:
    RAY_AUTH_TOKEN, PATH with this interpreter first), temp_dir."""
    import secrets
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import types
    import urllib.error
    import urllib.request

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    ports = {k: free_port() for k in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                      "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
                                      "ray-client-server-port", "node-manager-port", "object-manager-port")}
    token = secrets.token_hex(16)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "RAY_USAGE_STATS_ENABLED": "0"}
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    cmd = [str(Path(bindir) / "ray"), "start", "--head", "--block", "--num-cpus=2", "--dashboard-host=127.0.0.1",
           "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           *[f"--{k}={v}" for k, v in ports.items()]]
    log = open(Path(temp_dir) / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"

    def stop():
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        log.close()

    deadline = time.monotonic() + 120
    while True:
        req = urllib.request.Request(address + "/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        try:
            urllib.request.urlopen(req, timeout=2)
            break
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                pytest.fail(f"ray start --head did not come up: {(Path(temp_dir) / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(0.5)
    try:
        yield types.SimpleNamespace(address=address, token=token, env=env, temp_dir=temp_dir)
    finally:
        stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_local(ray_local) -> str:
    """Ray Serve on the session's local Ray, HTTP on a free 127.0.0.1 port; yields the base URL.
    Started once per session: http_options only apply when Serve first starts. Tests deploy and
    delete their own applications; Serve itself shuts down at session end."""
    import socket

    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
