"""A small HTTP client for the stickgen API (standard library only: no Ray, no torch).

    data, meta = generate("http://host:8000", "a person waves", fmt="gif", seconds=4)
    Path("wave.gif").write_bytes(data)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from stickgen.errors import StickgenError

FORMATS = {".json": "json", ".motion": "json", ".gif": "gif", ".mp4": "mp4", ".svg": "svg"}


class ApiError(StickgenError):
    """The server answered with an error; `status`, `detail` and `request_id` are its own words."""

    reason = "api_error"

    def __init__(self, status: int, detail: str, request_id: str = "", retry_after: str | None = None):
        self.status, self.detail, self.request_id, self.retry_after = status, detail, request_id, retry_after
        extra = f" (request id {request_id})" if request_id else ""
        retry = f"; retry after {retry_after} s" if retry_after else ""
        super().__init__(f"HTTP {status}: {detail}{retry}{extra}")


def format_for(path: str) -> str:
    """The API format for an output file name, from its suffix."""
    for suffix, fmt in FORMATS.items():
        if path.lower().endswith(suffix):
            return fmt
    raise StickgenError(f"{path}: unknown output type; use one of {', '.join(FORMATS)}", reason="bad_request")


def generate(url: str, prompt: str, *, fmt: str = "json", seconds: float | None = None, seed: int | None = None,
             model: str | None = None, steps: int | None = None, guidance: float | None = None,
             actions: str | None = None, token: str | None = None, timeout_s: float = 120.0) -> tuple[bytes, dict]:
    """POST /v1/animations. Returns (body bytes, response headers with lower-case names).
    token defaults to $STICKGEN_API_TOKEN. Raises ApiError on an HTTP error."""
    body = {"prompt": prompt, "format": fmt, "seconds": seconds, "seed": seed, "model": model, "steps": steps,
            "guidance": guidance, "actions": actions}
    data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    headers = {"Content-Type": "application/json"}
    token = token or os.environ.get("STICKGEN_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url.rstrip("/") + "/v1/animations", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            j = json.loads(raw)
            detail, rid = j.get("detail", raw.decode(errors="replace")), j.get("request_id", "")
        except ValueError:
            detail, rid = raw.decode(errors="replace").strip() or e.reason, e.headers.get("x-request-id", "")
        raise ApiError(e.code, str(detail), rid, e.headers.get("retry-after")) from None
    except urllib.error.URLError as e:
        raise StickgenError(f"{url}: cannot reach the server: {e.reason}", reason="unreachable") from None
