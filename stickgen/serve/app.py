"""stickgen over HTTP: a Ray Serve application with dynamic batching, autoscaling and model
multiplexing (issue #7).

Deployment graph (one Serve application, three deployments):

    HTTP proxy ─► Api        FastAPI ingress: validation, auth, body limit, request ids, the
                   │          `.motion` JSON, the web page at /, OpenAPI at /docs
                   ├─► Generator  checkpoints multiplexed per request (`model`), requests batched
                   │              with @serve.batch; 1 GPU per replica when the cluster has GPUs
                   └─► Renderer   GIF / MP4 / SVG on CPU, so rendering never stalls a model batch

Run it:

    stickgen serve run --checkpoint runs/sft/final                  # local, foreground, :8000
    serve run stickgen.serve.app:build_app models=default=runs/sft/final
    stickgen serve deploy --cluster http://head:8265                 # cluster/serve.yaml
    serve deploy cluster/serve.yaml -a http://head:8265              # the same, with Ray's CLI

The deployment settings below are the defaults of cluster/serve.yaml (tests/test_serve.py checks
that the two agree); a config file's `deployments:` section overrides them per deployment.
"""

import asyncio
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from stickgen import __version__
from stickgen.config import from_dict
from stickgen.errors import CheckpointError, ConfigError, StickgenError

logger = logging.getLogger("ray.serve")  # Serve stamps replica, deployment and request_id on it

# The API's request limits: the numbers MotionGenerator.generate validates (tests/test_serve.py
# checks they agree). Kept here, not imported from stickgen.generate.sample, so the Api and Renderer
# replicas never import torch: they start ~10 s sooner on 2 cores and stay ~300 MB smaller.
FPS = 25
MIN_SECONDS, MAX_SECONDS = 0.4, 10.0
MAX_PROMPT_CHARS = 1000

STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "STICKGEN_API_TOKEN"
MAX_ACTIONS_CHARS = 500
MEDIA_TYPES = {"json": "application/json", "gif": "image/gif", "mp4": "video/mp4", "svg": "image/svg+xml"}
MAX_MODELS_PER_REPLICA = 3  # LRU of loaded checkpoints per Generator replica (@serve.multiplexed)
GENERATOR_NAME = f"stickgen {__version__}"  # .motion meta.generator

# --- deployment settings: the defaults of cluster/serve.yaml ------------------------------------
# Why these numbers (benchmarks/serve.py measures them on a 2-core box with the tiny model):
# - Generator: one batch runs while the next one forms, so max_ongoing_requests = 2 x max_batch_size;
#   target_ongoing_requests = max_batch_size adds a replica once a full batch is waiting behind the
#   running one. max_queued_requests bounds the wait in the caller's queue; past it the Api answers
#   503 + Retry-After at once. Down-scaling waits 2 min: a replica costs seconds to load.
# - Api: every hop needs max_ongoing_requests >= what the hop behind it can absorb (the default 5
#   cut 32-client throughput to 10 req/s, ray notes section 3).
# - Renderer: a 10 s GIF takes ~0.5 s of CPU; 2 at a time per replica, scaled on queue length.
BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}
BATCHING = {"max_batch_size": 16, "batch_wait_timeout_s": 0.0, "busy_batch_wait_timeout_s": 0.1}
API_OPTIONS = {
    "max_ongoing_requests": 128,
    "max_queued_requests": 256,
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64,
                           "upscale_delay_s": 10.0, "downscale_delay_s": 120.0},
    "ray_actor_options": {"num_cpus": 0.25},
    "health_check_period_s": 10.0,
    "health_check_timeout_s": 30.0,
    "backpressure_config": BACKPRESSURE,
}
GENERATOR_OPTIONS = {
    "max_ongoing_requests": 32,
    "max_queued_requests": 64,
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
                           "upscale_delay_s": 10.0, "downscale_delay_s": 120.0},
    "user_config": BATCHING,
    "health_check_period_s": 10.0,
    "health_check_timeout_s": 60.0,
    "graceful_shutdown_timeout_s": 30.0,
    "backpressure_config": BACKPRESSURE,
}
RENDERER_OPTIONS = {
    "max_ongoing_requests": 2,
    "max_queued_requests": 32,
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2,
                           "upscale_delay_s": 5.0, "downscale_delay_s": 60.0},
    "ray_actor_options": {"num_cpus": 1},
    "health_check_period_s": 10.0,
    "health_check_timeout_s": 30.0,
    "backpressure_config": BACKPRESSURE,
}


# --- application arguments ---------------------------------------------------------------------

@dataclass(frozen=True)
class AppArgs:
    """`build_app` arguments (a Serve config's `args:`); unknown keys are errors."""

    models: dict[str, str] = field(default_factory=dict)  # model id -> checkpoint folder or hf:// URI
    default_model: str = ""  # "" = the first entry of `models`
    device: str = "auto"  # auto (a GPU per replica if the cluster has GPUs now) | cpu | cuda
    gpus_per_replica: float = 1.0  # when on GPU; a fraction packs several replicas on a card
    cpus_per_replica: float = 1.0  # Generator CPUs (and torch threads) when on CPU
    max_body_bytes: int = 16 * 1024  # request bodies above this get 413 before any parsing
    request_timeout_s: float = 60.0  # a generation taking longer answers 504
    token_env: str = TOKEN_ENV  # bearer token for /v1/* is read from this env var; unset = open

    def __post_init__(self):
        if not self.models:
            raise ConfigError("models: no checkpoints to serve; give models={id: folder or hf:// URI} "
                              "(or set STICKGEN_MODELS / STICKGEN_CHECKPOINT)")
        if self.default_model and self.default_model not in self.models:
            raise ConfigError(f"default_model: {self.default_model!r} is not in models ({', '.join(self.models)})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: {self.device!r}; choose auto, cpu or cuda")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes: {self.max_body_bytes} is too small (>= 1024)")

    @property
    def default(self) -> str:
        return self.default_model or next(iter(self.models))


def parse_models(spec: str) -> dict[str, str]:
    """'id=path,id2=hf://o/r' or a bare 'path' (served as 'default') -> {id: uri}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        mid, sep, uri = part.partition("=")
        if not sep:
            mid, uri = "default", part
        if not mid.strip() or not uri.strip() or mid.strip() in out:
            raise ConfigError(f"models: bad entry {part!r} in {spec!r} (want id=checkpoint, ids unique)")
        out[mid.strip()] = uri.strip()
    return out


def parse_args(args: dict | AppArgs | None) -> AppArgs:
    """Serve passes `serve run ... key=value` arguments as strings and config-file `args:` as YAML
    values; both end up here. Without `models`, STICKGEN_MODELS or STICKGEN_CHECKPOINT name them."""
    if isinstance(args, AppArgs):
        return args
    data = dict(args or {})
    if "models" not in data:
        env = os.environ.get("STICKGEN_MODELS") or os.environ.get("STICKGEN_CHECKPOINT") or ""
        data["models"] = env
    if isinstance(data["models"], str):
        data["models"] = parse_models(data["models"])
    types = {f.name: f.type for f in fields(AppArgs)}
    for k, v in list(data.items()):  # "serve run" gives every value as a string
        if isinstance(v, str) and types.get(k) in (int, float):
            try:
                data[k] = types[k](v)
            except ValueError:
                raise ConfigError(f"args.{k}: expected a number, got {v!r}") from None
    return from_dict(AppArgs, data, where="args")


# --- messages between deployments --------------------------------------------------------------

@dataclass
class GenRequest:
    prompt: str
    seconds: float
    seed: int
    steps: Optional[int] = None
    guidance: Optional[float] = None
    actions: Optional[str] = None


@dataclass
class Generated:
    """A Generator's answer: plain arrays, so the callers need no torch."""

    motion: Optional[np.ndarray]  # [T, 48] v3 motion (25 fps); None when `error` is set
    actions: Optional[list[str]]  # per-frame action names when a timeline was given
    checkpoint_id: str
    batch_size: int  # how many requests shared the model call (the dynamic batch)
    batch_ms: float = 0.0
    error: Optional[str] = None  # why there is no motion
    status: int = 422  # HTTP status for `error`: 422 the request's fault, 503 a model that won't load


@dataclass(frozen=True)
class BatchingConfig:
    """Generator `user_config`: applied live by `reconfigure` (no replica restart)."""

    max_batch_size: int = BATCHING["max_batch_size"]
    batch_wait_timeout_s: float = BATCHING["batch_wait_timeout_s"]  # wait for more requests when idle
    busy_batch_wait_timeout_s: float = BATCHING["busy_batch_wait_timeout_s"]  # cap of the wait while busy

    def __post_init__(self):
        if not 1 <= self.max_batch_size <= 512:
            raise ConfigError(f"max_batch_size: {self.max_batch_size} is out of range [1, 512]")
        if self.batch_wait_timeout_s < 0 or self.busy_batch_wait_timeout_s < 0:
            raise ConfigError("batch wait timeouts must be >= 0")


# --- Generator: multiplexed checkpoints, batched sampling ----------------------------------------

@serve.deployment(**GENERATOR_OPTIONS)
class Generator:
    """Holds up to MAX_MODELS_PER_REPLICA checkpoints (LRU, chosen per request by the multiplexed
    model id) and runs concurrent requests for the same checkpoint as one batched `generate`.

    Batch forming adapts to load: while the model is idle a request starts at once
    (batch_wait_timeout_s, 0 by default, so a lone request pays no wait); while a batch is running,
    the next batch keeps collecting until about when the running one ends (capped by
    busy_batch_wait_timeout_s), because it could not start earlier anyway. Ray's batcher seals a
    batch on its timeout even while the model is busy, so a fixed short timeout splits a closed
    loop of 32 clients into small batches, and a fixed long one delays every lone request
    (benchmarks/serve.py measures all three)."""

    def __init__(self, models: dict[str, str], default_model: str, device: str = "cpu", threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.models, self.default_model, self.device = dict(models), default_model, device
        for mid, uri in self.models.items():  # fail the deploy early, naming the bad entry
            if not uri.startswith("hf://") and not (Path(uri) / "model.safetensors").is_file():
                raise CheckpointError(f"models.{mid}: {uri} is not a stickgen checkpoint folder "
                                      "(no model.safetensors)", reason="not_found")
        # Load the default checkpoint and its text encoder, and run it once, before taking traffic
        # (the first encode/forward in a process costs seconds).
        self._preloaded = {default_model: self._load(default_model)}
        self._preloaded[default_model].generate(["warm up"], seconds=MIN_SECONDS, seeds=[0])
        self.cfg = BatchingConfig()
        self._running_since: Optional[float] = None  # perf_counter() when the running batch began
        self._batch_s = 0.0  # EMA of the model-call time
        self._failures = 0  # consecutive unexpected batch failures (device errors) -> unhealthy

    def reconfigure(self, user_config: dict) -> None:
        self.cfg = from_dict(BatchingConfig, dict(user_config or {}), where="Generator.user_config")
        self._batched.set_max_batch_size(self.cfg.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

    def check_health(self) -> None:
        if self._failures >= 3:
            raise RuntimeError(f"{self._failures} batches in a row failed; restarting the replica")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA device lost")

    def _load(self, model_id: str):
        from stickgen.generate.sample import MotionGenerator

        return MotionGenerator(self.models[model_id], device=self.device)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, model_id: str):
        from stickgen.generate.sample import GenerationError

        if model_id not in self.models:
            raise GenerationError(f"model: {model_id!r} is not served by this application")
        pre = self._preloaded.pop(model_id, None)
        return pre if pre is not None else await asyncio.to_thread(self._load, model_id)

    async def generate(self, req: GenRequest) -> Generated:
        """One request; the caller picks the checkpoint with options(multiplexed_model_id=...)."""
        # Ray reads the batch wait when the first request of a batch arrives: make it the time
        # left on the batch running now (nothing is lost by waiting for that), else the idle wait.
        # A batch running past its usual time still gets a quarter of it, so batches sealed behind
        # it are not single requests.
        wait = self.cfg.batch_wait_timeout_s
        if self._running_since is not None and self.cfg.busy_batch_wait_timeout_s > 0:
            left = self._running_since + self._batch_s - time.perf_counter()
            wait = max(wait, min(self.cfg.busy_batch_wait_timeout_s, max(left, 0.25 * self._batch_s)))
        self._batched.set_batch_wait_timeout_s(wait)
        return await self._batched(req)

    @serve.batch(max_batch_size=BATCHING["max_batch_size"], batch_wait_timeout_s=BATCHING["batch_wait_timeout_s"])
    async def _batched(self, reqs: list[GenRequest]) -> list[Generated]:
        # Ray splits batches by multiplexed model id, so one batch = one checkpoint.
        from stickgen.generate.sample import GenerationError

        model_id = serve.get_multiplexed_model_id() or self.default_model
        try:
            gen = await self.get_model(model_id)
        except GenerationError as e:  # an unknown model id sent straight to the handle
            return [Generated(None, None, "", len(reqs), error=str(e)) for _ in reqs]
        except StickgenError as e:  # the checkpoint will not load: the server's problem, not the request's
            logger.error("model %r could not be loaded: %s", model_id, e)
            return [Generated(None, None, "", len(reqs), error=f"model {model_id!r} could not be loaded: {e}",
                              status=503) for _ in reqs]
        try:
            t0 = self._running_since = time.perf_counter()
            # In a thread: torch releases the GIL, and the replica's event loop keeps accepting
            # requests into the next batch meanwhile.
            out = await asyncio.to_thread(self._run, gen, reqs)
            dt = time.perf_counter() - t0
            self._batch_s = dt if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * dt
            self._failures = 0
            for g in out:
                g.batch_ms = 1000 * dt
            return out
        except Exception:  # the model call itself failed (e.g. the device): counts towards unhealthy
            self._failures += 1
            raise
        finally:
            self._running_since = None

    @staticmethod
    def _run(gen, reqs: list[GenRequest]) -> list[Generated]:
        """generate() takes one steps/guidance per call: group the batch by them."""
        import torch

        from stickgen.generate.sample import GenerationError

        out: list[Optional[Generated]] = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.steps, r.guidance), []).append(i)
        for (steps, guidance), idx in groups.items():
            try:
                with torch.inference_mode():  # no autograd bookkeeping at all (cheaper than no_grad)
                    anims = gen.generate([reqs[i].prompt for i in idx], seconds=[reqs[i].seconds for i in idx],
                                         seeds=[reqs[i].seed for i in idx], steps=steps, guidance=guidance,
                                         actions=[reqs[i].actions for i in idx])
                for i, a in zip(idx, anims):
                    out[i] = Generated(a.motion, a.actions, a.checkpoint_id, len(reqs))
            except GenerationError as e:
                for i in idx:
                    out[i] = Generated(None, None, "", len(reqs), error=str(e))
        return out  # type: ignore[return-value]


# --- Renderer: files on CPU ------------------------------------------------------------------------

def motion_document(motion: np.ndarray, prompt: str, actions: Optional[list[str]] = None) -> bytes:
    """The `.motion` JSON bytes: what Animation.to_motion_json gives (tests/test_serve.py checks),
    with the generator name computed once; looking the installed version up per document cost ~1 ms
    of the ingress's CPU per request (importlib.metadata)."""
    from stickgen.motion.physics import root_physics
    from stickgen.render.motion_json import dumps_motion_json, to_motion_json

    doc = to_motion_json(motion, fps=FPS, description=prompt, actions=actions, physics=root_physics(motion, FPS),
                         generator=GENERATOR_NAME)
    return dumps_motion_json(doc).encode()


def render_bytes(motion: np.ndarray, prompt: str, fmt: str) -> bytes:
    """A GIF / MP4 / SVG file of `motion`, drawn as Animation.save draws it."""
    from stickgen.render import render

    with tempfile.TemporaryDirectory(prefix="stickgen-render-") as d:
        return render(motion, Path(d) / f"animation.{fmt}", fps=FPS, title=prompt[:60] or None).read_bytes()


@serve.deployment(**RENDERER_OPTIONS)
class Renderer:
    """GIF / MP4 / SVG. Its own deployment so a 0.5 s GIF never holds up a Generator batch and
    rendering scales separately."""

    async def render(self, motion: np.ndarray, prompt: str, fmt: str) -> bytes:
        if fmt not in ("gif", "mp4", "svg"):
            raise ValueError(f"format: {fmt!r} is not a rendered format")
        return await asyncio.to_thread(render_bytes, motion, prompt, fmt)


# --- Api: the FastAPI ingress ----------------------------------------------------------------------

class AnimationRequest(BaseModel):
    """POST /v1/animations body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "a person walks forward and waves", "seconds": 4, "seed": 7, "format": "json"}]})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the figure does.")
    seconds: float = Field(MAX_SECONDS, ge=MIN_SECONDS, le=MAX_SECONDS, description=f"Clip length ({FPS} fps).")
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1, description="Same seed + prompt + model = same motion; "
                                                                      "omitted = random (returned in X-Seed).")
    steps: Optional[int] = Field(None, ge=1, le=100, description="Sampler steps; omitted = the checkpoint's.")
    guidance: Optional[float] = Field(None, ge=0, le=20, description="Text guidance; omitted = the checkpoint's.")
    actions: Optional[str] = Field(None, max_length=MAX_ACTIONS_CHARS,
                                   description='Action timeline in seconds, e.g. "walk:0-4,wave:4-10".')
    model: Optional[str] = Field(None, max_length=200, description="A model id from GET /v1/models; omitted = default.")
    format: Literal["json", "gif", "mp4", "svg"] = Field(
        "json", description="json = the `.motion` document; gif/mp4/svg = a rendered file.")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class ModelInfo(BaseModel):
    id: str
    source: str
    default: bool


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


def _request_id(scope_or_request) -> str:
    headers = scope_or_request.headers if hasattr(scope_or_request, "headers") else {}
    return headers.get("x-request-id", "")


def _error(status: int, detail: str, request_id: str = "", headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id, **extra}, status_code=status, headers=headers)


class _Guard:
    """Pure ASGI middleware: bearer-token auth for /v1/* and the body-size limit, both before
    FastAPI reads or parses a byte of the body (Content-Length is checked first; a chunked body is
    counted while read and refused as soon as it passes the limit)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope["app"].state if "app" in scope else fastapi_app.state
        token, limit = getattr(state, "token", None), getattr(state, "max_body_bytes", 16 * 1024)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")
        root, path = scope.get("root_path", ""), scope["path"]
        rel = path[len(root):] if root and path.startswith(root) else path
        if token and rel.startswith("/v1/"):
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given:
                return await _error(401, "missing bearer token (Authorization: Bearer <token>)", rid,
                                    {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return await _error(401, "invalid bearer token", rid,
                                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                return await _error(413, f"request body is {length} bytes; the limit is {limit}",
                                    rid)(scope, receive, send)
            body, more = [], True
            size = 0
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _error(413, f"request body exceeds the limit of {limit} bytes",
                                        rid)(scope, receive, send)
                body.append(chunk)
                more = msg.get("more_body", False)
            data = b"".join(body)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": data, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


fastapi_app = FastAPI(
    title="stickgen",
    version=__version__,
    description="Text to stick-figure animation. `POST /v1/animations` returns the `.motion` JSON "
                "document or a rendered GIF/MP4/SVG. Errors are JSON `{detail, request_id}`; "
                "503 + Retry-After means the queue is full. Set the bearer token when the server has one.",
)
fastapi_app.add_middleware(_Guard)
_bearer = HTTPBearer(auto_error=False, description=f"Required when the server sets {TOKEN_ENV}.")


@fastapi_app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    errors = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        name = ".".join(loc) or "body"
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            name, msg = "body", f"invalid JSON: {e.get('ctx', {}).get('error', msg)}"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field"
        errors.append({"field": name, "message": msg})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return _error(422, detail, _request_id(request), errors=errors)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    return _error(exc.status_code, str(exc.detail), _request_id(request), getattr(exc, "headers", None))


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None, field: str | None = None):
        self.status, self.detail, self.headers, self.field = status, detail, headers, field


@serve.deployment(**API_OPTIONS)
@serve.ingress(fastapi_app)
class Api:
    """The HTTP face: checks requests, asks the Generator, renders via the Renderer."""

    def __init__(self, generator: DeploymentHandle, renderer: DeploymentHandle, models: dict[str, str],
                 default_model: str, max_body_bytes: int = 16 * 1024, request_timeout_s: float = 60.0,
                 token_env: str = TOKEN_ENV):
        from stickgen.text.actions import parse_timeline

        self._parse_timeline = parse_timeline
        self.generator, self.renderer = generator, renderer
        self.models, self.default_model = dict(models), default_model
        self.request_timeout_s = request_timeout_s
        self._handles = {m: generator.options(multiplexed_model_id=m) for m in self.models}
        fastapi_app.state.token = os.environ.get(token_env) or None
        fastapi_app.state.max_body_bytes = max_body_bytes
        self.page = (STATIC / "index.html").read_text(encoding="utf-8")
        self.batch_sizes: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        logger.info("stickgen api: models %s (default %s), auth %s", ", ".join(self.models), default_model,
                    "on" if fastapi_app.state.token else "off")

    # -- open endpoints --
    @fastapi_app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @fastapi_app.get("/healthz", tags=["ops"], summary="Liveness of the ingress (never needs a token)")
    async def healthz(self) -> dict:
        return {"status": "ok", "version": __version__}

    # -- /v1 (bearer token when configured) --
    @fastapi_app.get("/v1/models", response_model=ModelList, tags=["animations"], dependencies=[Depends(_bearer)])
    async def list_models(self) -> ModelList:
        return ModelList(default=self.default_model,
                         models=[ModelInfo(id=m, source=u, default=m == self.default_model)
                                 for m, u in self.models.items()])

    @fastapi_app.get("/v1/stats", tags=["ops"], dependencies=[Depends(_bearer)],
                     summary="This ingress replica's counters: responses by status, dynamic batch sizes seen")
    async def stats(self) -> dict:
        return {"responses": dict(self.counts), "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    @fastapi_app.post(
        "/v1/animations", tags=["animations"], dependencies=[Depends(_bearer)],
        summary="Generate one animation",
        response_class=Response,
        responses={200: {"description": "The `.motion` JSON document, or the rendered file",
                         "content": {t: {} for t in MEDIA_TYPES.values()}},
                   401: {"description": "Missing or wrong bearer token"},
                   413: {"description": "Body over the size limit"},
                   422: {"description": "Invalid request; `detail` names the field"},
                   503: {"description": "Queue full or no replica; retry after `Retry-After` seconds"},
                   504: {"description": "Generation took longer than the server's timeout"}})
    async def create_animation(self, body: AnimationRequest, request: Request) -> Response:
        rid = _request_id(request)
        t0 = time.perf_counter()
        try:
            resp = await self._animation(body, rid)
        except HttpError as e:
            self.counts[str(e.status)] += 1
            extra = {"errors": [{"field": e.field, "message": e.detail}]} if e.field else {}
            logger.info("animation request_id=%s status=%d %s", rid, e.status, e.detail)
            return _error(e.status, f"{e.field}: {e.detail}" if e.field else e.detail, rid, e.headers, **extra)
        except Exception:
            self.counts["500"] += 1
            logger.exception("animation request_id=%s failed", rid)
            return _error(500, "internal error while generating; quote the request id when reporting it", rid)
        self.counts[str(resp.status_code)] += 1
        logger.info("animation request_id=%s status=%d model=%s format=%s seconds=%g batch=%s ms=%.0f", rid,
                    resp.status_code, resp.headers.get("x-model"), body.format, body.seconds,
                    resp.headers.get("x-batch-size"), 1000 * (time.perf_counter() - t0))
        return resp

    async def _animation(self, body: AnimationRequest, rid: str) -> Response:
        t0 = time.perf_counter()
        model = body.model or self.default_model
        if model not in self.models:
            raise HttpError(422, f"unknown model {model!r}; served: {', '.join(self.models)}", field="model")
        if body.actions:
            try:
                self._parse_timeline(body.actions, body.seconds, FPS)
            except ValueError as e:
                raise HttpError(422, str(e), field="actions") from None
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        req = GenRequest(body.prompt, body.seconds, seed, body.steps, body.guidance, body.actions or None)
        t1 = time.perf_counter()
        gen: Generated = await self._call(self._handles[model].generate.remote(req), "generation")
        t2 = time.perf_counter()
        if gen.error and gen.status == 503:
            raise HttpError(503, gen.error, {"Retry-After": "30"})
        if gen.error:
            field_name, _, msg = gen.error.partition(": ")
            raise HttpError(422, msg or gen.error, field=field_name if msg else None)
        self.batch_sizes[gen.batch_size] += 1
        if body.format == "json":
            content = motion_document(gen.motion, body.prompt, gen.actions)
        else:
            content = await self._call(self.renderer.render.remote(gen.motion, body.prompt, body.format), "rendering")
        t3 = time.perf_counter()
        ext = "motion.json" if body.format == "json" else body.format
        headers = {"X-Model": model, "X-Checkpoint-Id": gen.checkpoint_id, "X-Seed": str(seed),
                   "X-Batch-Size": str(gen.batch_size), "Content-Disposition": f'inline; filename="stickgen-{seed}.{ext}"',
                   # model: the batched model call; generator: the whole hop (queue, batch wait,
                   # model); output: .motion JSON or rendering; api: everything in this replica
                   "Server-Timing": f"model;dur={gen.batch_ms:.1f}, generator;dur={1000 * (t2 - t1):.1f}, "
                                    f"output;dur={1000 * (t3 - t2):.1f}, api;dur={1000 * (t3 - t0):.1f}"}
        return Response(content, media_type=MEDIA_TYPES[body.format], headers=headers)

    async def _call(self, response, what: str):
        """Await a handle call, mapping Serve's overload and failure signals to HTTP."""
        try:
            return await asyncio.wait_for(response, self.request_timeout_s)
        except BackPressureError as e:
            retry = e.retry_after_s or BACKPRESSURE["retry_after_s"]
            raise HttpError(503, f"server busy: the {what} queue is full; retry in {retry:g} s",
                            {"Retry-After": str(int(np.ceil(retry)))}) from None
        except DeploymentUnavailableError as e:
            raise HttpError(503, f"{what} is unavailable: {e}", {"Retry-After": "5"}) from None
        except asyncio.TimeoutError:
            response.cancel()
            raise HttpError(504, f"{what} took longer than {self.request_timeout_s:g} s") from None
        except RayActorError as e:  # the replica died under the request; a retry goes elsewhere
            raise HttpError(503, f"{what} replica failed: {type(e).__name__}", {"Retry-After": "1"}) from None


# --- building the application ----------------------------------------------------------------------

def _cluster_has_gpus() -> bool:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def generator_placement(a: AppArgs) -> tuple[dict, str, int]:
    """(ray_actor_options, device, torch threads) for a Generator replica."""
    device = a.device
    if device == "auto":
        device = "cuda" if _cluster_has_gpus() else "cpu"
    if device == "cuda":
        return {"num_gpus": a.gpus_per_replica, "num_cpus": 1}, "cuda", 1
    return {"num_cpus": a.cpus_per_replica}, "cpu", max(1, int(a.cpus_per_replica))


def build_graph(args: dict | AppArgs | None = None, *, options: dict[str, dict] | None = None):
    """The deployment graph for `args` (AppArgs fields). options: per-deployment `.options()`
    overrides {"Api"|"Generator"|"Renderer": {...}}, the same thing a config file's `deployments:`
    section does (tests and benchmarks use it for short autoscaling delays and small CPU shares)."""
    a = parse_args(args)
    opts = {k: dict(v) for k, v in (options or {}).items()}
    unknown = set(opts) - {"Api", "Generator", "Renderer"}
    if unknown:
        raise ConfigError(f"options: unknown deployment(s) {sorted(unknown)}")
    actor, device, threads = generator_placement(a)
    gen_opts = {"ray_actor_options": actor, **opts.get("Generator", {})}
    generator = Generator.options(**gen_opts).bind(a.models, a.default, device, threads)
    renderer = Renderer.options(**opts.get("Renderer", {})).bind()
    return Api.options(**opts.get("Api", {})).bind(generator, renderer, a.models, a.default, a.max_body_bytes,
                                                   a.request_timeout_s, a.token_env)


def build_app(args: dict):
    """Application builder for `serve run stickgen.serve.app:build_app key=value ...` and a config
    file's `import_path` + `args:` (Serve requires exactly one parameter)."""
    return build_graph(args)


def __getattr__(name: str):
    # `stickgen.serve.app:app` builds from STICKGEN_MODELS / STICKGEN_CHECKPOINT on first access,
    # not at import, so importing this module never needs a checkpoint.
    if name == "app":
        return build_app({})
    raise AttributeError(name)
