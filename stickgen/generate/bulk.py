"""Bulk offline generation on Ray Data: a prompt list in, a quality-checked animation dataset out.

    stickgen generate-bulk PROMPTS --checkpoint DIR|hf://... --out DIR [-k K] [--render gif] [--cluster]
    python -m jobs.generate PROMPTS --checkpoint ... --out DIR ...        (the same, as a Ray job)

Plan (one streaming execution per phase; these are the operators `ds.stats()` shows):

1. prompts   the driver reads PROMPTS (.txt one per line, .jsonl or .parquet with `prompt` and
             optional `seed`, `seconds`, `actions`), validates every line (a bad line gets a fate
             naming the field; it never stops the job) and expands the good ones into work items
             (prompt, sample k) with deterministic ids and seeds (`item_seed`).
2. embed     from_blocks(unique prompts not yet in DIR/embeddings.parquet, sorted, in chunks)
             -> ActorPoolMapOperator[MapBatches(TextEmbedder)] (the preprocess pipeline's encoder
             actor). Each prompt is embedded once per output folder, whatever K and the retries.
3. round r   for r = 0 .. max_retries, over the items whose next attempt is r:
             from_blocks(items + embeddings, one block per sampler batch)
             -> ActorPoolMapOperator[MapBatches(Sampler)]           the model, held by actors
             -> TaskPoolMapOperator[MapBatches(score_batch)->MapBatches(render_batch)->MapBatches(write_batch)]
             Sampler actors only sample (num_gpus per actor when the cluster has GPUs, a small
             num_cpus; pool size from `ray.cluster_resources()`). CPU tasks score each clip with
             the motion core's checks (`quality_report`), render the clips that are final (when
             asked) and write them as one Parquet shard per block. A clip failing the gate is not
             written: it goes to round r + 1 with a new seed; in the last round it is kept with
             `passed_quality=False`. The driver only sees one small record per clip.

Output layout (DIR must be shared storage on a multi-node cluster):

    DIR/run.json              settings the folder was made with (a re-run must match them)
    DIR/prompts.jsonl         every input line with its fate (ok / bad + field + error / duplicate
                              / blank) and, for ok lines, the samples written and passed
    DIR/embeddings.parquet    text -> embedding cache (encoder named in the metadata)
    DIR/data/part-<h>.parquet clips in `data.schema.window_schema(dim, encoder, generated=True)`;
                              <h> hashes the shard's clip ids, so a rewrite has the same name
    DIR/attempts.jsonl        attempts that failed the gate and were retried (id, attempt, seed,
                              quality): a resumed job continues at the next attempt
    DIR/renders/<prompt_id>/<k>.<gif|mp4|svg>
    DIR/summary.json          counts, pass rate, throughput, per-stage times, actor busy share

Deterministic and resumable: a clip's seed is a function of (prompt spec, k, attempt) only, and
its motion of (prompt, seed, checkpoint) only (`MotionGenerator` draws each sample's noise from
its own seed), so a batch's make-up changes nothing but float rounding. Shards and renders are
written to a temporary name and renamed into place, so a preempted job leaves whole files only;
a re-run reads the ids already in DIR/data and generates the rest (no duplicates, no gaps).
One job per DIR at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..data.schema import SCHEMA_VERSION, array_column, column_numpy, rows_to_table, window_schema
from ..errors import ConfigError, StickgenError
from ..motion.convert import split_of
from ..motion.physics import root_physics
from ..motion.quality import QUALITY_COLUMNS, QualityThresholds, quality_report
from ..motion.skeleton import V3_DIM
from ..motion.timing import FPS, WINDOW, cut_window
from ..text.actions import ACTIONS, IDLE, action_from_text, parse_timeline
from .sample import MAX_SECONDS, MIN_SECONDS, GenerationError, validate_request

RENDER_FORMATS = ("none", "gif", "mp4", "svg")
SEED_SPACE = 2**31  # hashed seeds; an explicit seed may be up to MAX_SEED
MAX_SEED = 2**62
SUMMARY_VERSION = 1

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class QualityGate:
    """A clip passes when quality >= min_quality and (if required) `physics_valid` holds: the
    SFT card's bar (see data/curate.py), so a passing clip is one curation would keep for SFT."""

    min_quality: float = 0.5
    require_physics_valid: bool = True

    def __post_init__(self):
        if not 0.0 <= self.min_quality <= 1.0:
            raise ConfigError(f"min_quality: {self.min_quality} is out of range [0, 1]")

    def passes(self, q: dict) -> bool:
        return bool(q["finite"]) and q["quality"] >= self.min_quality and (
            bool(q["physics_valid"]) or not self.require_physics_valid)


@dataclass(frozen=True)
class BulkConfig:
    """One bulk job. Settings that change the output (everything but the resources) are recorded
    in DIR/run.json; a re-run on the same DIR must use the same ones."""

    prompts: str
    checkpoint: str
    out: str
    samples_per_prompt: int = 1
    seconds: float = MAX_SECONDS       # default clip length for lines that do not give one
    steps: int | None = None           # None: the checkpoint's sampler default
    guidance: float | None = None      # None: the checkpoint's sampler default
    render: str = "none"               # none | gif | mp4 | svg
    max_retries: int = 2               # regenerations of a clip failing the gate (new seed each)
    gate: QualityGate = field(default_factory=QualityGate)
    # resources (not recorded: they change speed, not output)
    batch_size: int | None = None      # clips per sampler call; None: 1024 per GPU actor, 32 on CPU
    actors: int | None = None          # sampler actors; None: from the cluster's resources
    gpus_per_actor: float = 1.0        # fractional values put several actors on one GPU
    actor_cpus: float | None = None    # CPUs reserved per sampler actor; None: see plan_actors
    threads_per_actor: int | None = None  # torch threads per CPU actor; None: CPUs / actors
    embed_chunk: int = 64              # prompts per encoder call

    def __post_init__(self):
        if self.samples_per_prompt < 1:
            raise ConfigError(f"samples_per_prompt: must be >= 1, got {self.samples_per_prompt}")
        if not MIN_SECONDS <= float(self.seconds) <= MAX_SECONDS:
            raise ConfigError(f"seconds: {self.seconds} is out of range [{MIN_SECONDS}, {MAX_SECONDS}]")
        if self.steps is not None and not 1 <= int(self.steps) <= 100:
            raise ConfigError(f"steps: {self.steps} is out of range [1, 100]")
        if self.guidance is not None and not 0.0 <= float(self.guidance) <= 20.0:
            raise ConfigError(f"guidance: {self.guidance} is out of range [0, 20]")
        if self.render not in RENDER_FORMATS:
            raise ConfigError(f"render: {self.render!r}; choose one of {', '.join(RENDER_FORMATS)}")
        if not 0 <= self.max_retries <= 20:
            raise ConfigError(f"max_retries: {self.max_retries} is out of range [0, 20]")
        for name in ("batch_size", "actors", "threads_per_actor"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name}: must be >= 1, got {v}")
        if self.gpus_per_actor <= 0 or (self.actor_cpus is not None and self.actor_cpus <= 0):
            raise ConfigError("gpus_per_actor and actor_cpus must be > 0")
        if self.embed_chunk < 1:
            raise ConfigError(f"embed_chunk: must be >= 1, got {self.embed_chunk}")


# ----------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSpec:
    """One valid input line. `prompt_id` hashes the spec, so it does not move when lines are
    inserted or reordered; an identical second line is a duplicate (it would give identical clips)."""

    prompt_id: str
    line: int
    prompt: str
    seconds: float
    actions: str | None
    seed: int | None


@dataclass
class PromptFate:
    line: int
    status: str                 # ok | bad | duplicate | blank
    prompt: str | None = None
    prompt_id: str | None = None
    field: str | None = None    # bad: the offending field
    error: str | None = None    # bad: what is wrong; duplicate: which line it repeats


def prompt_id_of(prompt: str, seconds: float, actions: str | None, seed: int | None) -> str:
    key = json.dumps({"prompt": prompt, "seconds": round(float(seconds), 4), "actions": actions or None,
                      "seed": seed}, sort_keys=True)
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def _check_line(rec: dict, default_seconds: float) -> tuple[str, float, str | None, int | None]:
    """Validated (prompt, seconds, actions, seed) of one input record; GenerationError names the field."""
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError("prompt: missing or empty")
    prompt = prompt.strip()
    seconds = rec.get("seconds")
    if seconds is None:
        seconds = default_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise GenerationError(f"seconds: {seconds!r} is not a number")
    validate_request(prompt, float(seconds), None, None)  # prompt length, seconds range
    seed = rec.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
            raise GenerationError(f"seed: {seed!r} must be an integer in [0, 2**62]")
        seed = int(seed)
    actions = rec.get("actions")
    if actions is not None and not (isinstance(actions, str) and actions.strip() == ""):
        if not isinstance(actions, str):
            raise GenerationError(f"actions: {actions!r} must be a timeline string like 'walk:0-4,wave:4-10'")
        try:
            parse_timeline(actions, float(seconds), FPS)
        except ValueError as e:
            raise GenerationError(f"actions: {e}") from None
        for part in actions.split(","):
            start = float(part.split(":")[1].split("-")[0])
            if start >= float(seconds):
                raise GenerationError(f"actions: entry {part.strip()!r} starts at or after the clip's end "
                                      f"({float(seconds):g} s)")
        actions = actions.strip()
    else:
        actions = None
    return prompt, float(seconds), actions, seed


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, record) per input line; a record is a dict, None (blank line) or an
    exception (unreadable line)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield i, ({"prompt": line} if line.strip() else None)
    elif suffix in (".jsonl", ".ndjson"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                yield i, None
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, GenerationError(f"line: not valid JSON ({e.msg} at column {e.colno})")
                continue
            yield i, rec if isinstance(rec, dict) else GenerationError(
                f"line: expected a JSON object, got {type(rec).__name__}")
    elif suffix == ".parquet":
        table = pq.read_table(path)
        if "prompt" not in table.column_names:
            raise ConfigError(f"{path}: no 'prompt' column (columns: {', '.join(table.column_names)})")
        for i, rec in enumerate(table.to_pylist(), 1):
            yield i, {k: v for k, v in rec.items() if v is not None}
    else:
        raise ConfigError(f"{path}: unsupported prompts file {path.suffix!r}; use .txt, .jsonl or .parquet")


KNOWN_FIELDS = ("prompt", "seconds", "seed", "actions")


def read_prompts(path: str | os.PathLike, default_seconds: float = MAX_SECONDS) -> tuple[list[PromptSpec], list[PromptFate], list[str]]:
    """(valid specs, a fate per input line, ignored field names). Never raises for a bad line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts: {p} is not a file")
    specs: list[PromptSpec] = []
    fates: list[PromptFate] = []
    seen: dict[str, int] = {}
    ignored: Counter = Counter()
    for line, rec in _records(p):
        if rec is None:
            fates.append(PromptFate(line, "blank"))
            continue
        if isinstance(rec, GenerationError):
            fates.append(PromptFate(line, "bad", field="line", error=str(rec)))
            continue
        ignored.update(k for k in rec if k not in KNOWN_FIELDS)
        shown = rec.get("prompt") if isinstance(rec.get("prompt"), str) else None
        try:
            prompt, seconds, actions, seed = _check_line(rec, default_seconds)
        except GenerationError as e:
            fates.append(PromptFate(line, "bad", prompt=shown, field=str(e).split(":")[0], error=str(e)))
            continue
        pid = prompt_id_of(prompt, seconds, actions, seed)
        if pid in seen:
            fates.append(PromptFate(line, "duplicate", prompt=prompt, prompt_id=pid,
                                    error=f"same prompt, seconds, actions and seed as line {seen[pid]}"))
            continue
        seen[pid] = line
        specs.append(PromptSpec(pid, line, prompt, seconds, actions, seed))
        fates.append(PromptFate(line, "ok", prompt=prompt, prompt_id=pid))
    return specs, fates, sorted(ignored)


# ----------------------------------------------------------------------------- work items


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def item_seed(spec: PromptSpec, k: int, attempt: int = 0) -> int:
    """The seed of sample k, attempt `attempt`: the line's seed + k when it gives one, else a hash
    of (prompt id, k); each retry hashes the first seed with its attempt number."""
    base = spec.seed + k if spec.seed is not None else _h(f"{spec.prompt_id}:{k}") % SEED_SPACE
    return base if attempt == 0 else _h(f"{base}:retry:{attempt}") % SEED_SPACE


def clip_id_of(prompt_id: str, k: int) -> str:
    return f"generated/{prompt_id}.{k:04d}"


def item_id(prompt_id: str, k: int) -> str:
    """The dataset row id (schema: `<clip_id>:<window start>`)."""
    return f"{clip_id_of(prompt_id, k)}:00000"


def render_path(out: str | os.PathLike, prompt_id: str, k: int, fmt: str) -> Path:
    return Path(out) / "renders" / prompt_id / f"{k:04d}.{fmt}"


ITEM_SCHEMA = [("id", pa.string()), ("prompt_id", pa.string()), ("k", pa.int32()), ("prompt", pa.string()),
               ("seconds", pa.float32()), ("actions", pa.string()), ("seed", pa.int64()), ("attempt", pa.int16())]


def item_blocks(items: Sequence[dict], emb: dict[str, np.ndarray], dim: int, batch: int) -> list[pa.Table]:
    """Work items as Arrow blocks of `batch` rows (one sampler call each), sorted by length then
    prompt so a batch holds one clip length and the samples of a prompt stay together."""
    items = sorted(items, key=lambda it: (it["seconds"], it["prompt_id"], it["k"]))
    blocks = []
    for i in range(0, len(items), batch):
        part = items[i:i + batch]
        cols = {name: pa.array([it[name] for it in part], t) for name, t in ITEM_SCHEMA}
        e = np.stack([emb[it["prompt"]] for it in part]).astype(np.float32)
        cols["text_embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), dim)
        blocks.append(pa.table(cols))
    return blocks


# ----------------------------------------------------------------------------- stages


class Sampler:
    """Ray Data actor holding the model: items -> `motion` (padded to the 250-frame window) and
    `n_frames`. It only samples (scoring, rendering and writing run in CPU tasks downstream), and
    stamps every output row with its batch's (actor, start, end, seconds in generate) so the
    driver can measure how busy the pool was."""

    def __init__(self, checkpoint: str, checkpoint_id: str, steps: int, guidance: float,
                 device: str = "cpu", threads: int | None = None):
        from .sample import MotionGenerator

        self.gen = MotionGenerator(checkpoint, device=device, threads=threads)
        if self.gen.checkpoint_id != checkpoint_id:
            raise StickgenError(f"checkpoint {checkpoint}: this worker sees weights {self.gen.checkpoint_id}, "
                                f"the driver saw {checkpoint_id} (did an hf:// revision move?)", reason="checkpoint")
        self.steps, self.guidance = steps, guidance
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.time()
        p0 = time.perf_counter()
        dim = batch.schema.field("text_embedding").type.list_size
        anims = self.gen.generate(
            batch["prompt"].to_pylist(), seconds=batch["seconds"].to_pylist(), seeds=batch["seed"].to_pylist(),
            steps=self.steps, guidance=self.guidance, actions=[a or None for a in batch["actions"].to_pylist()],
            text_embeddings=column_numpy(batch["text_embedding"], (dim,)))
        busy = time.perf_counter() - p0
        motion = np.empty((len(anims), WINDOW, V3_DIM), np.float32)
        for i, a in enumerate(anims):
            motion[i] = cut_window(a.motion, 0)[0]  # pad by repeating the last frame (masked later)
        n = len(anims)
        return (batch.append_column("motion", array_column(motion))
                .append_column("n_frames", pa.array([len(a.motion) for a in anims], pa.int16()))
                .append_column("_actor", pa.array([self.actor] * n, pa.string()))
                .append_column("_t0", pa.array([t0] * n, pa.float64()))
                .append_column("_t1", pa.array([time.time()] * n, pa.float64()))
                .append_column("_busy", pa.array([busy] * n, pa.float64())))


def score_batch(batch: pa.Table, gate: QualityGate, last_attempt: int,
                thresholds: QualityThresholds = QualityThresholds()) -> pa.Table:
    """Quality columns (`motion.quality.quality_report` on the valid frames), `passed`, and
    `final` = passed or this was the last attempt (final clips are rendered and written)."""
    t0 = time.perf_counter()
    motion = column_numpy(batch["motion"], (WINDOW, V3_DIM))
    n = batch["n_frames"].to_numpy()
    att = batch["attempt"].to_numpy()
    reps = [quality_report(motion[i, :n[i]], FPS, th=thresholds) for i in range(len(n))]
    passed = [gate.passes(q) for q in reps]
    final = [p or int(a) >= last_attempt for p, a in zip(passed, att)]
    for c in QUALITY_COLUMNS:
        t = pa.bool_() if c in ("finite", "physics_valid") else pa.float32()
        batch = batch.append_column(c, pa.array([q[c] for q in reps], t))
    dt = (time.perf_counter() - t0) / max(1, len(n))
    return (batch.append_column("passed", pa.array(passed, pa.bool_()))
            .append_column("final", pa.array(final, pa.bool_()))
            .append_column("_score_s", pa.array([dt] * len(n), pa.float64())))


def render_batch(batch: pa.Table, out: str, fmt: str) -> pa.Table:
    """Render every final clip to DIR/renders/<prompt_id>/<k>.<fmt> (written atomically by
    `render`). A CPU task stage: never on the model actors."""
    from ..render import render

    t0 = time.perf_counter()
    motion = column_numpy(batch["motion"], (WINDOW, V3_DIM))
    n = batch["n_frames"].to_numpy()
    final = batch["final"].to_pylist()
    pids, ks, prompts = batch["prompt_id"].to_pylist(), batch["k"].to_pylist(), batch["prompt"].to_pylist()
    done = 0
    for i in range(len(n)):
        if final[i]:
            render(motion[i, :n[i]], render_path(out, pids[i], ks[i], fmt), fps=FPS, title=prompts[i][:60])
            done += 1
    dt = (time.perf_counter() - t0) / max(1, done)
    return batch.append_column("_render_s", pa.array([dt if f else 0.0 for f in final], pa.float64()))


def frame_actions(prompt: str, actions: str | None, seconds: float, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-frame action ids [250] and the clip-level id: the timeline when given (its most
    frequent action over valid frames), else the action the prompt names (idle if none)."""
    n = int(mask.sum())
    if actions:
        ids = np.zeros(WINDOW, np.int16)
        ids[:n] = parse_timeline(actions, seconds, FPS)[:n]
        clip = int(np.bincount(ids[:n]).argmax())
        return ids, clip
    aid = action_from_text(prompt)
    aid = IDLE if aid is None else aid
    return np.where(mask, aid, 0).astype(np.int16), aid


def window_row(r: dict, motion: np.ndarray, emb: np.ndarray, checkpoint_id: str) -> dict:
    """One final clip as a dataset row (`data.schema`), with the generated fields."""
    n = int(r["n_frames"])
    mask = np.zeros(WINDOW, bool)
    mask[:n] = True
    acts, aid = frame_actions(r["prompt"], r["actions"], float(r["seconds"]), mask)
    clip_id = clip_id_of(r["prompt_id"], r["k"])
    row = {
        "id": r["id"], "source": "generated", "file": r["prompt_id"], "clip_id": clip_id,
        "window_start": 0, "fps": FPS, "n_frames": n, "mask": mask, "motion": motion, "actions": acts,
        "physics": root_physics(motion, FPS, mask), "camera": None,
        "description": r["prompt"], "all_descriptions": [r["prompt"]], "text_embedding": emb,
        "action_label": ACTIONS[aid], "action_id": aid, "style": "normal",
        "view": None, "view_angle": None,  # the model draws in 2D: there was no camera
        # by prompt, not by clip: the K samples of a prompt never straddle train/val/test
        "split": split_of(f"generated/{r['prompt_id']}"),
        "prompt": r["prompt"], "seed": int(r["seed"]), "checkpoint_id": checkpoint_id,
        "attempt": int(r["attempt"]), "passed_quality": bool(r["passed"]),
    }
    row.update({c: r[c] for c in QUALITY_COLUMNS})
    return row


RESULT_COLUMNS = ("id", "prompt_id", "k", "seed", "attempt", "passed", "final", "quality", "physics_valid",
                  "_actor", "_t0", "_t1", "_busy", "_score_s")


def shard_name(ids: Sequence[str]) -> str:
    return "part-" + hashlib.blake2b("\n".join(sorted(ids)).encode(), digest_size=8).hexdigest() + ".parquet"


def write_batch(batch: pa.Table, out: str, schema: pa.Schema, checkpoint_id: str) -> pa.Table:
    """Write the final clips of a block as one shard DIR/data/part-<hash of ids>.parquet (temp
    name + rename: a killed task leaves no partial shard; a retried one rewrites the same file).
    Returns one small record per clip (final or not) for the driver."""
    t0 = time.perf_counter()
    final = batch["final"].to_pylist()
    idx = [i for i, f in enumerate(final) if f]
    shard = None
    if idx:
        sub = batch.take(idx)
        motion = column_numpy(sub["motion"], (WINDOW, V3_DIM))
        dim = sub.schema.field("text_embedding").type.list_size
        emb = column_numpy(sub["text_embedding"], (dim,))
        recs = sub.drop_columns(["motion", "text_embedding"]).to_pylist()
        rows = [window_row(r, motion[i], emb[i], checkpoint_id) for i, r in enumerate(recs)]
        shard = shard_name([r["id"] for r in rows])
        data = Path(out) / "data"
        data.mkdir(parents=True, exist_ok=True)
        tmp = data / f".{shard}.tmp-{os.getpid()}"
        pq.write_table(rows_to_table(rows, schema), tmp, compression="zstd")
        os.replace(tmp, data / shard)
    dt = (time.perf_counter() - t0) / max(1, len(idx))
    res = batch.select([c for c in RESULT_COLUMNS])
    res = res.append_column("shard", pa.array([shard if f else None for f in final], pa.string()))
    res = res.append_column("_write_s", pa.array([dt if f else 0.0 for f in final], pa.float64()))
    if "_render_s" in batch.column_names:
        res = res.append_column("_render_s", batch["_render_s"])
    return res


# ----------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str
    batch_size: int
    task_cpus: float   # per score/render/write task

    def as_dict(self) -> dict:
        return asdict(self)


def plan_actors(cfg: BulkConfig, cpus: float, gpus: float, n_items: int) -> ActorPlan:
    """The sampler pool from the cluster's resources.

    GPUs: one actor per `gpus_per_actor` (0.5 -> two per GPU), 1 CPU each (less on a CPU-poor
    node); batches of 1024. CPU only: actors of 2 torch threads each, leaving one CPU for the
    tasks; their CPU reservation is capped so that actors never hold every CPU — an actor pool
    that takes every CPU starves the other operators and hangs without an error
    (ray-2.60-notes §1)."""
    spare = max(cpus - 1.0, 0.5)
    if gpus > 0:
        n = cfg.actors or max(1, int(math.floor(gpus / cfg.gpus_per_actor + 1e-9)))
        num_cpus = cfg.actor_cpus or min(1.0, spare / n)
        plan = dict(num_gpus=cfg.gpus_per_actor, device="cuda", threads=cfg.threads_per_actor or 1,
                    batch=cfg.batch_size or 1024)
    else:
        threads = cfg.threads_per_actor
        n = cfg.actors or max(1, int(spare // (threads or 2)))
        threads = threads or max(1, int(round(cpus / n)))
        num_cpus = cfg.actor_cpus or min(float(threads), spare / n)
        plan = dict(num_gpus=0.0, device="cpu", threads=threads, batch=cfg.batch_size or 32)
    n = max(1, min(n, math.ceil(n_items / plan["batch"]))) if n_items else n
    free = cpus - n * num_cpus
    task_cpus = 1.0 if free >= 2 else max(0.1, min(0.5, free / 2))
    return ActorPlan(n, round(num_cpus, 3), plan["num_gpus"], plan["threads"], plan["device"], plan["batch"],
                     round(task_cpus, 3))


# ----------------------------------------------------------------------------- output folder


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean_temp(out: Path) -> int:
    """Remove the temp files a killed run left (dot-files: `.<name>.tmp-<pid>` from this module,
    `.<stem>.<random>.<ext>` from `render`). Finished files are never touched."""
    n = 0
    for p in [*out.glob(".*.tmp-*"), *(out / "data").glob(".*"), *(out / "renders").glob("*/.*")]:
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def written_ids(out: str | os.PathLike) -> dict[str, list[str]]:
    """id -> shards holding it, over DIR/data/part-*.parquet (reads only the id column). A shard
    that cannot be read (never seen with the rename protocol) is moved to DIR/data/corrupt/."""
    data = Path(out) / "data"
    where: dict[str, list[str]] = defaultdict(list)
    for f in sorted(data.glob("part-*.parquet")):
        try:
            ids = pq.read_table(f, columns=["id"])["id"].to_pylist()
        except (OSError, pa.ArrowException) as e:
            (data / "corrupt").mkdir(exist_ok=True)
            os.replace(f, data / "corrupt" / f.name)
            print(f"[generate-bulk] unreadable shard {f.name} moved to data/corrupt/ ({e})", flush=True)
            continue
        for i in ids:
            where[i].append(f.name)
    return where


def read_attempts(out: Path) -> dict[str, int]:
    """id -> the last attempt that failed the gate (from DIR/attempts.jsonl; a torn last line
    from a killed run is ignored)."""
    last: dict[str, int] = {}
    p = out / "attempts.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
                last[r["id"]] = max(last.get(r["id"], -1), int(r["attempt"]))
            except (ValueError, KeyError, TypeError):
                continue
    return last


RECORDED = ("checkpoint_id", "steps", "guidance", "seconds", "samples_per_prompt", "max_retries", "gate",
            "render", "text_encoder", "schema_version")


def check_run_settings(out: Path, settings: dict) -> None:
    """Write DIR/run.json, or check a re-run matches it (ConfigError names the first difference)."""
    p = out / "run.json"
    if p.exists():
        old = json.loads(p.read_text())
        for k in RECORDED:
            if k in old and old[k] != settings[k]:
                raise ConfigError(f"{k}: {out} was made with {k}={old[k]!r}, this run asks for {settings[k]!r}; "
                                  "use the same settings to resume, or a new --out")
        return
    _atomic_write(p, json.dumps(settings, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------- embedding


def embed_prompts(texts: Sequence[str], encoder: str, dim: int, out: Path, chunk: int, cpus: float,
                  gpus: float, stages: list[dict]) -> dict[str, np.ndarray]:
    """text -> [dim] float32 for every text, from DIR/embeddings.parquet plus one actor-pool pass
    over the texts it lacks (sorted, in fixed chunks: one encoder call each)."""
    import ray

    cache = out / "embeddings.parquet"
    emb: dict[str, np.ndarray] = {}
    if cache.exists():
        t = pq.read_table(cache)
        if (t.schema.metadata or {}).get(b"stickgen.text_encoder", b"").decode() == encoder:
            vecs = column_numpy(t["embedding"], (dim,))
            emb = dict(zip(t["text"].to_pylist(), vecs))
    todo = sorted(set(texts) - set(emb))
    if todo:
        ds = embed_dataset(todo, encoder, chunk, cpus, gpus)
        tables = ray.get(ds.to_arrow_refs())
        new = pa.concat_tables(tables) if tables else None
        if new is not None and len(new):
            enc = new["encoder"][0].as_py()
            if enc != encoder:
                raise ConfigError(f"text encoder: the embedder loaded {enc!r}, the checkpoint needs {encoder!r}")
            emb.update(zip(new["text"].to_pylist(), column_numpy(new["embedding"], (dim,))))
        stages.extend(_stage_stats(ds, "embed"))
        texts_all = sorted(emb)
        vecs = np.stack([emb[t] for t in texts_all]).astype(np.float32)
        table = pa.table({"text": pa.array(texts_all, pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim)})
        table = table.replace_schema_metadata({"stickgen.text_encoder": encoder})
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, cache)
    missing = [t for t in texts if t not in emb]
    if missing:
        raise RuntimeError(f"{len(missing)} prompt(s) have no embedding after the embed stage (first: {missing[0]!r})")
    return emb


def embed_dataset(texts: Sequence[str], encoder: str, chunk: int, cpus: float, gpus: float):
    """The encoder pass of `embed_prompts`, lazily built: sorted unique texts in chunks -> one
    TextEmbedder actor (on a GPU when the cluster has one) -> text, embedding, encoder."""
    import ray
    from ray.data import ActorPoolStrategy

    from ..text.embedder import TextEmbedder, text_chunks

    on_gpu = gpus >= 1
    return ray.data.from_blocks(text_chunks(texts, chunk)).map_batches(
        # one block per chunk, all but the last exactly `chunk` rows: batches of `chunk` rows are
        # the chunks (Ray Data requires an explicit batch_size for an operator asking for GPUs)
        TextEmbedder, batch_size=chunk, batch_format="pyarrow",
        fn_constructor_kwargs={"encoder": encoder, "batch_size": chunk, "device": "cuda" if on_gpu else "cpu",
                               "threads": max(1, min(8, int(cpus) - 1))},
        compute=ActorPoolStrategy(size=1), num_cpus=min(1.0, max(cpus - 1, 0.25)),
        **({"num_gpus": 1} if on_gpu else {}))


def _stage_stats(ds, phase: str) -> list[dict]:
    """Per-operator times of an executed dataset (`ds.stats()`, structured)."""
    try:
        s = ds.get_stats_summary()
    except Exception as e:  # noqa: BLE001 - stats are diagnostics; never fail a finished phase on them
        return [{"phase": phase, "error": f"{type(e).__name__}: {e}"}]
    ops, todo = [], [s]
    while todo:  # the summary chains upstream operators through `parents`
        cur = todo.pop()
        ops[:0] = cur.operators_stats
        todo.extend(cur.parents)
    out = []
    for op in ops:
        rec = {"phase": phase, "operator": op.operator_name, "wall_s": round(op.time_total_s or 0.0, 3)}
        if op.wall_time:
            rec["task_wall_s"] = round(op.wall_time.sum, 3)
        if op.cpu_time:
            rec["task_cpu_s"] = round(op.cpu_time.sum, 3)
        if op.output_num_rows:
            rec["rows"] = int(op.output_num_rows.sum)
        if op.stage_time:  # fused operators: seconds per stage, e.g. score_batch / render_batch / write_batch
            names = [x.split("(", 1)[-1].rstrip(")") for x in op.operator_name.split("->")]
            secs = [round(x.sum, 3) for x in op.stage_time]
            rec["stage_s"] = dict(zip(names, secs)) if len(names) == len(secs) else secs
        out.append(rec)
    return out


@contextlib.contextmanager
def _data_context():
    import ray

    ctx = ray.data.DataContext.get_current()
    old = (ctx.per_stage_map_timing,)
    ctx.per_stage_map_timing = True
    try:
        yield ctx
    finally:
        (ctx.per_stage_map_timing,) = old


# ----------------------------------------------------------------------------- the job


def _log(msg: str) -> None:
    print(f"[generate-bulk {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def round_dataset(todo: list[dict], emb: dict[str, np.ndarray], dim: int, plan: ActorPlan, cfg: BulkConfig,
                  schema: pa.Schema, checkpoint_id: str, steps: int, guidance: float):
    """One round's plan: items -> Sampler actors -> score -> (render) -> write, lazily built."""
    import ray
    from ray.data import ActorPoolStrategy

    n_act = max(1, min(plan.actors, math.ceil(len(todo) / plan.batch_size)))
    task = {"batch_size": None, "batch_format": "pyarrow", "num_cpus": plan.task_cpus}
    ds = ray.data.from_blocks(item_blocks(todo, emb, dim, plan.batch_size))
    ds = ds.map_batches(
        Sampler, batch_size=plan.batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"checkpoint": cfg.checkpoint, "checkpoint_id": checkpoint_id, "steps": steps,
                               "guidance": guidance, "device": plan.device, "threads": plan.threads},
        compute=ActorPoolStrategy(size=n_act), num_cpus=plan.num_cpus,
        **({"num_gpus": plan.num_gpus} if plan.num_gpus else {}))
    ds = ds.map_batches(score_batch, fn_kwargs={"gate": cfg.gate, "last_attempt": cfg.max_retries}, **task)
    if cfg.render != "none":
        ds = ds.map_batches(render_batch, fn_kwargs={"out": str(cfg.out), "fmt": cfg.render}, **task)
    return ds.map_batches(write_batch, fn_kwargs={"out": str(cfg.out), "schema": schema,
                                                  "checkpoint_id": checkpoint_id}, **task)


def run_bulk(cfg: BulkConfig, *, address: str | None = None, verbose: bool = True) -> dict:
    """Run (or resume) a bulk job on the Ray cluster this process is connected to (`address` is
    passed to `ray.init` when Ray is not initialised yet). Returns the summary also written to
    DIR/summary.json."""
    import ray

    from .sample import MotionGenerator

    log = _log if verbose else (lambda m: None)
    t_start = time.perf_counter()
    out = Path(cfg.out)
    specs, fates, ignored = read_prompts(cfg.prompts, cfg.seconds)
    gen = MotionGenerator(cfg.checkpoint)  # the driver's copy: checkpoint id, config, sampler defaults
    steps = int(cfg.steps or gen.default_steps)
    guidance = float(gen.default_guidance if cfg.guidance is None else cfg.guidance)
    encoder, dim = gen.config["text_encoder"]["name"], int(gen.config["text_encoder"]["dim"])
    checkpoint_id = gen.checkpoint_id
    del gen
    settings = {"checkpoint": cfg.checkpoint, "checkpoint_id": checkpoint_id, "steps": steps, "guidance": guidance,
                "seconds": float(cfg.seconds), "samples_per_prompt": cfg.samples_per_prompt,
                "max_retries": cfg.max_retries, "gate": asdict(cfg.gate), "render": cfg.render,
                "text_encoder": encoder, "schema_version": SCHEMA_VERSION}
    out.mkdir(parents=True, exist_ok=True)
    check_run_settings(out, settings)
    _clean_temp(out)

    # work items and what is already done
    K = cfg.samples_per_prompt
    done = written_ids(out)
    failed_before = read_attempts(out)
    items = []
    for s in specs:
        for k in range(K):
            iid = item_id(s.prompt_id, k)
            if iid in done:
                continue
            nxt = min(failed_before.get(iid, -1) + 1, cfg.max_retries)
            items.append({"id": iid, "prompt_id": s.prompt_id, "k": k, "prompt": s.prompt, "seconds": s.seconds,
                          "actions": s.actions or "", "spec": s, "next": nxt})
    n_total = len(specs) * K
    log(f"{len(specs)} prompts ok, {sum(f.status == 'bad' for f in fates)} bad, "
        f"{sum(f.status == 'duplicate' for f in fates)} duplicate; {n_total} clips, "
        f"{n_total - len(items)} already written, {len(items)} to generate")

    if not ray.is_initialized():
        ray.init(address=address)
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
    plan = plan_actors(cfg, cpus, gpus, len(items))
    schema = window_schema(dim, encoder, generated=True)
    stages: list[dict] = []
    records: list[pa.Table] = []
    t_gen0 = time.perf_counter()
    with _data_context():
        emb = embed_prompts([it["prompt"] for it in items], encoder, dim, out, cfg.embed_chunk, cpus, gpus, stages) \
            if items else {}
        t_embed = time.perf_counter() - t_gen0
        with open(out / "attempts.jsonl", "a") as ledger:
            for r in range(cfg.max_retries + 1):
                todo = [it for it in items if it["next"] == r]
                if not todo:
                    continue
                for it in todo:
                    it["seed"], it["attempt"] = item_seed(it["spec"], it["k"], r), r
                ds = round_dataset(todo, emb, dim, plan, cfg, schema, checkpoint_id, steps, guidance)
                log(f"round {r}: {len(todo)} clips ({plan.device}, batch {plan.batch_size})")
                by_id = {it["id"]: it for it in todo}
                for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    records.append(b)
                    for rec in b.filter(pc.invert(b["final"])).to_pylist():  # failed the gate: next round
                        ledger.write(json.dumps({"id": rec["id"], "attempt": rec["attempt"], "seed": rec["seed"],
                                                 "quality": round(rec["quality"], 4),
                                                 "physics_valid": rec["physics_valid"]}) + "\n")
                        by_id[rec["id"]]["next"] = r + 1
                    ledger.flush()
                stages.extend(_stage_stats(ds, f"round_{r}"))
                log(f"round {r} done at {time.perf_counter() - t_gen0:.1f} s")
    t_gen = time.perf_counter() - t_gen0

    summary = _summarize(cfg, out, settings, specs, fates, ignored, n_total, len(items), records, stages, plan,
                         t_embed, t_gen, time.perf_counter() - t_start)
    _atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    log(f"wrote {summary['clips']['written_total']} / {n_total} clips to {out}/data "
        f"(pass rate {summary['quality']['pass_rate']}, {summary['throughput']['clips_per_s']} clips/s, "
        f"sampler busy {summary['actors']['busy_share']}); every input line's fate: {out}/prompts.jsonl; "
        f"summary: {out}/summary.json")
    if summary["clips"]["missing"] or summary["clips"]["duplicates"]:
        raise RuntimeError(f"{out}: {summary['clips']['missing']} clip(s) missing and "
                           f"{summary['clips']['duplicates']} duplicated after the run; see summary.json")
    return summary


def actor_busy(rec: pa.Table) -> dict:
    """Per sampler actor: seconds inside `generate` over the wall time from its first batch's start
    to its last batch's end."""
    if rec is None or not len(rec):
        return {"actors": [], "busy_share": None}
    b = rec.select(["_actor", "_t0", "_t1", "_busy"]).to_pylist()
    per: dict[str, dict] = {}
    for x in {(r["_actor"], r["_t0"]): r for r in b}.values():  # one entry per batch
        a = per.setdefault(x["_actor"], {"actor": x["_actor"], "batches": 0, "busy_s": 0.0, "t0": x["_t0"], "t1": x["_t1"]})
        a["batches"] += 1
        a["busy_s"] += x["_busy"]
        a["t0"], a["t1"] = min(a["t0"], x["_t0"]), max(a["t1"], x["_t1"])
    actors = []
    for a in per.values():
        span = a["t1"] - a["t0"]
        actors.append({"actor": a["actor"], "batches": a["batches"], "busy_s": round(a["busy_s"], 3),
                       "span_s": round(span, 3), "busy_share": round(a["busy_s"] / span, 4) if span > 0 else None,
                       "first_batch_start": a["t0"], "last_batch_end": a["t1"]})
    tot_busy = sum(a["busy_s"] for a in per.values())
    tot_span = sum(a["t1"] - a["t0"] for a in per.values())
    return {"actors": actors, "busy_share": round(tot_busy / tot_span, 4) if tot_span > 0 else None}


def _summarize(cfg, out, settings, specs, fates, ignored, n_total, n_todo, records, stages, plan, t_embed, t_gen,
               t_total) -> dict:
    rec = pa.concat_tables(records) if records else None
    written = written_ids(out)
    want = {item_id(s.prompt_id, k) for s in specs for k in range(cfg.samples_per_prompt)}
    missing = len(want - set(written))
    dups = sum(1 for v in written.values() if len(v) > 1)
    stale = len(set(written) - want)
    # pass / attempt counts over everything in DIR (this run and earlier ones)
    shards = sorted((out / "data").glob("part-*.parquet"))
    meta = pa.concat_tables([pq.read_table(f, columns=["id", "file", "attempt", "passed_quality"]) for f in shards]) \
        if shards else None
    passed = int(pc.sum(meta["passed_quality"]).as_py() or 0) if meta is not None else 0
    n_written = len(meta) if meta is not None else 0
    per_prompt: dict[str, Counter] = defaultdict(Counter)
    if meta is not None:
        for f, p in zip(meta["file"].to_pylist(), meta["passed_quality"].to_pylist()):
            per_prompt[f]["written"] += 1
            per_prompt[f]["passed"] += int(bool(p))
    lines = []
    for f in fates:
        d = {k: v for k, v in asdict(f).items() if v is not None}
        if f.status == "ok":
            d.update(samples_written=per_prompt[f.prompt_id]["written"], samples_passed=per_prompt[f.prompt_id]["passed"])
        lines.append(json.dumps(d))
    _atomic_write(out / "prompts.jsonl", "\n".join(lines) + ("\n" if lines else ""))

    this_run = {}
    if rec is not None:
        fin = rec.filter(rec["final"])
        this_run = {"clips_written": len(fin), "sample_attempts": len(rec),
                    "passed": int(pc.sum(fin["passed"]).as_py() or 0),
                    "mean_s_per_clip": {k: round(float(pc.mean(fin[c]).as_py() or 0.0), 5)
                                        for k, c in (("score", "_score_s"), ("render", "_render_s"),
                                                     ("write", "_write_s")) if c in fin.column_names}}
    return {
        "version": SUMMARY_VERSION, "out": str(out), "prompts_file": str(cfg.prompts), "settings": settings,
        "prompts": {"lines": len(fates), **{s: sum(f.status == s for f in fates) for s in ("ok", "bad", "duplicate", "blank")},
                    "ignored_fields": ignored,
                    "bad_lines": [{k: v for k, v in asdict(f).items() if v is not None}
                                  for f in fates if f.status == "bad"]},
        "clips": {"total": n_total, "already_written": n_total - n_todo, "generated_this_run": n_todo,
                  "written_total": n_written, "missing": missing, "duplicates": dups, "not_in_prompts": stale},
        "quality": {"passed": passed, "failed_kept": n_written - passed,
                    "pass_rate": round(passed / n_written, 4) if n_written else None,
                    "attempts": dict(sorted(Counter(str(a) for a in meta["attempt"].to_pylist()).items()))
                    if meta is not None else {},
                    "gate": asdict(cfg.gate)},
        "this_run": this_run,
        "throughput": {"wall_s": round(t_total, 2), "embed_s": round(t_embed, 2), "generate_s": round(t_gen, 2),
                       "clips_per_s": round(n_todo / t_gen, 3) if n_todo and t_gen > 0 else None,
                       "sample_attempts_per_s": round(len(rec) / t_gen, 3) if rec is not None and t_gen > 0 else None},
        "actors": {**plan.as_dict(), **actor_busy(rec)},
        "stages": stages,
        "renders": {"format": cfg.render,
                    "files": sum(1 for _ in (out / "renders").glob(f"*/*.{cfg.render}")) if cfg.render != "none" else 0},
    }
