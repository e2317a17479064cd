"""Evaluation data: read windows of THE dataset schema (`stickgen.data.schema`) from a Parquet folder.

`stickgen preprocess SOURCE --out DIR` writes `DIR/pretrain/*.parquet`, `DIR/sft/*.parquet` and
`DIR/manifest.parquet`. Evaluation reads one of the window sets (default `pretrain`: every valid
window, all splits; SFT is a balanced subset of it) and selects rows by the `split` column, which
is assigned per *source clip*, so no clip has windows in two splits. A folder holding the
`*.parquet` shards directly works too.

`write_dataset` is a stand-in writer for tests and benchmarks (same schema, same per-file
conversion as the pipeline, no curation); real evaluations read what `stickgen preprocess` wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..motion.skeleton import V3_DIM
from ..motion.timing import WINDOW

#: The columns evaluation needs.
EVAL_COLUMNS = ("id", "source", "clip_id", "split", "n_frames", "mask", "motion", "description",
                "all_descriptions", "text_embedding", "action_label", "action_id", "style")

#: Sources that are model output, never reference data.
GENERATED_SOURCES = ("generated",)


def parquet_files(data_dir: str | Path, subset: str = "pretrain") -> list[Path]:
    """The window shards of a dataset folder: `DIR/<subset>/**.parquet` when that folder exists,
    else every `*.parquet` under DIR except the manifest and work files."""
    d = Path(data_dir)
    if not d.exists():
        raise ConfigError(f"{d}: no such dataset folder")
    if d.is_file():
        return [d]
    sub = d / subset
    root = sub if sub.is_dir() else d
    files = sorted(p for p in root.rglob("*.parquet")
                   if p.name != "manifest.parquet" and not any(part.startswith("_") for part in p.relative_to(root).parts))
    if not files:
        raise ConfigError(f"{d}: no window shards (looked for {subset}/*.parquet and *.parquet)")
    return files


@dataclass
class Windows:
    """Windows of one selection, as numpy arrays (row i of every field is window i)."""

    motion: np.ndarray          # [N, 250, 48] float32 v3
    mask: np.ndarray            # [N, 250] bool
    text_embedding: np.ndarray  # [N, E] float32
    action_id: np.ndarray       # [N] int64
    ids: list[str]
    clip_ids: list[str]
    sources: list[str]
    splits: list[str]
    descriptions: list[str]
    all_descriptions: list[list[str]]
    action_labels: list[str]
    styles: list[str]
    text_encoder: str | None = None
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_frames(self) -> np.ndarray:
        return self.mask.sum(1).astype(np.int64)

    def take(self, idx: Sequence[int] | np.ndarray) -> Windows:
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return Windows(self.motion[idx], self.mask[idx], self.text_embedding[idx], self.action_id[idx],
                       pick(self.ids), pick(self.clip_ids), pick(self.sources), pick(self.splits),
                       pick(self.descriptions), pick(self.all_descriptions), pick(self.action_labels),
                       pick(self.styles), self.text_encoder, self.files)

    def fingerprint(self) -> str:
        """Content id of the selection (window ids): two evaluations share a test set iff equal."""
        h = hashlib.sha256("\n".join(sorted(self.ids)).encode())
        return h.hexdigest()[:16]

    def source_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            out[s] = out.get(s, 0) + 1
        return dict(sorted(out.items()))


def load_windows(data_dir: str | Path, splits: Iterable[str] = ("test",), *, subset: str = "pretrain",
                 sources: Iterable[str] | None = None, exclude_sources: Iterable[str] = GENERATED_SOURCES) -> Windows:
    """Read the windows of `splits` (and optionally only `sources`) from a dataset folder."""
    from ..data.schema import dataset_metadata, table_to_arrays

    files = parquet_files(data_dir, subset)
    splits = tuple(splits)
    tables = []
    encoders = set()
    for f in files:
        pf = pq.ParquetFile(f)
        meta = dataset_metadata(pf.schema_arrow)
        missing = [c for c in EVAL_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise ConfigError(f"{f}: not a stickgen window shard (missing columns {missing})")
        t = pf.read(columns=list(EVAL_COLUMNS))
        keep = np.isin(t["split"].to_numpy(zero_copy_only=False), splits)
        if sources is not None:
            keep &= np.isin(t["source"].to_numpy(zero_copy_only=False), tuple(sources))
        keep &= ~np.isin(t["source"].to_numpy(zero_copy_only=False), tuple(exclude_sources))
        if keep.any():
            t = t.filter(pa.array(keep))
            # fixed-size text embeddings from different shards must agree; normalise the type
            tables.append(t.select([c for c in EVAL_COLUMNS if c != "text_embedding"]).append_column(
                "text_embedding", pa.array(t["text_embedding"].to_pylist(), pa.list_(pa.float32())))
                if not pa.types.is_fixed_size_list(t.schema.field("text_embedding").type) else t)
            if meta.get("stickgen.text_encoder"):
                encoders.add(meta["stickgen.text_encoder"])
    if len(encoders) > 1:
        raise ConfigError(f"{data_dir}: shards were embedded with different text encoders {sorted(encoders)}")
    if not tables:
        raise ConfigError(f"{data_dir}: no windows with split in {list(splits)}"
                          + (f" and source in {list(sources)}" if sources is not None else ""))
    table = pa.concat_tables(tables, promote_options="permissive")
    arr = table_to_arrays(table, ("motion", "mask", "text_embedding"))
    col = lambda c: table[c].to_pylist()  # noqa: E731
    return Windows(
        motion=arr["motion"].astype(np.float32, copy=False).reshape(-1, WINDOW, V3_DIM),
        mask=arr["mask"].astype(bool),
        text_embedding=arr["text_embedding"],
        action_id=np.asarray(col("action_id"), np.int64),
        ids=col("id"), clip_ids=col("clip_id"), sources=col("source"), splits=col("split"),
        descriptions=col("description"),
        all_descriptions=[list(x or []) or [d] for x, d in zip(col("all_descriptions"), col("description"))],
        action_labels=col("action_label"), styles=col("style"),
        text_encoder=encoders.pop() if encoders else None, files=[str(f) for f in files],
    )


def split_clip_ids(data_dir: str | Path, subset: str = "pretrain") -> dict[str, set[str]]:
    """{split: clip ids} of a dataset folder, reading only the `split` and `clip_id` columns."""
    out: dict[str, set[str]] = {}
    for f in parquet_files(data_dir, subset):
        t = pq.read_table(f, columns=["split", "clip_id"])
        for s, c in zip(t["split"].to_pylist(), t["clip_id"].to_pylist()):
            out.setdefault(s, set()).add(c)
    return out


def pad_clips(clips: Sequence[np.ndarray], window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length [T_i, 48] clips -> ([N, window, 48], [N, window] mask), like the dataset:
    frames past a clip's end repeat its last frame (still, finite) and are masked out; clips
    longer than `window` are cut."""
    N = len(clips)
    out = np.zeros((N, window, V3_DIM), np.float32)
    mask = np.zeros((N, window), bool)
    for i, c in enumerate(clips):
        c = np.asarray(c, np.float32)[:window]
        n = len(c)
        if n == 0:
            continue
        out[i, :n] = c
        out[i, n:] = c[-1]
        mask[i, :n] = True
    return out, mask


def write_dataset(files: Sequence[str | Path], out_dir: str | Path, *, encoder: str = "all-MiniLM-L6-v2",
                  shard: str = "pretrain") -> Path:
    """Stand-in for `stickgen preprocess` in tests and benchmarks: convert each file with the same
    per-file function (`motion.convert.convert_file`), embed descriptions, and write one shard
    `out_dir/<shard>/part-0.parquet` in the dataset schema. Files that fail conversion are skipped.
    No curation is applied."""
    from ..data.schema import rows_to_table, window_schema
    from ..errors import StickgenError
    from ..motion.convert import convert_file
    from ..text.encoders import get_text_encoder

    rows: list[dict] = []
    for f in files:
        try:
            r, _ = convert_file(str(f))
        except StickgenError:
            continue
        rows.extend(r)
    if not rows:
        raise ConfigError("write_dataset: no file converted")
    enc = get_text_encoder(encoder)
    texts = sorted({r["description"] for r in rows})
    vecs = dict(zip(texts, enc.encode(texts)))
    for r in rows:
        r["text_embedding"] = vecs[r["description"]]
    schema = window_schema(enc.dim, enc.name)
    table = rows_to_table(rows, schema)
    out = Path(out_dir) / shard
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-0.parquet")
    return Path(out_dir)
