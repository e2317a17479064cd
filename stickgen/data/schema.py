"""The one dataset schema (Arrow/Parquet), used by preprocessing, training, bulk generation and
evaluation alike. A row is one 250-frame window of one clip.

| column            | Arrow type                                   | meaning |
|-------------------|----------------------------------------------|---------|
| id                | string                                       | `<source>/<stem>.<ext>:<window start>` (unique per window) |
| source            | string                                       | bandai, cmu, humanml3d, amass, ntu, synthetic, generated, ... |
| file              | string                                       | input file (or prompt id for generated rows) |
| clip_id           | string                                       | `<source>/<stem>`: the split key (one take = one clip) |
| window_start      | int32                                        | first frame of the window in the 25 fps clip |
| fps               | int16                                        | always 25 |
| n_frames          | int16                                        | valid frames (the rest is padding) |
| mask              | fixed_size_list<bool, 250>                   | per-frame validity |
| motion            | fixed_size_list<float32, 250*48>, shape 250 x 48 | v3 segments, body units, +Y up |
| actions           | fixed_size_list<int16, 250>                  | per-frame action ids (`stickgen.text.actions`) |
| physics           | fixed_size_list<float32, 250*6>, shape 250 x 6   | pelvis vx, vy, ax, ay, mx, my |
| camera            | fixed_size_list<float32, 250*3>, shape 250 x 3, nullable | x, y, zoom (null: no camera track) |
| description       | string                                       | the primary sentence |
| all_descriptions  | list<string>                                 | every known sentence for the clip |
| text_embedding    | fixed_size_list<float32, D>, nullable        | embedding of `description`; encoder in the metadata |
| action_label      | string                                       | clip-level action name |
| action_id         | int16                                        | its id |
| style             | string                                       | style label (normal, sad, ...) |
| view              | string                                       | camera chosen for the clip: side or front |
| view_angle        | float32                                      | degrees between screen x and the body's facing |
| split             | string                                       | train / val / test (by clip_id) |
| quality columns   | see `stickgen.motion.quality.QUALITY_COLUMNS` | each check's value, `physics_valid`, combined `quality` |

Table metadata (`schema.metadata`): `stickgen.schema_version`, `stickgen.text_encoder`,
`stickgen.embedding_dim`. Generated datasets add `GENERATED_FIELDS`. The 2-D arrays (motion,
physics, camera) carry their shape as field metadata (`stickgen.shape`, e.g. "250,48").

Why the 2-D arrays are *flat* fixed-size lists (schema version 2): pyarrow 17.0 through 26.0.1
(the versions Ray 2.60 runs with) return other rows' values from `take`/`filter` on a *sliced*
fixed_size_list<fixed_size_list<...>> array: the slice offset is applied twice. Ray Data slices
blocks into batches and then filters and shuffles them with exactly those kernels, so with nested
columns a training batch could pair one clip's text with another clip's motion, silently.
Flat fixed-size lists go through the single-level kernels, which are correct
(`tests/test_schema.py` checks them on sliced tables). Version-1 datasets (nested) are still read:
`flatten_arrays` converts them, and `column_numpy` accepts either layout.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ..motion.quality import QUALITY_COLUMNS
from ..motion.skeleton import V3_DIM
from ..motion.timing import WINDOW
from ..text.actions import ACTION_ID

SCHEMA_VERSION = "2"
#: the 2-D array columns and their per-row shapes
ARRAY_SHAPES = {"motion": (WINDOW, V3_DIM), "physics": (WINDOW, 6), "camera": (WINDOW, 3)}

_BOOL_QUALITY = {"finite", "physics_valid"}


def _fsl(t: pa.DataType, n: int) -> pa.DataType:
    return pa.list_(t, n)


def _array_field(name: str, nullable: bool = True) -> pa.Field:
    """A 2-D float32 array column: flat fixed-size list, its shape in the field metadata."""
    a, b = ARRAY_SHAPES[name]
    return pa.field(name, _fsl(pa.float32(), a * b), nullable=nullable, metadata={"stickgen.shape": f"{a},{b}"})


def window_schema(embedding_dim: int | None = None, text_encoder: str | None = None,
                  generated: bool = False) -> pa.Schema:
    """The Arrow schema; `embedding_dim=None` leaves text_embedding as a variable list (before
    the embedding stage has run it is null)."""
    emb_type = _fsl(pa.float32(), embedding_dim) if embedding_dim else pa.list_(pa.float32())
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("file", pa.string()),
        pa.field("clip_id", pa.string()),
        pa.field("window_start", pa.int32()),
        pa.field("fps", pa.int16()),
        pa.field("n_frames", pa.int16()),
        pa.field("mask", _fsl(pa.bool_(), WINDOW)),
        _array_field("motion"),
        pa.field("actions", _fsl(pa.int16(), WINDOW)),
        _array_field("physics"),
        _array_field("camera", nullable=True),
        pa.field("description", pa.string()),
        pa.field("all_descriptions", pa.list_(pa.string())),
        pa.field("text_embedding", emb_type, nullable=True),
        pa.field("action_label", pa.string()),
        pa.field("action_id", pa.int16()),
        pa.field("style", pa.string()),
        pa.field("view", pa.string()),
        pa.field("view_angle", pa.float32()),
        pa.field("split", pa.string()),
    ]
    fields += [pa.field(c, pa.bool_() if c in _BOOL_QUALITY else pa.float32()) for c in QUALITY_COLUMNS]
    if generated:
        fields += GENERATED_FIELDS
    meta = {"stickgen.schema_version": SCHEMA_VERSION}
    if text_encoder:
        meta["stickgen.text_encoder"] = text_encoder
    if embedding_dim:
        meta["stickgen.embedding_dim"] = str(embedding_dim)
    return pa.schema(fields, metadata=meta)


#: Extra columns of bulk-generated datasets.
GENERATED_FIELDS = [
    pa.field("prompt", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("checkpoint_id", pa.string()),
    pa.field("attempt", pa.int16()),
    pa.field("passed_quality", pa.bool_()),
]


def array_column(arr: np.ndarray, t: pa.DataType = pa.float32()) -> pa.Array:
    """[N, ...] numpy -> fixed_size_list<t, prod(...)> (one row per leading index), no Python loops."""
    width = int(np.prod(arr.shape[1:], dtype=np.int64))
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1), type=t), width)


def is_nested_layout(schema: pa.Schema) -> bool:
    """True for a version-1 table or shard (2-D arrays as nested fixed-size lists)."""
    return any(name in schema.names and pa.types.is_fixed_size_list(schema.field(name).type.value_type)
               for name in ARRAY_SHAPES)


def flatten_arrays(table: pa.Table) -> pa.Table:
    """Version-1 tables (nested 2-D columns) -> version 2 (flat), zero-copy, exact on any slice.
    Tables already flat are returned unchanged."""
    for name in ARRAY_SHAPES:
        if name not in table.column_names:
            continue
        col = table[name]
        if not pa.types.is_fixed_size_list(col.type.value_type):
            continue
        field = _array_field(name, nullable=table.schema.field(name).nullable)
        chunks = []
        for c in col.chunks:
            # `.values` ignores the parent's slice offset (and keeps null rows' slots, which
            # `flatten()` would drop): slice each level by hand
            a, b = c.type.list_size, c.type.value_type.list_size
            inner = c.values.slice(c.offset * a, len(c) * a)
            flat = inner.values.slice(inner.offset * b, len(inner) * b)
            chunks.append(pa.FixedSizeListArray.from_arrays(flat, a * b, mask=c.is_null() if c.null_count else None))
        table = table.set_column(table.column_names.index(name), field, pa.chunked_array(chunks, field.type))
    return table


def _check_shapes(rows: list[dict], name: str) -> None:
    """Flat storage only checks a row's total size: refuse a transposed or short array here."""
    want = ARRAY_SHAPES[name]
    for r in rows:
        if r.get(name) is not None and np.shape(r[name]) != want:
            raise ValueError(f"{r.get('id', '?')}: column {name!r} has shape {np.shape(r[name])}, expected {want}")


def rows_to_table(rows: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Window dicts (as made by `motion.convert`) -> an Arrow table in `schema`."""
    if schema is None:
        dims = {len(r["text_embedding"]) for r in rows if r.get("text_embedding") is not None}
        schema = window_schema(dims.pop() if len(dims) == 1 else None,
                               generated=bool(rows) and "prompt" in rows[0])
    n = len(rows)
    cols: dict[str, pa.Array] = {}
    for f in schema:
        name = f.name
        if name in ("motion", "physics"):
            _check_shapes(rows, name)
            arr = np.stack([r[name] for r in rows]).astype(np.float32) if n else np.zeros((0, *ARRAY_SHAPES[name]), np.float32)
            cols[name] = array_column(arr)
        elif name == "mask":
            arr = np.stack([r["mask"] for r in rows]).astype(bool) if n else np.zeros((0, WINDOW), bool)
            cols[name] = array_column(arr, pa.bool_())
        elif name == "actions":
            arr = np.stack([r["actions"] for r in rows]).astype(np.int16) if n else np.zeros((0, WINDOW), np.int16)
            cols[name] = array_column(arr, pa.int16())
        elif name == "camera":
            _check_shapes(rows, name)
            null = np.array([r.get(name) is None for r in rows], bool)
            arr = np.zeros((n, *ARRAY_SHAPES[name]), np.float32)
            if n and not null.all():
                arr[~null] = np.stack([r[name] for r in rows if r.get(name) is not None])
            # one array with a validity mask: per-row Python lists cost ~0.4 ms a window
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), f.type.list_size,
                                                           mask=pa.array(null) if null.any() else None)
        elif name == "text_embedding":
            if all(r.get("text_embedding") is not None for r in rows) and n and pa.types.is_fixed_size_list(f.type):
                arr = np.stack([np.asarray(r["text_embedding"], np.float32) for r in rows])
                cols[name] = array_column(arr, pa.float32())
            else:
                vals = [None if r.get(name) is None else np.asarray(r[name], np.float32).tolist() for r in rows]
                cols[name] = pa.array(vals, type=f.type)
        elif name == "action_id":
            cols[name] = pa.array([r.get("action_id", ACTION_ID.get(r.get("action_label", "idle"), 0)) for r in rows], type=f.type)
        else:
            cols[name] = pa.array([r.get(name) for r in rows], type=f.type)
    return pa.Table.from_arrays(list(cols.values()), schema=schema)


def column_numpy(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A fixed-size-list column, flat or nested (schema version 1) -> numpy [N, *shape]
    (zero-copy when it is one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:  # flatten() would drop the null rows' slots and misalign the rest
        raise ValueError(f"column of type {col.type} has {col.null_count} null rows: cannot make a dense array")
    vals = col
    while pa.types.is_fixed_size_list(vals.type) or pa.types.is_list(vals.type):
        vals = vals.flatten()
    out = vals.to_numpy(zero_copy_only=False)
    return out.reshape((len(col),) + shape).astype(dtype, copy=False)


def table_to_arrays(table: pa.Table, columns: tuple[str, ...] = ("motion", "mask", "actions", "physics", "text_embedding")) -> dict[str, np.ndarray]:
    """The numeric columns a model needs, as numpy arrays."""
    out = {}
    for c in columns:
        if c == "motion":
            out[c] = column_numpy(table[c], (WINDOW, V3_DIM))
        elif c == "physics":
            out[c] = column_numpy(table[c], (WINDOW, 6))
        elif c == "mask":
            out[c] = column_numpy(table[c], (WINDOW,), bool)
        elif c == "actions":
            out[c] = column_numpy(table[c], (WINDOW,), np.int64)
        elif c == "text_embedding":
            col = table[c]
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if col.null_count:
                raise ValueError("text_embedding has nulls: run the embedding stage first")
            d = len(col[0]) if len(col) else 0
            out[c] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), d).astype(np.float32)
        else:
            out[c] = table[c].to_numpy()
    return out


def check_table(table: pa.Table, *, generated: bool = False) -> None:
    """Raise ValueError naming the first column that is missing or has the wrong type."""
    want = window_schema(None, generated=generated)
    for f in want:
        if f.name not in table.column_names:
            raise ValueError(f"dataset is missing column {f.name!r}")
        got = table.schema.field(f.name).type
        if f.name == "text_embedding":
            if not (pa.types.is_list(got) or pa.types.is_fixed_size_list(got)):
                raise ValueError(f"column 'text_embedding' has type {got}, expected a float32 list")
            continue
        if got != f.type:
            raise ValueError(f"column {f.name!r} has type {got}, expected {f.type}")


def dataset_metadata(table_or_schema) -> dict:
    md = (table_or_schema.schema if hasattr(table_or_schema, "schema") else table_or_schema).metadata or {}
    return {k.decode(): v.decode() for k, v in md.items()}


def metadata_json(d: dict) -> str:
    return json.dumps(d, sort_keys=True)
