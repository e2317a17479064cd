"""Deploying the Serve config (cluster/serve.yaml) to a running Ray cluster: the same REST call
`serve deploy cluster/serve.yaml -a http://head:8265` makes, plus local validation first and
checkpoint overrides.

    cfg = load_config("cluster/serve.yaml", models={"default": "hf://owner/repo@v1"})
    deploy(cfg, resolve_address("auto"), token=None)
    wait_running(resolve_address("auto"), "stickgen")

Address and cluster token resolve exactly as for `stickgen submit` (stickgen/submit.py): the
`--cluster` value, else RAY_API_SERVER_ADDRESS, RAY_ADDRESS, http://127.0.0.1:8265; the token from
--token, else RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token, sent as a Bearer header.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import yaml

from stickgen.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve.yaml"
APP_NAME = "stickgen"


def resolve_address(value: str | None) -> str:
    """`--cluster` value ("auto" = the bare flag) -> the dashboard's http(s) address."""
    from stickgen.submit import resolve_address as jobs_address

    addr = jobs_address(value).rstrip("/")
    if addr.startswith("ray://"):
        raise ConfigError(f"{addr}: Serve deploys go through the dashboard (http://head:8265), not ray://")
    return addr


def resolve_token(value: str | None) -> str | None:
    from stickgen.submit import auth_token

    return value or auth_token()


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, *, models: dict[str, str] | None = None,
                app_name: str = APP_NAME) -> dict:
    """Read a Serve config, optionally replace the `models` registry of app `app_name`, and check
    it against Ray's schema (a bad file fails here, not on the cluster)."""
    from ray.serve.schema import ServeDeploySchema

    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Serve config not found: {p}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    cfg = copy.deepcopy(cfg)
    if models:
        apps = [a for a in cfg.get("applications", []) if a.get("name") == app_name]
        if not apps:
            raise ConfigError(f"{p}: no application named {app_name!r}")
        args = apps[0].setdefault("args", {})
        args["models"] = dict(models)
        if args.get("default_model") not in models:
            args.pop("default_model", None)
    try:
        ServeDeploySchema.model_validate(cfg)
    except Exception as e:  # pydantic's message names the bad field
        raise ConfigError(f"{p}: not a valid Serve config: {e}") from None
    return cfg


def _client(address: str, token: str | None):
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return ServeSubmissionClient(address, headers=headers)


def _with_retries(call, attempts: int = 5, first_wait_s: float = 1.0):
    """`call()` again after a dropped connection (a busy dashboard drops some); other errors, such
    as a refused token, are final. Only for idempotent calls."""
    import requests

    wait = first_wait_s
    for attempt in range(attempts):
        try:
            return call()
        except (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            if attempt == attempts - 1:
                raise
            time.sleep(wait)
            wait *= 2


def deploy(config: dict, address: str, token: str | None = None) -> None:
    """PUT the config to the cluster's Serve REST API. Declarative (the cluster converges to the
    config), so sending it again after a dropped connection is safe."""
    _with_retries(lambda: _client(address, token).deploy_applications(config))


def wait_running(address: str, app_name: str = APP_NAME, token: str | None = None, timeout_s: float = 600.0,
                 poll_s: float = 2.0) -> dict:
    """Poll until `app_name` is RUNNING; raise ConfigError with the cluster's message if it fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        details = _with_retries(lambda: _client(address, token).get_serve_details())
        app = details.get("applications", {}).get(app_name)
        status = app.get("status") if app else None
        if status == "RUNNING":
            return app
        if status == "DEPLOY_FAILED":
            raise ConfigError(f"application {app_name!r} failed to deploy: {app.get('message', '')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"application {app_name!r} not RUNNING after {timeout_s:.0f} s (status {status})")
        time.sleep(poll_s)
