"""The preprocessing pipeline on a real local Ray (the session's `ray_local`), on real files.

Real data (../shared/data, skipped when absent): every Bandai clip yields a window; the manifest
accounts for every file and window; SFT actions are uniform up to the cap; the source cap holds
on the final SFT set; two runs give identical rows; corrupt files are rejected with the right
reason while the job goes on. Synthesized data: a dataset of many blocks streams through with
bounded object-store use.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from stickgen.config import from_dict
from stickgen.data import curate
from stickgen.data.pipeline import DEFAULT_CONFIG, PreprocessConfig, load_config, run_preprocess
from stickgen.data.schema import check_table, dataset_metadata
from stickgen.data.sources import SourceError, expand_sources
from stickgen.errors import ConfigError


def run(sources, out: Path, **overrides) -> dict:
    return run_preprocess([str(s) for s in sources], str(out), load_config(None, overrides), verbose=False)


def read_set(out: Path, subset: str) -> pa.Table:
    return pads.dataset(out / subset, format="parquet").to_table().sort_by("id")


def manifest(out: Path) -> tuple[list[dict], list[dict]]:
    m = pq.read_table(out / "manifest.parquet").to_pylist()
    return [r for r in m if r["record"] == "file"], [r for r in m if r["record"] == "window"]


# --- config, sources and the balancing arithmetic (no Ray) ----------------------------------------


def test_shipped_config_loads_and_documents_every_key():
    cfg = load_config()
    assert cfg.curation.sft.min_quality == 0.5 and cfg.curation.sft.strict_physics
    assert cfg.curation.sft.max_source_fraction == 0.3
    import dataclasses

    import yaml

    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            t = f.type if not isinstance(f.type, str) else type(getattr(cls(), f.name))
            if dataclasses.is_dataclass(t):
                yield from fields(t, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    def keys(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from keys(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    assert set(keys(yaml.safe_load(DEFAULT_CONFIG.read_text()))) == set(fields(PreprocessConfig))
    with pytest.raises(ConfigError, match="typo_key"):
        load_config(None, {"curation.sft.typo_key": 1})
    with pytest.raises(ConfigError, match="window"):
        from_dict(PreprocessConfig, {"convert": {"window": 100}})


def test_sources_are_sorted_unique_and_typed_errors(tmp_path, bandai_dir):
    a = expand_sources([str(bandai_dir)])
    assert len(a) == 174 and a == sorted(a) and all(f.path.endswith(".bvh") for f in a)
    some = expand_sources([f"{bandai_dir}/*_walk_*.bvh", f"file://{bandai_dir}/*_walk_*.bvh", str(a[0].path)])
    assert len(some) == len({f.path for f in some}) == 1 + len(expand_sources([f"{bandai_dir}/*_walk_*.bvh"]))
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# two takes\n{a[0].path}\n\n{os.path.relpath(a[1].path, tmp_path)}\n")
    assert [f.path for f in expand_sources([str(lst)])] == [a[0].path, a[1].path]
    with pytest.raises(SourceError, match="no such file"):
        expand_sources([str(tmp_path / "missing")])
    with pytest.raises(SourceError, match="matches no motion files"):
        expand_sources([f"{bandai_dir}/*.fbx"])


def test_convert_tasks_cover_every_file_once_within_the_cap_largest_first():
    """plan_tasks: contiguous chunks that cover each file exactly once, never over
    max_files_per_task, about CPUs x tasks_per_cpu of them when the cap allows, and ordered by
    bytes, largest first (Ray Data starts them in order: the small ones fill the last wave)."""
    from stickgen.data.pipeline import ParallelismConfig, Resources, plan_tasks
    from stickgen.data.sources import SourceFile

    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(100_000, 1_000_000, 300), rng.integers(1_000, 5_000, 700)])
    files = [SourceFile(f"/in/{i:05d}.bvh", int(b)) for i, b in enumerate(sizes)]
    for cpus, cap, expect in ((1, 256, None), (2, 256, None), (16, 256, 64), (1, 10, None)):
        chunks = plan_tasks(files, Resources(cpus, 0, 1), ParallelismConfig(tasks_per_cpu=4, max_files_per_task=cap))
        idx = [c["file_index"].to_pylist() for c in chunks]
        assert sorted(i for c in idx for i in c) == list(range(len(files)))  # each file once
        assert all(c == list(range(c[0], c[-1] + 1)) for c in idx)  # contiguous runs
        assert max(map(len, idx)) <= cap
        assert len(chunks) >= max(len(files) / cap, 1)
        if expect:
            assert expect <= len(chunks) <= 2 * expect
        nbytes = [sum(c["size"].to_pylist()) for c in chunks]
        assert nbytes == sorted(nbytes, reverse=True)
        assert [c["path"].to_pylist() for c in chunks] == [[files[i].path for i in c] for c in idx]


def test_allocation_holds_both_caps_on_final_totals():
    rng = np.random.default_rng(0)
    for _ in range(200):
        A, S = int(rng.integers(1, 12)), int(rng.integers(1, 7))
        el = {(f"a{i}", f"s{j}"): int(rng.integers(0, 80)) for i in range(A) for j in range(S)}
        rule = curate.SftRule(action_cap=int(rng.integers(1, 60)), max_source_fraction=float(rng.uniform(0.1, 1)))
        al = curate.allocate(el, rule)
        n = sum(al.keep.values())
        per_a, per_s = Counter(), Counter()
        for (a, s), k in al.keep.items():
            assert 0 <= k <= el[(a, s)]
            per_a[a] += k
            per_s[s] += k
        assert max(per_a.values(), default=0) <= rule.action_cap
        assert all(q <= al.source_cap_effective * n + 1e-9 for q in per_s.values())  # of the *final* set
        assert al.source_cap_effective == max(rule.max_source_fraction, 1 / len({s for (_, s), v in el.items() if v}))
    # the published bug: a 30% cap computed on pre-balance totals cut a lone source to 30%
    lone = curate.allocate({("walk", "bandai"): 50, ("run", "bandai"): 5}, curate.SftRule(action_cap=20))
    assert lone.keep == {("walk", "bandai"): 20, ("run", "bandai"): 5}


# --- real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bandai_run(ray_local, bandai_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre-bandai")
    # the hash test encoder keeps this run short; the mixed runs below use the real MiniLM
    return run([bandai_dir], out, **{"curation.sft.action_cap": 12, "embedding.encoder": "hash-384"}), out


def test_every_bandai_clip_yields_a_window(bandai_run, bandai_dir):
    summary, out = bandai_run
    files, windows = manifest(out)
    assert len(files) == 174
    assert all(f["reason"] is None and f["n_windows"] >= 1 for f in files), [f for f in files if f["reason"]][:3]
    assert {w["file"] for w in windows} == {f["file"] for f in files}
    assert summary["files"]["rejected"] == 0 and summary["by_source"]["bandai"]["files"] == 174


def test_manifest_accounts_for_every_file_and_window(bandai_run, bandai_dir):
    summary, out = bandai_run
    files, windows = manifest(out)
    assert [f["file"] for f in files] == [s.path for s in expand_sources([str(bandai_dir)])]
    per_file = Counter(w["file"] for w in windows)
    for f in files:
        assert f["n_windows"] == per_file[f["file"]] == f["n_pretrain"] + f["n_rejected"]
        assert f["n_sft"] == sum(w["in_sft"] for w in windows if w["file"] == f["file"])
    for w in windows:
        assert w["fate"] in ("pretrain", "sft", "rejected")
        assert (w["fate"] == "rejected") == (w["reason"] is not None) == (not w["in_pretrain"])
        assert w["in_sft"] == (w["fate"] == "sft")
    pre, sft = read_set(out, "pretrain"), read_set(out, "sft")
    assert pre["id"].to_pylist() == sorted(w["id"] for w in windows if w["in_pretrain"])
    assert sft["id"].to_pylist() == sorted(w["id"] for w in windows if w["in_sft"])
    assert set(sft["id"].to_pylist()) <= set(pre["id"].to_pylist())  # SFT rows are also pretrain rows
    for t in (pre, sft):
        check_table(t)
        md = dataset_metadata(t)
        assert md["stickgen.text_encoder"] == "hash-384" and md["stickgen.embedding_dim"] == "384"
    assert summary["windows"] == {"total": len(windows), "pretrain": len(pre), "sft": len(sft),
                                  "rejected": sum(w["fate"] == "rejected" for w in windows)}
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["sft_in_pretrain"] is True
    assert {s["phase"] for s in summary["stages"]} >= {"convert", "embed", "write"}
    assert not (out / "_work").exists()


def test_sft_actions_are_uniform_up_to_the_cap(bandai_run):
    summary, out = bandai_run
    _, windows = manifest(out)
    eligible = Counter(w["action_label"] for w in windows if w["in_pretrain"] and w["sft_reason"] in (None, "balance"))
    got = Counter(read_set(out, "sft")["action_label"].to_pylist())
    assert max(eligible.values()) > 12  # the cap binds for some actions
    for action, n in eligible.items():
        assert got[action] == min(12, n), (action, got[action], n)
    balanced_out = {w["action_label"] for w in windows if w["sft_reason"] == "balance"}
    assert balanced_out == {a for a, n in eligible.items() if n > 12}


def _bvh_parts(bandai_dir: Path) -> tuple[str, list[str], str]:
    src = (bandai_dir / "dataset-1_walk_normal_001.bvh").read_text()
    head, motion = src.split("MOTION", 1)
    lines = motion.splitlines()
    ft = next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time"))
    return head, [ln for ln in lines[ft + 1:] if ln.strip()], lines[ft]


def _salt(folder: Path, bandai_dir: Path) -> dict[str, str]:
    """Corrupt inputs next to copies of two good takes; returns file name -> expected reason."""
    src = (bandai_dir / "dataset-1_walk_normal_001.bvh").read_text()
    head, frames, frame_time = _bvh_parts(bandai_dir)
    (folder / "empty.bvh").write_bytes(b"")
    (folder / "truncated.bvh").write_text(src[: int(len(src) * 0.6)])
    (folder / "garbage.bvh").write_bytes(np.random.default_rng(0).bytes(20_000))
    bad = frames[4].split()
    bad[3] = "nan"
    body = frames[:4] + [" ".join(bad)] + frames[5:]
    (folder / "nan_values.bvh").write_text(head + f"MOTION\nFrames: {len(body)}\n{frame_time}\n" + "\n".join(body) + "\n")
    with open(folder / "huge.bvh", "wb") as f:  # sparse: over the size limit without writing 50 MB
        f.truncate(50_000_000)
    for name in ("dataset-1_bow_active_001.bvh", "dataset-1_run_normal_001.bvh"):
        shutil.copy(bandai_dir / name, folder / name)  # same window ids as the Bandai originals
    return {"empty.bvh": "empty", "truncated.bvh": "truncated", "garbage.bvh": "binary",
            "nan_values.bvh": "nan", "huge.bvh": "too_large"}


@pytest.fixture(scope="module")
def mixed_runs(ray_local, bandai_dir, cmu_dir, tmp_path_factory):
    """Part of Bandai + all of CMU + the salted folder, twice: the second run lists the sources
    in another order (a .txt file list vs arguments) and partitions the work differently."""
    salted = tmp_path_factory.mktemp("salted")
    expected = _salt(salted, bandai_dir)
    bandai = [f"{bandai_dir}/*_{a}_*.bvh" for a in ("walk", "run", "bow", "guide")]
    listing = salted.parent / "inputs.txt"
    listing.write_text("# a file list: one SOURCE per line\n" + "\n".join([str(salted), str(cmu_dir), *bandai]) + "\n")
    kw = {"limits.max_bytes": 40_000_000}
    out1, out2 = tmp_path_factory.mktemp("mixed1"), tmp_path_factory.mktemp("mixed2")
    s1 = run([*bandai, cmu_dir, salted], out1, **kw)
    s2 = run([listing], out2, **kw, **{"parallelism.max_files_per_task": 3, "parallelism.target_block_mib": 1})
    return expected, salted, (s1, out1), (s2, out2)


def test_corrupt_files_are_rejected_with_the_right_reason(mixed_runs):
    expected, salted, (summary, out), _ = mixed_runs
    files, windows = manifest(out)
    by_name = {Path(f["file"]).name: f for f in files if Path(f["file"]).parent == salted}
    for name, reason in expected.items():
        f = by_name[name]
        assert (f["fate"], f["reason"]) == ("rejected", reason), f
        assert name in f["message"] and f["n_windows"] == 0
    assert summary["reject_reasons"]["files"] == {**Counter(expected.values()), "no_valid_window": 2}
    # the job went on: every other input was converted
    assert sum(f["reason"] is None for f in files) == len(files) - len(expected) - 2
    # a take present twice keeps one copy; the other copy's window is rejected as a duplicate
    dups = [w for w in windows if w["reason"] == "duplicate_id"]
    assert len(dups) == 2 and all("also comes from" in w["message"] for w in dups)


def test_a_file_that_would_stall_a_worker_is_cut_off_by_the_timeout(ray_local, bandai_dir, tmp_path):
    """A valid but enormous take (48 MB, a few hundred times the work of a normal take) next to
    a normal one. The limit comes from the normal take's conversion time measured in a Ray worker
    (same priority and load as the pipeline's) with a wide margin, so the test holds on fast and
    on busy machines."""
    import ray

    from stickgen.motion.convert import convert_file

    head, frames, frame_time = _bvh_parts(bandai_dir)
    slow = frames * 200
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "endless.bvh").write_text(head + f"MOTION\nFrames: {len(slow)}\n{frame_time}\n" + "\n".join(slow) + "\n")
    normal = "dataset-1_walk_active_001.bvh"
    shutil.copy(bandai_dir / normal, tmp_path / "in" / normal)

    @ray.remote
    def seconds(path: str) -> float:
        convert_file(path)  # warm
        t0 = time.perf_counter()
        convert_file(path)
        return time.perf_counter() - t0

    limit = max(0.5, 20 * ray.get(seconds.remote(str(tmp_path / "in" / normal))))
    summary = run([tmp_path / "in"], tmp_path / "out", **{"limits.per_file_timeout_s": limit,
                                                        "embedding.encoder": "hash-384"})
    files, _ = manifest(tmp_path / "out")
    by_name = {Path(f["file"]).name: f for f in files}
    assert (by_name["endless.bvh"]["reason"], by_name[normal]["reason"]) == ("timeout", None), (limit, by_name)
    assert by_name["endless.bvh"]["seconds"] < 3 * limit  # cut off: running to the end takes >= ~7x the limit
    assert summary["reject_reasons"]["files"] == {"timeout": 1}


def test_source_cap_holds_on_the_final_sft_set(mixed_runs):
    _, _, (summary, out), _ = mixed_runs
    sft = read_set(out, "sft")
    per_source = Counter(sft["source"].to_pylist())
    bal = summary["balance"]
    assert set(per_source) == {"bandai", "cmu"} and bal["source_cap_requested"] == 0.3
    assert bal["source_cap_effective"] == 0.5 and "cannot hold with 2 source(s)" in bal["note"]
    assert all(n <= bal["source_cap_effective"] * len(sft) for n in per_source.values())
    assert per_source["cmu"] == bal["by_source"]["cmu"]["kept"] > 0


def test_two_runs_give_identical_rows(mixed_runs):
    _, _, (_, out1), (_, out2) = mixed_runs
    for subset in ("pretrain", "sft"):
        a, b = read_set(out1, subset), read_set(out2, subset)
        assert len(a) > 0 and a.equals(b), subset  # bit-identical, embeddings included
        md = dataset_metadata(a)
        assert md["stickgen.text_encoder"] == "all-MiniLM-L6-v2" and md["stickgen.embedding_dim"] == "384"
        emb = np.stack(a["text_embedding"].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        texts = a["description"].to_pylist()
        same = [i for i in range(1, len(a)) if texts[i] == texts[0]]
        assert all(np.array_equal(emb[0], emb[i]) for i in same)  # one vector per description
    m1 = pq.read_table(out1 / "manifest.parquet").drop_columns(["seconds"])
    m2 = pq.read_table(out2 / "manifest.parquet").drop_columns(["seconds"])
    assert m1.equals(m2)


# --- synthesized data: streaming with bounded memory ---------------------------------------------


class PlasmaPeak:
    """Samples the object store's bytes in use (all nodes) every 20 ms while running."""

    def __init__(self):
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self._reply = get_memory_info_reply
        self.baseline = self.now()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def now(self) -> int:
        return int(self._reply(self._state).store_stats.object_store_bytes_used)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_synthetic_dataset_streams_through_many_blocks_with_bounded_memory(ray_local, tmp_path):
    from stickgen.motion.synth import SYNTH_ACTIONS, synthesize, write_clip_bvh

    src = tmp_path / "synth"
    src.mkdir()
    for k, action in enumerate(SYNTH_ACTIONS):  # 14 one-minute takes, ~11 windows each
        write_clip_bvh(synthesize(action, seed=k, seconds=60.0), src / f"synth_{action}_{k:03d}.bvh")
    block = 128 * 1024
    with PlasmaPeak() as mem:
        summary = run([src], tmp_path / "out", **{
            "parallelism.target_block_mib": block / 2**20, "parallelism.max_files_per_task": 1,
            "embedding.encoder": "hash-384", "output.keep_intermediate": True})
    n = summary["windows"]["total"]
    data_bytes = sum(f.stat().st_size for f in (tmp_path / "out" / "_work" / "scored").glob("*.arrow"))
    row_bytes = 250 * (48 + 6) * 4  # motion + physics per window
    assert n >= 140 and n * row_bytes > 50 * block  # the dataset spans dozens of target blocks ...
    assert summary["parallelism"]["scored_blocks"] >= 50  # ... and went through as that many blocks
    assert summary["parallelism"]["convert_tasks"] == 14 and summary["parallelism"]["files_per_task_max"] == 1
    peak = mem.peak - mem.baseline
    # streaming: convert->write and read->finalize->write are fused, so window blocks never pile
    # up in the object store: its peak stays within a few blocks, a small fraction of the data
    # that went through (measured: +107 KB for 8.3 MB of windows in 84 blocks)
    print(f"windows {n}, window bytes {n * row_bytes}, scored IPC {data_bytes}, "
          f"scored blocks {summary['parallelism']['scored_blocks']}, peak object store +{peak} bytes")
    assert peak < 4 * block and peak < 0.1 * n * row_bytes, (peak, n * row_bytes, data_bytes)
    assert summary["files"]["total"] == 14 and summary["windows"]["pretrain"] > 0


def test_an_encoder_that_fails_stops_the_job_with_a_typed_error(ray_local, tmp_path):
    """The encoder runs in an actor: an encoder that cannot load stops the job in the driver with
    StickgenError(reason="encoder") naming the problem, before any dataset is written."""
    from stickgen.errors import StickgenError
    from stickgen.motion.synth import synthesize_dataset

    synthesize_dataset(tmp_path / "clips", n_per_action=1, seed=3)
    with pytest.raises(StickgenError) as e:
        run([tmp_path / "clips"], tmp_path / "out", **{"embedding.encoder": "no-such-encoder"})
    assert e.value.reason == "encoder" and "no-such-encoder" in str(e.value)
    assert not list((tmp_path / "out" / "pretrain").glob("*.parquet"))


def test_encoder_actors_return_the_in_process_vectors_without_importing_pandas_or_ray_data(ray_local):
    """The EncoderPool actors exchange plain lists and NumPy arrays: any `pa.array` call makes
    pyarrow import pandas (~0.5 s of a core in a fresh actor) and Ray Data costs more, so a fresh
    encoder process must load neither. Known answer: each chunk's vectors are bit-identical to
    the same chunk encoded in process."""
    import sys

    import ray

    from stickgen.data.pipeline import EncoderPool, Resources
    from stickgen.text.embedder import TextEmbedder, chunk_texts

    texts = ["a man waves with both hands", "a woman runs", "a person jumps twice", "a man waves with both hands"]
    pool = EncoderPool(load_config().embedding, Resources(cpus=1.0, gpus=0.0, nodes=1))
    try:
        emb, encoder, dim = pool.embed(texts, batch_size=2)
        loaded = ray.get(pool.actors[0].__ray_call__.remote(
            lambda self: sorted(m for m in ("pandas", "ray.data", "torch") if m in sys.modules)))
        got = [ray.get(r) for r in emb.refs]
    finally:
        pool.close()
    assert loaded == ["torch"]
    chunks = chunk_texts(texts, 2)
    assert emb.texts == [t for c in chunks for t in c] and len(emb.texts) == 3 and encoder == "all-MiniLM-L6-v2"
    local = TextEmbedder(encoder, 2, "cpu", 1)
    for c, m in zip(chunks, got):
        assert m.dtype == np.float32 and m.shape == (len(c), dim) == (len(c), 384)
        np.testing.assert_array_equal(m, local.encode(c))


def test_an_encoder_that_dies_after_loading_is_restarted_once_then_stops_the_job(ray_local):
    """An encoder process that dies after it loaded (a node's OOM killer, a lost worker) is
    restarted once by Ray (max_restarts=1) and the texts are still embedded, bit-identical to
    in-process; a second death exhausts the restart and the driver gets
    StickgenError(reason="encoder") naming the failure, not a hang or a raw Ray error."""
    import ray

    from stickgen.data.pipeline import EncoderPool, Resources
    from stickgen.errors import StickgenError
    from stickgen.text.embedder import TextEmbedder, chunk_texts

    texts = ["a man waves with both hands", "a woman runs", "a person jumps twice"]
    cfg = load_config(None, {"embedding.encoder": "hash-384"}).embedding
    pool = EncoderPool(cfg, Resources(cpus=1.0, gpus=0.0, nodes=1))
    actor = pool.actors[0]

    def pid():  # the actor's process id; None while it is dead
        try:
            return ray.get(actor.__ray_call__.remote(lambda self: __import__("os").getpid()), timeout=60)
        except ray.exceptions.RayActorError:
            return None

    def crash(old_pid):  # kill as a crash would, and wait until it has landed (ray.kill is async)
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 60
        while pid() == old_pid:
            assert time.monotonic() < deadline, "the actor did not die"
            time.sleep(0.05)

    try:
        first = pid()
        crash(first)  # Ray restarts it (max_restarts=1) ...
        emb, encoder, dim = pool.embed(texts, batch_size=2)
        assert pid() not in (None, first)  # ... as a new process, which embedded the texts
        local = TextEmbedder(encoder, 2, "cpu", 1)
        for c, r in zip(chunk_texts(texts, 2), emb.refs):
            np.testing.assert_array_equal(ray.get(r), local.encode(c))

        crash(pid())  # the second crash: no restart left
        with pytest.raises(StickgenError) as e:
            pool.embed(texts, batch_size=2)
    finally:
        pool.close()
    assert e.value.reason == "encoder" and "text encoder failed" in str(e.value)
