"""The dataset schema's array columns survive the Arrow kernels Ray Data runs on sliced blocks.

pyarrow 17.0-26.0.1 `take`/`filter` on a sliced fixed_size_list<fixed_size_list<...>> return
other rows' values (the slice offset is applied twice); version-2 datasets store 2-D arrays as
flat fixed-size lists, which those kernels handle correctly. Known answers: every row's values
are a function of its row number."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from stickgen.data.schema import (ARRAY_SHAPES, SCHEMA_VERSION, column_numpy, flatten_arrays, rows_to_table,
                                  table_to_arrays, window_schema)


def _rows(n: int) -> list[dict]:
    """Windows whose every value encodes its row number r (motion = r + small frame offsets)."""
    out = []
    for r in range(n):
        motion = np.full((250, 48), float(r), np.float32) + np.arange(48, dtype=np.float32) / 100
        out.append({"id": f"t/clip{r:03d}.bvh:00000", "motion": motion, "physics": np.full((250, 6), -r, np.float32),
                    "mask": np.arange(250) < 200, "actions": np.full(250, r % 7, np.int16),
                    "camera": None if r % 3 == 0 else np.full((250, 3), r, np.float32),
                    "text_embedding": np.full(8, r, np.float32), "split": "train" if r % 2 else "val"})
    return out


def _row_of(t: pa.Table) -> np.ndarray:
    return np.array([int(i.split("clip")[1][:3]) for i in t["id"].to_pylist()])


def _assert_rows_match(t: pa.Table) -> None:
    r = _row_of(t)
    a = table_to_arrays(t, ("motion", "physics", "actions", "text_embedding"))
    np.testing.assert_array_equal(a["motion"][:, 0, 0], r)
    np.testing.assert_array_equal(a["physics"][:, 7, 3], -r)
    np.testing.assert_array_equal(a["actions"][:, 9], r % 7)
    np.testing.assert_array_equal(a["text_embedding"][:, 0], r)
    cam = t["camera"].to_pylist()
    for ri, c in zip(r, cam):
        assert (c is None) == (ri % 3 == 0)
        if c is not None:
            assert c[0] == ri and len(c) == 750


def test_array_columns_are_flat_fixed_size_lists_with_their_shape():
    s = window_schema(8)
    assert s.metadata[b"stickgen.schema_version"] == SCHEMA_VERSION.encode() == b"2"
    for name, (a, b) in ARRAY_SHAPES.items():
        f = s.field(name)
        assert pa.types.is_fixed_size_list(f.type) and f.type.list_size == a * b
        assert not pa.types.is_nested(f.type.value_type)
        assert f.metadata[b"stickgen.shape"] == f"{a},{b}".encode()


@pytest.mark.parametrize("offset", [1, 5, 16])
def test_take_and_filter_on_sliced_tables_keep_every_row_whole(offset):
    t = rows_to_table(_rows(40), window_schema(8)).slice(offset)
    mask = pc.equal(t["split"], "train")
    _assert_rows_match(t.filter(mask))
    idx = np.random.default_rng(offset).permutation(len(t))
    _assert_rows_match(t.take(pa.array(idx)))
    np.testing.assert_array_equal(_row_of(t.take(pa.array(idx))), np.arange(offset, 40)[idx])


def _nested_v1(t: pa.Table) -> pa.Table:
    """The same table in schema version 1's layout (nested 2-D lists)."""
    for name, (a, b) in ARRAY_SHAPES.items():
        col = t[name].combine_chunks()
        inner = pa.FixedSizeListArray.from_arrays(col.values, b)
        nested = pa.FixedSizeListArray.from_arrays(inner, a, mask=col.is_null() if col.null_count else None)
        t = t.set_column(t.column_names.index(name), pa.field(name, nested.type), nested)
    return t


def test_version_1_tables_are_flattened_correctly_even_when_sliced():
    v1 = _nested_v1(rows_to_table(_rows(30), window_schema(8)))
    assert pa.types.is_fixed_size_list(v1.schema.field("motion").type.value_type)
    part = v1.slice(7, 15)
    flat = flatten_arrays(part)
    assert flat.schema.field("motion").type == window_schema(8).field("motion").type
    _assert_rows_match(flat)
    _assert_rows_match(flat.filter(pc.equal(flat["split"], "train")))
    # the reader accepts both layouts with the same answer
    np.testing.assert_array_equal(column_numpy(part["motion"], (250, 48)), column_numpy(flat["motion"], (250, 48)))
    assert flatten_arrays(flat) is flat  # already flat: unchanged


def test_arrays_of_the_wrong_shape_are_refused_not_stored_flat():
    """Flat storage only checks a row's total size: a transposed array must fail loudly."""
    good = _rows(2)
    for name, bad in (("motion", np.zeros((48, 250), np.float32)), ("physics", np.zeros((6, 250), np.float32)),
                      ("camera", np.zeros((3, 250), np.float32))):
        rows = [dict(good[0]), dict(good[1])]
        rows[1][name] = bad
        with pytest.raises(ValueError, match=name):
            rows_to_table(rows, window_schema(8))
    # a nullable column with null rows cannot become one dense array
    t = rows_to_table(_rows(4), window_schema(8))
    with pytest.raises(ValueError, match="null rows"):
        column_numpy(t["camera"], (250, 3))
