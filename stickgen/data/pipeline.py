"""The preprocessing pipeline on Ray Data: raw mocap files -> curated, embedded Parquet.

    stickgen preprocess SOURCE... --out DIR [--config configs/preprocess.yaml] [--cluster [ADDRESS]]
    python -m jobs.preprocess SOURCE... --out DIR            (the same, as a Ray job)

Plan (phases 1 and 4 are Ray Data executions; operator names as `ds.stats()` prints them):

1. convert    InputDataBuffer -> TaskPoolMapOperator[MapBatches(convert_files)->Write]
              The file list as contiguous, byte-balanced chunks (files per task from the
              cluster's CPUs). Each task reads, converts, windows and scores its files
              (`motion.convert.convert_file`: canonical joints, camera, 25 fps, v3, 250-frame
              windows, physics + quality), each file under a size limit and a timeout; a file that
              fails becomes a `file` record with its reason instead of windows. Output: the scored
              intermediate `DIR/_work/scored/`, Arrow IPC files of about one block each (read
              back once: IPC is a memcpy each way, Parquet's nested-list encoding cost ~3 s of one
              core per 2,000 clips here).
2. aggregate  The driver reads only the metadata columns (no motion) and builds the curation
              plan (`curate.build_plan`): per-row verdicts, duplicate ids, the global per
              (action, source) counts, keep counts and exact hash thresholds.
3. embed      EncoderPool: Ray actors holding the text encoder (num_gpus=1 each on GPU
              clusters, a small num_cpus otherwise), started before phase 1 so the model loads
              while files convert; phase 1 and 4 tasks are sized to fit beside them. They
              encode the unique descriptions of the kept windows in canonical sorted chunks:
              each description once, in a batch that does not depend on scheduling, so vectors
              are bit-identical across runs; motion arrays never pass through the actors. The
              driver waits for the vectors before phase 4: a task blocked in `ray.get` hands its
              CPU back and Ray starts another worker process for the next task (measured: two
              extra workers, ~3 s of CPU each, on a 1-CPU cluster).
4. write      InputDataBuffer -> TaskPoolMapOperator[MapBatches(finalize_scored)->Write]
              Tasks over the scored files: each row's fate from the same pure functions and the
              plan, the embedding joined from the text table, rows routed to `DIR/pretrain/` and
              `DIR/sft/` in `data.schema.window_schema(dim, encoder)` (SFT rows are also in pretrain).

Then the driver writes `DIR/manifest.parquet` (every file and window with its fate),
`DIR/summary.png`, `DIR/summary.json` and prints a table. Only metadata (manifest columns,
counts, unique texts) ever reaches the driver. On a multi-node cluster DIR must be shared
storage (NFS, or an object-store URI such as s3://bucket/prefix).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink

from ..config import load_yaml
from ..errors import ConfigError, StickgenError
from ..motion import readers as _readers  # noqa: F401 - imported here, not inside the first file's timer
from ..motion.convert import ConvertConfig, convert_file
from ..motion.timing import WINDOW
from ..text.embedder import TextEmbedder, chunk_texts
from .curate import CurationConfig, CurationPlan, build_plan, window_fate
from .schema import rows_to_table, window_schema
from .sources import SourceFile, expand_sources, is_uri, local_copy

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "preprocess.yaml"

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 256 * 2**20       # larger files are rejected (too_large) before reading
    per_file_timeout_s: float = 120.0  # a file still converting after this is rejected (timeout)

    def __post_init__(self):
        if self.max_bytes <= 0 or self.per_file_timeout_s <= 0:
            raise ValueError("limits.max_bytes and limits.per_file_timeout_s must be > 0")


@dataclass(frozen=True)
class EmbeddingConfig:
    encoder: str = "all-MiniLM-L6-v2"  # see stickgen.text.encoders
    batch_size: int = 64               # texts per encoder call (and per canonical chunk)
    actor_cpus: float = 0.25           # CPUs reserved per encoder actor (GPU actors also take num_gpus=1)
    max_actors: int = 4                # cap on the pool (one per GPU on GPU clusters)

    def __post_init__(self):
        if self.batch_size < 1 or self.max_actors < 1 or self.actor_cpus <= 0:
            raise ValueError("embedding.batch_size and max_actors must be >= 1, actor_cpus > 0")


@dataclass(frozen=True)
class ParallelismConfig:
    tasks_per_cpu: int = 4             # convert tasks per cluster CPU (over-partitioning balances load)
    # Bounds the work a retried task redoes (its output streams out in blocks, so not memory).
    # Not smaller: each Ray Data task costs ~25 ms of a core across driver, raylet and worker
    # (measured with empty tasks): 5% of a 64-file Bandai task, ~1% of a 256-file one.
    max_files_per_task: int = 256
    target_block_mib: float = 32.0     # Ray Data target block size for this job (MiB)

    def __post_init__(self):
        if self.tasks_per_cpu < 1 or self.max_files_per_task < 1 or self.target_block_mib <= 0:
            raise ValueError("parallelism.tasks_per_cpu and max_files_per_task must be >= 1, "
                             "target_block_mib > 0")


@dataclass(frozen=True)
class OutputConfig:
    keep_intermediate: bool = False    # keep DIR/_work/scored/*.arrow (every window with motion and scores)


@dataclass(frozen=True)
class PreprocessConfig:
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    limits: Limits = field(default_factory=Limits)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        c = self.convert
        if c.window != WINDOW:
            raise ValueError(f"convert.window must be {WINDOW}: the dataset schema stores {WINDOW}-frame windows")
        if not 1 <= c.stride <= c.window:
            raise ValueError(f"convert.stride must be in [1, {c.window}], got {c.stride}")
        if c.view not in ("auto", "side", "front"):
            raise ValueError(f"convert.view must be auto, side or front, got {c.view!r}")
        if len(c.split_fractions) != 3 or abs(sum(c.split_fractions) - 1.0) > 1e-6 or min(c.split_fractions) < 0:
            raise ValueError(f"convert.split_fractions must be 3 non-negative numbers summing to 1, got {c.split_fractions}")
        if c.min_seconds <= 0:
            raise ValueError("convert.min_seconds must be > 0")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> PreprocessConfig:
    """configs/preprocess.yaml (or `path`) -> PreprocessConfig; unknown keys raise ConfigError."""
    return load_yaml(PreprocessConfig, path or DEFAULT_CONFIG, overrides)


def parse_overrides(items: Sequence[str]) -> dict:
    """["a.b=1", "c=[1, 2]"] (from `--set`) -> {"a.b": 1, "c": [1, 2]}; values parsed as YAML."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. curation.sft.action_cap=200)")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ----------------------------------------------------------------------------- the scored table

#: per-row extras of the intermediate: file records (record == "file") carry these and no motion
SCORED_EXTRA = [
    pa.field("record", pa.string()),        # "window" | "file"
    pa.field("file_index", pa.int32()),     # position in the sorted input list
    pa.field("file_bytes", pa.int64()),
    pa.field("reason", pa.string()),        # file records: why the file was rejected (null: converted)
    pa.field("message", pa.string()),
    pa.field("n_windows", pa.int32()),
    pa.field("seconds", pa.float32()),      # wall time spent on the file
    pa.field("frames_in", pa.int32()),
    pa.field("fps_in", pa.float32()),
]
#: bytes of one window row in memory (motion + physics + mask + actions + strings and scores)
WINDOW_BYTES = WINDOW * (48 * 4 + 6 * 4 + 1 + 2) + 2048
_ARRAY_COLUMNS = ("mask", "motion", "actions", "physics", "camera", "text_embedding", "all_descriptions")


def scored_schema() -> pa.Schema:
    base = window_schema(None)
    return pa.schema(list(base) + SCORED_EXTRA, metadata=base.metadata)


def meta_columns() -> list[str]:
    """Every scored column except the arrays: what the aggregate and the manifest read."""
    return [f.name for f in scored_schema() if f.name not in _ARRAY_COLUMNS]


class _FileTimeout(BaseException):
    """Raised by SIGALRM inside a conversion. A BaseException so that no `except Exception` in
    a reader can swallow it and turn it into a format error."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (SIGALRM; Ray runs task code on the worker's main
    thread). Python-level work stops at the deadline; a single long C call (one numpy op) is
    bounded by the size limit and is caught by the elapsed-time check in `convert_one`."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise _FileTimeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def convert_one(src: SourceFile, index: int, cfg: PreprocessConfig) -> tuple[list[dict], dict]:
    """One input file -> (window rows, file record). Never raises for a bad file: the record's
    `reason`/`message` say what went wrong (and the file gets no windows)."""
    from ..motion.rig import detect_source

    rec = {"record": "file", "id": f"file:{src.path}", "file": src.path, "file_index": index,
           "file_bytes": src.size, "source": detect_source(src.path, None), "reason": None, "message": None,
           "n_windows": 0}
    t0 = time.perf_counter()
    limit = cfg.limits.per_file_timeout_s
    rows: list[dict] = []
    try:
        if src.size > cfg.limits.max_bytes:
            raise _reject("too_large", f"{src.path}: file is {src.size} bytes, over the limit of {cfg.limits.max_bytes}")
        with _deadline(limit):
            with local_copy(src.path, max_bytes=cfg.limits.max_bytes) as local:
                rows, info = convert_file(local, cfg.convert, max_bytes=cfg.limits.max_bytes)
        if time.perf_counter() - t0 > limit:
            raise _reject("timeout", f"{src.path}: conversion took {time.perf_counter() - t0:.1f} s, "
                          f"over limits.per_file_timeout_s {limit:g}")
        for r in rows:
            r["file"] = src.path  # the URI, not the temp download
            r["record"], r["file_index"] = "window", index
        rec.update(source=rows[0]["source"] if rows else rec["source"], n_windows=len(rows),
                   clip_id=info["clip_id"], action_label=info["action"], split=info["split"],
                   frames_in=info["frames_in"], fps_in=info["fps_in"])
    except _FileTimeout:
        rows = []
        rec.update(reason="timeout", message=f"{src.path}: conversion did not finish within "
                                             f"limits.per_file_timeout_s {limit:g} s")
    except StickgenError as e:
        rows = []
        local_name = getattr(e, "path", None)
        msg = str(e) if not local_name or local_name == src.path else str(e).replace(local_name, src.path)
        rec.update(reason=e.reason, message=msg)
    except MemoryError:
        rows = []
        rec.update(reason="too_large", message=f"{src.path}: out of memory while converting")
    except Exception as e:  # noqa: BLE001 - a converter bug on one file must not stop the batch job
        rows = []
        rec.update(reason="internal_error", message=f"{src.path}: {type(e).__name__}: {e}")
    rec["seconds"] = time.perf_counter() - t0
    return rows, rec


def _reject(reason: str, message: str) -> StickgenError:
    return StickgenError(message, reason=reason)


def _records_table(records: list[dict], schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if any(f.name in r for r in records):
            cols.append(pa.array([r.get(f.name) for r in records], type=f.type))
        else:
            cols.append(pa.nulls(len(records), type=f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def scored_table(rows: list[dict], records: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Window rows + file records -> one table in `scored_schema()`."""
    schema = schema or scored_schema()
    parts = []
    if rows:
        parts.append(rows_to_table(rows, schema))
    if records:
        parts.append(_records_table(records, schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def convert_files(batch: pa.Table, cfg: PreprocessConfig, block_bytes: int) -> Iterator[pa.Table]:
    """Ray Data stage: one batch of the file list (`path`, `size`, `file_index`) -> scored rows,
    yielded in blocks of about `block_bytes` so a task's memory stays bounded."""
    schema = scored_schema()
    rows: list[dict] = []
    records: list[dict] = []
    size = 0
    for path, nbytes, index in zip(batch["path"].to_pylist(), batch["size"].to_pylist(),
                                   batch["file_index"].to_pylist()):
        r, rec = convert_one(SourceFile(path, nbytes), index, cfg)
        rows += r
        records.append(rec)
        size += len(r) * WINDOW_BYTES
        if size >= block_bytes:
            yield scored_table(rows, records, schema)
            rows, records, size = [], [], 0
    if rows or records:
        yield scored_table(rows, records, schema)


# ----------------------------------------------------------------------------- text embeddings


class EncoderPool:
    """An actor pool holding the text encoder, started *before* conversion so the model loads
    while the files convert (a worker importing torch and loading MiniLM takes ~2 s of one core
    here, more with CUDA init on a GPU node).

    GPU clusters: one actor per GPU (num_gpus=1, a small num_cpus), up to `max_actors`.
    CPU clusters: one actor per 8 CPUs, `actor_cpus` each. The convert and write tasks then ask
    for (CPUs - reserved) / floor(CPUs) CPU each, so floor(CPUs) of them still run at once next to
    the actors: the pool never starves them (an actor pool taking every CPU hangs a pipeline)."""

    def __init__(self, ecfg: "EmbeddingConfig", res: "Resources"):
        import ray

        self.on_gpu = res.gpus >= 1
        n = int(res.gpus) if self.on_gpu else max(1, int(res.cpus // 8))
        self.size = max(1, min(ecfg.max_actors, n))
        opts = {"num_cpus": ecfg.actor_cpus, **({"num_gpus": 1} if self.on_gpu else {})}
        # CPU encoders run when the job's other tasks are done: let them use the CPUs per actor
        threads = max(1, int(res.cpus // self.size))
        actor_cls = ray.remote(max_restarts=1, max_task_retries=1)(TextEmbedder)
        self.actors = [actor_cls.options(**opts).remote(
            ecfg.encoder, ecfg.batch_size, "cuda" if self.on_gpu else "cpu", threads) for _ in range(self.size)]
        self.reserved_cpus = self.size * ecfg.actor_cpus

    def task_cpus(self, res: "Resources") -> float:
        """num_cpus for the other tasks of this job (see the class docstring)."""
        return min(1.0, max(0.05, (res.cpus - self.reserved_cpus) / max(1.0, math.floor(res.cpus))))

    def embed(self, texts: Sequence[str], batch_size: int) -> tuple["Embeddings", str, int | None]:
        """Unique texts -> (their vectors, encoder name, dim).

        Returns when every chunk is encoded (the vectors stay in the object store), so the write
        tasks never block on them (see the module docstring, phase 3)."""
        import ray

        try:
            meta = ray.get([a.ready.remote() for a in self.actors])[0]
            chunks = chunk_texts(texts, batch_size)
            pairs = [self.actors[i % self.size].encode_counted.options(num_returns=2).remote(c)
                     for i, c in enumerate(chunks)]
            ray.get([n for _, n in pairs])  # waits for every chunk; raises if one failed
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            raise StickgenError(f"the text encoder failed: {e}", reason="encoder") from None
        emb = Embeddings([t for c in chunks for t in c], [m for m, _ in pairs])
        return emb, meta["encoder"], (meta["dim"] if chunks else None)

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


# ----------------------------------------------------------------------------- final rows

@dataclass(frozen=True)
class Embeddings:
    """The encoded texts, in chunk order, and their [n, dim] float32 blocks, one per chunk: refs
    to the object store (held by the encoder actors that made them), or the arrays themselves
    when everything runs in one process (the benchmark's plain loop)."""
    texts: list[str]
    refs: list


_LOOKUPS: dict[str, tuple[dict[str, int], np.ndarray]] = {}


def _lookup(emb: Embeddings) -> tuple[dict[str, int], np.ndarray]:
    """text -> row of the embedding matrix, fetched and built once per worker process (keyed by
    the object refs; in-process arrays are not cached: an object's id() can be reused)."""
    import ray

    in_process = any(isinstance(m, np.ndarray) for m in emb.refs)
    key = None if in_process else ",".join(r.hex() for r in emb.refs)
    if key is None or key not in _LOOKUPS:
        mats = [m if isinstance(m, np.ndarray) else ray.get(m) for m in emb.refs]
        mat = np.concatenate(mats).astype(np.float32, copy=False) if mats else np.zeros((0, 0), np.float32)
        found = ({s: i for i, s in enumerate(emb.texts)}, mat)
        if key is None:
            return found
        _LOOKUPS.clear()  # one job at a time per worker process
        _LOOKUPS[key] = found
    return _LOOKUPS[key]


def finalize_windows(batch: pa.Table, plan: CurationPlan, emb: Embeddings, schema: pa.Schema) -> pa.Table:
    """Ray Data stage: scored windows -> the kept rows in `schema` plus a `_sft` flag.

    Each row's fate comes from `curate.window_fate` (the same function the manifest uses);
    rejected rows are dropped; every kept row goes to pretrain, `_sft` rows also to SFT."""
    if "record" in batch.column_names:
        batch = batch.filter(pc.equal(batch["record"], "window"))
    meta = batch.select(["id", "file", "source", "action_label", "n_frames", "finite", "explosion_ratio",
                         "limb_error", "static_ratio", "quality", "physics_valid"]).to_pylist()
    fates = [window_fate(r, plan)[0] for r in meta]
    keep = [i for i, f in enumerate(fates) if f != "rejected"]
    t = batch.take(pa.array(keep, pa.int64()))
    index, mat = _lookup(emb)
    emb_type = schema.field("text_embedding").type
    cols = []
    for f in schema:
        if f.name != "text_embedding":
            cols.append(t[f.name].cast(f.type))
        elif pa.types.is_fixed_size_list(emb_type) and len(t):
            rows = np.array([index[d] for d in t["description"].to_pylist()], np.int64)
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(mat[rows].reshape(-1)), emb_type.list_size))
        else:
            cols.append(pa.nulls(len(t), f.type))
    out = pa.Table.from_arrays(cols, schema=schema)
    return out.append_column("_sft", pa.array([fates[i] == "sft" for i in keep], pa.bool_()))


def finalize_scored(batch: pa.Table, plan: CurationPlan, emb: Embeddings, schema: pa.Schema, out_dir: str) -> Iterator[pa.Table]:
    """Ray Data stage: scored IPC files (`path`) -> `finalize_windows` on each."""
    out = _Out(out_dir)
    for path in batch["path"].to_pylist():
        with out.fs.open_input_file(path) as f:
            t = pa.ipc.open_file(f).read_all()
        yield finalize_windows(t, plan, emb, schema)


class _Out:
    """The output folder, local or any pyarrow-filesystem URI."""

    def __init__(self, out_dir: str):
        import pyarrow.fs as pafs

        if is_uri(str(out_dir)):
            self.fs, self.root = pafs.FileSystem.from_uri(str(out_dir))
            self.uri = str(out_dir).rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(out_dir).resolve())
            self.uri = self.root

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def mkdir(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def remove(self, *parts: str) -> None:
        import pyarrow.fs as pafs

        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.path(name)) as f:
            f.write(data)


SUBSETS = ("pretrain", "sft")
SCORED_DIR = ("_work", "scored")


class ScoredDatasink(Datasink):
    """Writes each block of scored rows to `DIR/_work/scored/part-<task>-<n>.arrow` (Arrow IPC)."""

    def __init__(self, out_dir: str, schema: pa.Schema):
        self.out_dir, self.schema = out_dir, schema

    def on_write_start(self, schema=None) -> None:
        _Out(self.out_dir).mkdir(*SCORED_DIR)

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        out = _Out(self.out_dir)
        n_rows = 0
        # lz4: a file record's null motion/physics rows are stored as zeros (~60 KB per input
        # file), which lz4 removes at memcpy speed; the float windows pass nearly unchanged
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        for n, block in enumerate(blocks):
            t = BlockAccessor.for_block(block).to_arrow().cast(self.schema)
            with out.fs.open_output_stream(out.path(*SCORED_DIR, f"part-{ctx.task_idx:05d}-{n:03d}.arrow")) as f, \
                    pa.ipc.new_file(f, self.schema, options=options) as w:
                w.write_table(t)
            n_rows += len(t)
        return {"rows": n_rows}

    def get_name(self) -> str:
        return "ScoredIPC"


class CurationDatasink(Datasink):
    """Writes each block's rows to `DIR/pretrain/part-<task>-<n>.parquet` and its `_sft` rows
    also to `DIR/sft/`, in `schema` (whose metadata names the text encoder and embedding dim)."""

    def __init__(self, out_dir: str, schema: pa.Schema):
        self.out_dir, self.schema = out_dir, schema

    def on_write_start(self, schema=None) -> None:
        out = _Out(self.out_dir)
        for name in SUBSETS:
            out.mkdir(name)

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        out = _Out(self.out_dir)
        counts: Counter = Counter()
        for n, block in enumerate(blocks):
            t = BlockAccessor.for_block(block).to_arrow()
            counts.update(write_subsets(t, out, self.schema, f"{ctx.task_idx:05d}-{n:03d}"))
        return dict(counts)

    def get_name(self) -> str:
        return "CurationParquet"


def _parquet_options(schema: pa.Schema, compression: str) -> dict:
    """Dictionaries only for strings and statistics only for scalars: trying both on the
    fixed-size float array columns costs write time and saves nothing."""
    return {"compression": compression,
            "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
            "write_statistics": [f.name for f in schema if not pa.types.is_nested(f.type)]}


def write_subsets(t: pa.Table, out: _Out, schema: pa.Schema, tag: str) -> Counter:
    """`finalize_windows` output -> pretrain/part-<tag>.parquet (every row) and sft/ (the `_sft` rows)."""
    counts: Counter = Counter()
    options = _parquet_options(schema, "snappy")
    for name in SUBSETS:
        sub = t if name == "pretrain" else t.filter(t["_sft"])
        if len(sub) == 0:
            continue
        md = dict(schema.metadata or {})
        md[b"stickgen.subset"] = name.encode()
        sub = sub.drop_columns(["_sft"]).replace_schema_metadata(md)
        pq.write_table(sub, out.path(name, f"part-{tag}.parquet"), filesystem=out.fs, **options)
        counts[name] += len(sub)
    return counts


# ----------------------------------------------------------------------------- the driver


@dataclass
class Resources:
    cpus: float
    gpus: float
    nodes: int


def cluster_resources() -> Resources:
    import ray

    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Resources(float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0)), max(1, nodes))


def plan_tasks(files: Sequence[SourceFile], res: Resources, par: ParallelismConfig) -> list[pa.Table]:
    """The file list as contiguous chunks balanced by bytes: one convert task each, largest first.

    files per task = ceil(n / (CPUs * tasks_per_cpu)), at most max_files_per_task. Ray Data
    starts the tasks in list order, so the largest go first and the small ones (a byte-balanced
    chunk over the file cap is split in two) fill the last wave instead of trailing it."""
    n = len(files)
    per = max(1, min(par.max_files_per_task, math.ceil(n / max(1.0, res.cpus * par.tasks_per_cpu))))
    n_tasks = max(1, math.ceil(n / per))
    sizes = np.array([max(f.size, 1) for f in files], np.float64)
    cum = np.cumsum(sizes)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_tasks) / n_tasks, side="left") + 1
    bounds = sorted(set([0, *cuts.tolist(), n]))
    spans = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        # a run of small files over the cap: k even parts, no stub
        edges = np.linspace(a, b, math.ceil((b - a) / per) + 1).round().astype(int).tolist()
        spans += zip(edges[:-1], edges[1:])
    spans.sort(key=lambda se: -sizes[se[0]:se[1]].sum())  # stable: equal sizes keep file order
    return [pa.table({"path": pa.array([f.path for f in files[s:e]], pa.string()),
                      "size": pa.array([f.size for f in files[s:e]], pa.int64()),
                      "file_index": pa.array(range(s, e), pa.int32())}) for s, e in spans]


def _stage_stats(ds, phase: str) -> list[dict]:
    """Per-operator times from `ds.stats()` (its structured form)."""
    try:
        summary = ds.get_stats_summary()
    except Exception:  # noqa: BLE001 - stats are a report, never a reason to fail the job
        return []
    out = []
    stack = [summary]
    while stack:
        s = stack.pop()
        stack.extend(getattr(s, "parents", []) or [])
        for op in s.operators_stats:
            out.append({
                "phase": phase, "operator": op.operator_name,
                "time_total_s": round(float(op.time_total_s or 0.0), 3),
                "task_wall_s_sum": round(float(_stat(op.wall_time, "sum")), 3),
                "task_cpu_s_sum": round(float(_stat(op.cpu_time, "sum")), 3),
                "tasks": int(_stat(op.wall_time, "count")),
                "rows_out": int(_stat(op.output_num_rows, "sum")),
                "bytes_out": int(_stat(op.output_size_bytes, "sum")),
            })
    return out


def _stat(x, key: str) -> float:
    if x is None:
        return 0.0
    return float(x.get(key, 0.0) if isinstance(x, dict) else getattr(x, key, 0.0) or 0.0)


@contextlib.contextmanager
def _data_context(block_bytes: int) -> Iterator[None]:
    """This job's Data settings, restored afterwards (tests share one Ray in one process)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    old = ctx.target_max_block_size, ctx.op_resource_reservation_enabled
    ctx.target_max_block_size = block_bytes
    # Each execution here is one fused operator (input -> map -> write), so the per-operator
    # resource reservation (half the CPUs held back for other operators) only idles CPUs: measured
    # on 2 CPUs, convert tasks ran 1.3 at a time with it and 1.7 without (convert phase 13.7 ->
    # 10.9 s for 2,088 Bandai takes).
    ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.target_max_block_size, ctx.op_resource_reservation_enabled = old


def _log(msg: str) -> None:
    print(f"[stickgen preprocess] {msg}", flush=True)


def run_preprocess(sources: Sequence[str] | str, out_dir: str | Path, cfg: PreprocessConfig | None = None,
                   *, verbose: bool = True) -> dict:
    """Run the pipeline on the Ray cluster this process is connected to (a local one is started
    when none is). Returns the summary dict that is also written to DIR/summary.json."""
    import ray

    cfg = cfg or load_config()
    log = _log if verbose else (lambda m: None)
    t_start = time.perf_counter()
    files = expand_sources(sources)
    if not ray.is_initialized():
        from ..local_ray import init_local_ray

        init_local_ray()
    res = cluster_resources()
    out = _Out(str(out_dir))
    if res.nodes > 1 and not is_uri(str(out_dir)):
        log(f"note: {res.nodes} nodes write to {out.uri}: it must be shared storage (NFS) on every node")
    for name in ("pretrain", "sft", "_work", "manifest.parquet", "summary.json", "summary.png"):
        out.remove(name)
    for name in ("_work", "pretrain", "sft"):
        out.mkdir(name)
    block_bytes = int(cfg.parallelism.target_block_mib * 2**20)
    phases: dict[str, float] = {}
    stages: list[dict] = []
    clock = time.perf_counter
    encoders = EncoderPool(cfg.embedding, res)  # loads the model while the files convert
    task_cpus = encoders.task_cpus(res)

    with _data_context(block_bytes), contextlib.closing(encoders):
        t0 = clock()
        chunks = plan_tasks(files, res, cfg.parallelism)
        log(f"1/4 convert: {len(files)} input files ({sum(f.size for f in files) / 2**20:.1f} MiB) in "
            f"{len(chunks)} tasks on {res.cpus:g} CPUs / {res.gpus:g} GPUs / {res.nodes} node(s); "
            f"{encoders.size} encoder actor(s) loading meanwhile")
        stages += _convert_phase(chunks, cfg, block_bytes, out, task_cpus)
        phases["convert"] = clock() - t0

        t0 = clock()
        meta, scored_files = read_meta(out, SCORED_DIR)
        _check_accounting(meta, files)
        wins = meta.filter(pc.equal(meta["record"], "window")).to_pylist()
        plan = build_plan(wins, cfg.curation)
        fates = [window_fate(r, plan) for r in wins]
        phases["aggregate"] = clock() - t0
        log(f"2/4 aggregate: {len(wins)} windows -> pretrain {sum(f[0] != 'rejected' for f in fates)}, "
            f"sft {sum(f[0] == 'sft' for f in fates)} (also in pretrain)")

        # the manifest and the plot need only the fates: draw them while the cluster embeds and writes
        report = _Background(lambda: _write_report(meta, wins, fates, plan, out))

        t0 = clock()
        texts = [r["description"] for r, f in zip(wins, fates) if f[0] != "rejected"]
        emb, encoder, dim = encoders.embed(texts, cfg.embedding.batch_size)
        phases["embed"] = clock() - t0
        stages.append({"phase": "embed", "operator": f"EncoderPool[TextEmbedder x{encoders.size}]",
                       "time_total_s": round(phases["embed"], 3), "task_wall_s_sum": None, "task_cpu_s_sum": None,
                       "tasks": len(emb.refs), "rows_out": len(set(texts)), "bytes_out": None})
        log(f"3/4 embed: {len(set(texts))} unique descriptions -> {encoder} ({dim}-d) on {encoders.size} actor(s)")

        t0 = clock()
        schema = window_schema(dim, encoder)
        stages += _write_phase(scored_files, plan, emb, schema, out, res, cfg.parallelism, task_cpus)
        phases["write"] = clock() - t0
        log(f"4/4 write: {out.uri_of('pretrain')} and {out.uri_of('sft')}")

    t0 = clock()
    manifest = report.result()
    if not cfg.output.keep_intermediate:
        out.remove("_work")
    phases["report"] = clock() - t0  # the part not hidden behind embed + write
    summary = build_summary(
        manifest, plan, files, cfg, res, phases, stages, clock() - t_start,
        outputs={"encoder": encoder, "embedding_dim": dim},
        parallelism={"convert_tasks": len(chunks), "files_per_task_max": max(len(c) for c in chunks),
                     "target_block_mib": cfg.parallelism.target_block_mib, "scored_blocks": len(scored_files),
                     "embed_actors": encoders.size, "task_cpus": round(task_cpus, 4)},
        out=out, sources=[str(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)])
    out.write_bytes("summary.json", json.dumps(summary, indent=2).encode())
    if verbose:
        print(format_summary(summary), flush=True)
    return summary


class _Background:
    """Run `fn` in a driver thread; `result()` joins it and re-raises its exception."""

    def __init__(self, fn):
        self._box: dict = {}
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn):
        try:
            self._box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller in result()
            self._box["error"] = e

    def result(self):
        self._t.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def _write_report(meta: pa.Table, wins: list[dict], fates: list[tuple], plan: CurationPlan, out: "_Out") -> pa.Table:
    manifest = build_manifest(meta, wins, fates)
    pq.write_table(manifest, out.path("manifest.parquet"), filesystem=out.fs)
    out.write_bytes("summary.png", summary_png(manifest, plan))
    return manifest


def _convert_phase(chunks: list[pa.Table], cfg: PreprocessConfig, block_bytes: int, out: "_Out",
                   task_cpus: float) -> list[dict]:
    """Files -> scored windows + file records, as IPC files of about one block each."""
    import ray

    ds = ray.data.from_blocks(chunks).map_batches(
        convert_files, batch_size=None, batch_format="pyarrow", num_cpus=task_cpus,
        fn_kwargs={"cfg": cfg, "block_bytes": block_bytes})
    ds.write_datasink(ScoredDatasink(out.uri, scored_schema()), ray_remote_args={"num_cpus": task_cpus})
    return _stage_stats(ds, "convert")


def _write_phase(scored_files: list[str], plan: CurationPlan, emb: Embeddings, schema: pa.Schema, out: "_Out",
                 res: Resources, par: ParallelismConfig, task_cpus: float) -> list[dict]:
    """Scored files -> fates -> `pretrain/` and `sft/` shards (SFT rows are written to both).

    Tasks over groups of scored files (tasks_per_cpu per CPU), read with pyarrow, so read,
    finalize and write fuse into one task and no window block enters the object store.
    (`ray.data.read_parquet` cost 4-7 s per call on this 2-core box: its V2 path lists files in
    an extra stage and its V1 path samples files first; the file list is already known here.)"""
    import ray

    n_tasks = min(len(scored_files), max(1, int(res.cpus * par.tasks_per_cpu)))
    groups = np.array_split(np.array(scored_files, dtype=object), n_tasks)
    ds = ray.data.from_blocks([pa.table({"path": pa.array(list(g), pa.string())}) for g in groups]).map_batches(
        finalize_scored, batch_size=None, batch_format="pyarrow", num_cpus=task_cpus,
        fn_kwargs={"plan": plan, "emb": emb, "schema": schema, "out_dir": out.uri})
    ds.write_datasink(CurationDatasink(out.uri, schema), ray_remote_args={"num_cpus": task_cpus})
    return _stage_stats(ds, "write")


def read_meta(out: "_Out", parts: tuple[str, ...]) -> tuple[pa.Table, list[str]]:
    """The scored table's metadata columns (no arrays), read on the driver: column projection
    reads only those columns' buffers of each IPC file. Also returns the file list."""
    import pyarrow.dataset as pads

    d = pads.dataset(out.path(*parts), filesystem=out.fs, format="ipc")
    meta = d.to_table(columns=meta_columns()).sort_by([("file_index", "ascending"), ("id", "ascending")])
    return meta, sorted(d.files)


def _check_accounting(meta: pa.Table, files: Sequence[SourceFile]) -> None:
    """Every input has exactly one file record and every window's file is an input."""
    recs = meta.filter(pc.equal(meta["record"], "file"))
    got = Counter(recs["file_index"].to_pylist())
    missing = [files[i].path for i in range(len(files)) if got.get(i, 0) != 1]
    if missing:
        raise RuntimeError(f"{len(missing)} input file(s) have no single file record (first: {missing[0]}); "
                           "a convert task was lost")


# ----------------------------------------------------------------------------- manifest and summary

MANIFEST_SCHEMA = pa.schema([
    pa.field("record", pa.string()),        # "file" | "window"
    pa.field("id", pa.string()),            # window id, or "file:<path>"
    pa.field("file", pa.string()),
    pa.field("file_index", pa.int32()),
    pa.field("source", pa.string()),
    pa.field("clip_id", pa.string()),
    pa.field("window_start", pa.int32()),
    pa.field("n_frames", pa.int16()),
    pa.field("action_label", pa.string()),
    pa.field("split", pa.string()),
    pa.field("quality", pa.float32()),
    pa.field("physics_valid", pa.bool_()),
    pa.field("fate", pa.string()),          # "sft" (also in pretrain) | "pretrain" | "rejected"
    pa.field("in_pretrain", pa.bool_()),
    pa.field("in_sft", pa.bool_()),
    pa.field("reason", pa.string()),        # why rejected (file: conversion error; window: validity)
    pa.field("message", pa.string()),
    pa.field("sft_reason", pa.string()),    # pretrain-only windows: why not SFT
    pa.field("sft_message", pa.string()),
    pa.field("n_windows", pa.int32()),      # file rows: windows cut from the file ...
    pa.field("n_pretrain", pa.int32()),     # ... of which in pretrain (sft included)
    pa.field("n_sft", pa.int32()),          # ... of which in sft
    pa.field("n_rejected", pa.int32()),     # ... of which rejected; n_windows = n_pretrain + n_rejected
    pa.field("file_bytes", pa.int64()),
    pa.field("seconds", pa.float32()),
], metadata={"stickgen.manifest": "1", "stickgen.sft_in_pretrain": "true"})


def build_manifest(meta: pa.Table, wins: list[dict], fates: list[tuple]) -> pa.Table:
    """One row per input file and per window, with its fate (see MANIFEST_SCHEMA)."""
    per_file: dict[int, Counter] = defaultdict(Counter)
    reasons: dict[int, Counter] = defaultdict(Counter)
    rows = []
    for w, (fate, reason, msg, sreason, smsg) in zip(wins, fates):
        per_file[w["file_index"]][fate] += 1
        if reason:
            reasons[w["file_index"]][reason] += 1
        rows.append({
            "record": "window", "id": w["id"], "file": w["file"], "file_index": w["file_index"],
            "source": w["source"], "clip_id": w["clip_id"], "window_start": w["window_start"],
            "n_frames": w["n_frames"], "action_label": w["action_label"], "split": w["split"],
            "quality": w["quality"], "physics_valid": w["physics_valid"], "fate": fate,
            "in_pretrain": fate != "rejected", "in_sft": fate == "sft", "reason": reason, "message": msg,
            "sft_reason": sreason, "sft_message": smsg})
    for f in meta.filter(pc.equal(meta["record"], "file")).to_pylist():
        c = per_file[f["file_index"]]
        n_pre, n_sft, n_rej = c["pretrain"] + c["sft"], c["sft"], c["rejected"]
        reason, msg = f["reason"], f["message"]
        if reason:
            fate = "rejected"
        elif n_pre == 0:
            fate, reason = "rejected", "no_valid_window"
            msg = f"{f['file']}: all {n_rej} window(s) rejected (" + ", ".join(
                f"{k} {v}" for k, v in sorted(reasons[f["file_index"]].items())) + ")"
        else:
            fate = "sft" if n_sft else "pretrain"
        rows.append({
            "record": "file", "id": f["id"], "file": f["file"], "file_index": f["file_index"],
            "source": f["source"], "clip_id": f["clip_id"], "action_label": f["action_label"],
            "split": f["split"], "fate": fate, "in_pretrain": n_pre > 0, "in_sft": n_sft > 0,
            "reason": reason, "message": msg, "n_windows": f["n_windows"] or 0, "n_pretrain": n_pre,
            "n_sft": n_sft, "n_rejected": n_rej, "file_bytes": f["file_bytes"], "seconds": f["seconds"]})
    rows.sort(key=lambda r: (r["file_index"], r["record"] != "file", r.get("window_start") or 0, r["id"]))
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _counts(rows: list[dict], key: str, cols: dict) -> dict:
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(str(r[key]), {c: 0 for c in cols})
        for c, pred in cols.items():
            d[c] += int(pred(r))
    return dict(sorted(out.items()))


def build_summary(manifest: pa.Table, plan: CurationPlan, files, cfg: PreprocessConfig, res: Resources,
                  phases: dict, stages: list[dict], wall: float, *, outputs: dict, parallelism: dict,
                  out: _Out, sources: list[str]) -> dict:
    m = manifest.to_pylist()
    frows = [r for r in m if r["record"] == "file"]
    wrows = [r for r in m if r["record"] == "window"]
    n_bytes = sum(f.size for f in files)
    bal = plan.allocation.to_json()
    return {
        "out_dir": out.uri,
        "sources": sources,
        "sft_in_pretrain": True,
        "files": {"total": len(frows), "converted": sum(r["reason"] is None or r["reason"] == "no_valid_window"
                                                         for r in frows),
                  "with_accepted_windows": sum(r["in_pretrain"] for r in frows),
                  "rejected": sum(r["fate"] == "rejected" for r in frows), "bytes": n_bytes},
        "windows": {"total": len(wrows), "pretrain": sum(r["in_pretrain"] for r in wrows),
                    "sft": sum(r["in_sft"] for r in wrows), "rejected": sum(r["fate"] == "rejected" for r in wrows)},
        "by_source": {s: {**fc, **_counts([r for r in wrows if r["source"] == s], "source", {
            "windows": lambda r: True, "pretrain": lambda r: r["in_pretrain"], "sft": lambda r: r["in_sft"],
            "rejected": lambda r: r["fate"] == "rejected"}).get(s, {"windows": 0, "pretrain": 0, "sft": 0, "rejected": 0})}
            for s, fc in _counts(frows, "source", {"files": lambda r: True,
                                                   "files_rejected": lambda r: r["fate"] == "rejected"}).items()},
        "by_action": _counts(wrows, "action_label", {
            "windows": lambda r: True, "pretrain": lambda r: r["in_pretrain"],
            "sft_eligible": lambda r: r["in_pretrain"] and r["sft_reason"] in (None, "balance"),
            "sft": lambda r: r["in_sft"]}),
        "by_split": _counts(wrows, "split", {"windows": lambda r: True, "pretrain": lambda r: r["in_pretrain"],
                                             "sft": lambda r: r["in_sft"]}),
        "reject_reasons": {
            "files": dict(sorted(Counter(r["reason"] for r in frows if r["fate"] == "rejected").items())),
            "windows": dict(sorted(Counter(r["reason"] for r in wrows if r["fate"] == "rejected").items()))},
        "not_in_sft": dict(sorted(Counter(r["sft_reason"] for r in wrows if r["fate"] == "pretrain").items())),
        "balance": bal,
        "throughput": {"wall_s": round(wall, 3), "files_per_s": round(len(frows) / wall, 3),
                       "windows_per_s": round(len(wrows) / wall, 3),
                       "mib_per_s": round(n_bytes / 2**20 / wall, 3)},
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "stages": stages,
        "cluster": asdict(res),
        "parallelism": parallelism,
        "outputs": {"pretrain": out.uri_of("pretrain"), "sft": out.uri_of("sft"),
                    "manifest": out.uri_of("manifest.parquet"), **outputs},
        "config": _jsonable(asdict(cfg)),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def format_summary(s: dict) -> str:
    """The table printed at the end of a run."""
    lines = []
    f, w, t = s["files"], s["windows"], s["throughput"]
    lines.append(f"stickgen preprocess -> {s['out_dir']}")
    lines.append(f"  files   {f['total']:>7}  rejected {f['rejected']:>6}   windows {w['total']:>7}  "
                 f"pretrain {w['pretrain']:>7}  sft {w['sft']:>6} (also in pretrain)  rejected {w['rejected']:>6}")
    lines.append(f"  {t['wall_s']:.1f} s: {t['files_per_s']:.1f} files/s, {t['windows_per_s']:.1f} windows/s, "
                 f"{t['mib_per_s']:.2f} MiB/s   phases " + ", ".join(f"{k} {v:.1f}s" for k, v in s["phases_s"].items()))
    lines.append("")
    lines.append(f"  {'source':<16}{'files':>7}{'rej':>6}{'windows':>9}{'pretrain':>10}{'sft':>7}")
    for k, v in s["by_source"].items():
        lines.append(f"  {k:<16}{v['files']:>7}{v['files_rejected']:>6}{v['windows']:>9}{v['pretrain']:>10}{v['sft']:>7}")
    lines.append("")
    lines.append(f"  {'action':<16}{'windows':>9}{'pretrain':>10}{'eligible':>10}{'sft':>7}")
    for k, v in s["by_action"].items():
        lines.append(f"  {k:<16}{v['windows']:>9}{v['pretrain']:>10}{v['sft_eligible']:>10}{v['sft']:>7}")
    lines.append("")
    lines.append("  split: " + ", ".join(f"{k} {v['pretrain']} pretrain / {v['sft']} sft" for k, v in s["by_split"].items()))
    rr = s["reject_reasons"]
    lines.append("  rejected files: " + (", ".join(f"{k} {v}" for k, v in rr["files"].items()) or "none"))
    lines.append("  rejected windows: " + (", ".join(f"{k} {v}" for k, v in rr["windows"].items()) or "none"))
    lines.append("  pretrain-only windows (not SFT): " + (", ".join(f"{k} {v}" for k, v in s["not_in_sft"].items()) or "none"))
    b = s["balance"]
    lines.append(f"  SFT balance: {b['action_target']} windows per action (cap), source cap "
                 f"{b['source_cap_effective']:.3f} (requested {b['source_cap_requested']})")
    if b["note"]:
        lines.append(f"  note: {b['note']}")
    return "\n".join(lines)


def summary_png(manifest: pa.Table, plan: CurationPlan) -> bytes:
    """Quality histogram by fate; action and source distributions before/after SFT balancing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = manifest.filter(pc.equal(manifest["record"], "window")).to_pylist()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [4, 5, 2]})
    bins = np.linspace(0, 1, 41)
    groups = [("rejected", "#c44"), ("pretrain", "#48c"), ("sft", "#4a4")]
    data = [[r["quality"] for r in m if r["fate"] == f and r["quality"] is not None] for f, _ in groups]
    labels = ["rejected", "pretrain only", "sft (+ pretrain)"]
    ax1.hist(data, bins=bins, stacked=True, color=[c for _, c in groups],
             label=[f"{lab} ({len(d)})" for lab, d in zip(labels, data)])
    ax1.axvline(plan.cfg.sft.min_quality, color="k", ls="--", lw=1, label=f"sft.min_quality {plan.cfg.sft.min_quality}")
    ax1.set(xlabel="combined quality", ylabel="windows", title="Quality of every window, by fate")
    ax1.legend(fontsize=8)

    bal = plan.allocation.to_json()
    for ax, key, title in ((ax2, "by_action", "Actions"), (ax3, "by_source", "Sources")):
        by = bal[key]
        names = list(by)
        x = np.arange(len(names))
        ax.bar(x - 0.2, [by[a]["eligible"] for a in names], 0.4, label="SFT-eligible (before balancing)", color="#999")
        ax.bar(x + 0.2, [by[a]["kept"] for a in names], 0.4, label="SFT (after balancing)", color="#4a4")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="windows", title=f"{title} before / after balancing")
    top = max([v["eligible"] for v in bal["by_action"].values()] or [0])
    if plan.allocation.action_target and plan.allocation.action_target <= 1.2 * top:
        ax2.axhline(plan.allocation.action_target, color="k", ls="--", lw=1, label="action_cap")
    elif plan.allocation.action_target:
        ax2.set_title(ax2.get_title() + f" (cap {plan.allocation.action_target} not reached)")
    ax2.legend(fontsize=8)
    ax3.set_title(f"Sources (cap {plan.allocation.source_cap_effective:.2f} of SFT)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


