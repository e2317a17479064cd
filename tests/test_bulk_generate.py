"""Bulk generation (stickgen/generate/bulk.py) on a real local Ray with a tiny random checkpoint.

Random weights fail the default (SFT) quality gate, which exercises the retry path: every clip is
regenerated once with a new seed and then kept with passed_quality=False. Runs that test
determinism and resume use a gate everything passes, so each item is sampled exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stickgen.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# (prompt, seed, checkpoint) -> motion is reproducible up to float rounding whatever the batch;
# measured max |diff| ~1e-5 body units between batch sizes 1, 2, 5 and 16 (1 unit = body height).
MOTION_ATOL = 1e-4

PROMPT_LINES = [
    {"prompt": "a person walks forward"},
    {"prompt": "a person waves both arms", "seed": 7, "seconds": 3},
    {"prompt": "someone jumps twice", "actions": "jump:0-2,idle:2-4"},
    {"prompt": "a dancer spins", "seconds": 2, "mood": "happy"},  # unknown field: ignored, reported
    {"prompt": "too long", "seconds": 12},                         # bad: seconds
    {"prompt": "flying", "actions": "fly:0-3"},                    # bad: unknown action
    "this line is not JSON",                                       # bad: line
    {"prompt": "a person walks forward"},                          # duplicate of line 1
    "",                                                            # blank
    {"seconds": 3},                                                # bad: prompt
    {"prompt": "late start", "actions": "walk:5-6"},               # bad: starts after the end (4 s)
    {"prompt": "negative seed", "seed": -1},                       # bad: seed
]
GOOD = 4
K = 2
SECONDS = 4.0


def _write_prompts(path: Path, lines) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _read_out(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted((out / "data").glob("part-*.parquet"))])


def _tiny_checkpoint(d: Path, encoder: str) -> Path:
    import torch

    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig

    cfg = ModelConfig.variant("tiny", embedding_dim=384)
    torch.manual_seed(0)
    save_checkpoint(d, MotionDenoiser(cfg), denoiser_config(cfg, text_encoder=encoder))
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def ckpt_hash(tmp_path_factory) -> Path:
    """The same tiny model conditioned on the test-only hash encoder: the preemption tests are
    about resuming, and skipping MiniLM's load in two more processes keeps this file fast."""
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-hash", "hash-384")


@pytest.fixture(scope="module")
def run_a(ray_local, ckpt, tmp_path_factory):
    """4 good prompts x K=2, strict gate (all fail -> one retry -> kept flagged), GIF renders."""
    from stickgen.generate.bulk import BulkConfig, run_bulk

    tmp = tmp_path_factory.mktemp("bulk_a")
    prompts = _write_prompts(tmp / "prompts.jsonl", PROMPT_LINES)
    cfg = BulkConfig(prompts=str(prompts), checkpoint=str(ckpt), out=str(tmp / "out"), samples_per_prompt=K,
                     seconds=SECONDS, max_retries=1, render="gif", batch_size=4)
    summary = run_bulk(cfg, verbose=False)
    return cfg, summary, Path(cfg.out)


def test_every_prompt_times_k_appears_exactly_once(run_a):
    from stickgen.generate.bulk import item_id, read_prompts

    cfg, summary, out = run_a
    specs, _, _ = read_prompts(cfg.prompts, cfg.seconds)
    assert len(specs) == GOOD
    want = sorted(item_id(s.prompt_id, k) for s in specs for k in range(K))
    got = _read_out(out)["id"].to_pylist()
    assert sorted(got) == want  # each exactly once, nothing else
    c = summary["clips"]
    assert (c["total"], c["written_total"], c["missing"], c["duplicates"]) == (GOOD * K, GOOD * K, 0, 0)


def test_bad_lines_are_listed_with_their_fate(run_a):
    _, summary, out = run_a
    fates = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
    assert [f["line"] for f in fates] == list(range(1, len(PROMPT_LINES) + 1))  # every input line
    by_line = {f["line"]: f for f in fates}
    assert [by_line[i]["status"] for i in (1, 2, 3, 4)] == ["ok"] * 4
    assert all(by_line[i]["samples_written"] == K for i in (1, 2, 3, 4))
    assert (by_line[5]["status"], by_line[5]["field"]) == ("bad", "seconds")
    assert (by_line[6]["status"], by_line[6]["field"]) == ("bad", "actions") and "fly" in by_line[6]["error"]
    assert (by_line[7]["status"], by_line[7]["field"]) == ("bad", "line")
    assert by_line[8]["status"] == "duplicate" and "line 1" in by_line[8]["error"]
    assert by_line[9]["status"] == "blank"
    assert (by_line[10]["field"], by_line[11]["field"], by_line[12]["field"]) == ("prompt", "actions", "seed")
    p = summary["prompts"]
    assert (p["ok"], p["bad"], p["duplicate"], p["blank"]) == (4, 6, 1, 1)
    assert p["ignored_fields"] == ["mood"]


def test_output_reads_back_through_the_schema(run_a):
    from stickgen.data.schema import check_table, dataset_metadata, table_to_arrays
    from stickgen.motion.skeleton import validate_v3
    from stickgen.text.actions import ACTION_ID

    _, _, out = run_a
    t = _read_out(out)
    check_table(t, generated=True)
    a = table_to_arrays(t)
    assert a["motion"].shape == (len(t), 250, 48) and a["text_embedding"].shape == (len(t), 384)
    assert dataset_metadata(t)["stickgen.text_encoder"] == "all-MiniLM-L6-v2"
    rows = t.select(["prompt", "n_frames", "source", "checkpoint_id", "description"]).to_pylist()
    for i, r in enumerate(rows):
        n = r["n_frames"]
        want_s = {"a person waves both arms": 3.0, "a dancer spins": 2.0}.get(r["prompt"], SECONDS)
        assert n == int(want_s * 25) and a["mask"][i].sum() == n and not a["mask"][i, n:].any()
        validate_v3(a["motion"][i][a["mask"][i]])  # connected figure on every valid frame
        assert np.allclose(a["motion"][i, n:], a["motion"][i, n - 1])  # padding repeats the last frame
        assert not a["physics"][i, n:].any()
        assert r["source"] == "generated" and r["description"] == r["prompt"] and len(r["checkpoint_id"]) == 16
    jump = [i for i, r in enumerate(rows) if r["prompt"] == "someone jumps twice"]
    assert jump and all((a["actions"][i, :50] == ACTION_ID["jump"]).all() for i in jump)
    assert all((a["actions"][i, 50:100] == ACTION_ID["idle"]).all() for i in jump)
    walk = [i for i, r in enumerate(rows) if r["prompt"] == "a person walks forward"]
    assert all((a["actions"][i, :100] == ACTION_ID["walk"]).all() for i in walk)  # from the text


def test_failing_clips_are_retried_with_a_new_seed_then_flagged(run_a):
    from stickgen.generate.bulk import item_id, item_seed, read_prompts

    cfg, summary, out = run_a
    specs = {s.prompt_id: s for s in read_prompts(cfg.prompts, cfg.seconds)[0]}
    t = _read_out(out).to_pylist()
    ledger = [json.loads(x) for x in (out / "attempts.jsonl").read_text().splitlines()]
    failed0 = {r["id"]: r for r in ledger if r["attempt"] == 0}
    for r in t:
        s, k = specs[r["file"]], int(r["clip_id"].rsplit(".", 1)[1])
        assert r["id"] == item_id(s.prompt_id, k)
        if r["passed_quality"]:
            assert r["quality"] >= cfg.gate.min_quality and r["physics_valid"]
            assert r["seed"] == item_seed(s, k, r["attempt"])
        else:  # failed every attempt: kept at the last one, flagged
            assert r["attempt"] == cfg.max_retries == 1
            assert r["seed"] == item_seed(s, k, 1) != item_seed(s, k, 0)
            assert failed0[r["id"]]["seed"] == item_seed(s, k, 0)
    assert item_seed(specs[next(iter(specs))], 0) >= 0
    explicit = next(s for s in specs.values() if s.seed == 7)
    assert [item_seed(explicit, k) for k in range(K)] == [7, 8]  # a line's seed + k
    q = summary["quality"]
    assert q["passed"] + q["failed_kept"] == GOOD * K
    assert 0.0 <= q["pass_rate"] <= 1.0


def test_gif_renders_play_with_the_right_frame_count(run_a):
    from PIL import Image

    from stickgen.generate.bulk import render_path

    _, summary, out = run_a
    t = _read_out(out).select(["file", "clip_id", "n_frames"]).to_pylist()
    assert summary["renders"]["files"] == len(t)
    for r in t:
        p = render_path(out, r["file"], int(r["clip_id"].rsplit(".", 1)[1]), "gif")
        with Image.open(p) as im:
            assert im.format == "GIF" and im.n_frames == r["n_frames"]


def test_render_stage_writes_playable_mp4_and_svg(run_a, tmp_path):
    from stickgen.generate.bulk import render_batch, render_path

    _, _, out = run_a
    t = _read_out(out)
    short = t.filter(pa.compute.equal(t["n_frames"], 50)).slice(0, 1)  # one 2 s clip keeps this fast
    batch = pa.table({"prompt_id": short["file"], "k": pa.array([0], pa.int32()), "prompt": short["prompt"],
                      "motion": short["motion"], "n_frames": short["n_frames"], "final": pa.array([True])})
    for fmt in ("mp4", "svg"):
        res = render_batch(batch, str(tmp_path), fmt)
        assert res["_render_s"][0].as_py() > 0
        p = render_path(tmp_path, short["file"][0].as_py(), 0, fmt)
        data = p.read_bytes()
        if fmt == "mp4":
            assert data[4:8] == b"ftyp"
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg")
    not_final = batch.set_column(5, "final", pa.array([False]))
    render_batch(not_final, str(tmp_path / "none"), "svg")
    assert not (tmp_path / "none").exists()  # only final clips are rendered


def test_rerun_on_the_same_out_generates_nothing(run_a):
    from stickgen.generate.bulk import run_bulk

    cfg, _, out = run_a
    before = {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("part-*.parquet")}
    s = run_bulk(cfg, verbose=False)
    assert s["clips"]["generated_this_run"] == 0 and s["clips"]["already_written"] == GOOD * K
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("part-*.parquet")} == before


def test_lost_shard_is_regenerated_at_its_next_attempt_identically(run_a):
    """A shard lost after its clips' failed attempts were logged: the re-run samples only the
    missing clips, starting at the logged attempt + 1, and writes the same rows again."""
    from stickgen.data.schema import table_to_arrays
    from stickgen.generate.bulk import run_bulk

    cfg, _, out = run_a
    shard = sorted((out / "data").glob("part-*.parquet"))[0]
    old = pq.read_table(shard)
    shard.unlink()
    s = run_bulk(cfg, verbose=False)
    assert s["clips"]["generated_this_run"] == len(old)
    assert s["this_run"]["sample_attempts"] == len(old)  # attempt 0 was not sampled again
    new = pq.read_table(shard)  # same ids -> same shard name
    assert new.select(["id", "seed", "attempt"]).equals(old.select(["id", "seed", "attempt"]))
    m_old, m_new = table_to_arrays(old, ("motion",))["motion"], table_to_arrays(new, ("motion",))["motion"]
    assert np.abs(m_old - m_new).max() <= MOTION_ATOL


def test_rerun_with_other_settings_is_refused(run_a):
    from dataclasses import replace

    from stickgen.generate.bulk import run_bulk

    cfg, _, _ = run_a
    with pytest.raises(ConfigError, match="steps"):
        run_bulk(replace(cfg, steps=3), verbose=False)


def test_prompt_files_txt_and_parquet(tmp_path):
    from stickgen.generate.bulk import read_prompts

    txt = tmp_path / "p.txt"
    txt.write_text("a person walks\n\n  a person runs  \na person walks\n")
    specs, fates, _ = read_prompts(txt, 5.0)
    assert [s.prompt for s in specs] == ["a person walks", "a person runs"]
    assert [f.status for f in fates] == ["ok", "blank", "ok", "duplicate"]
    assert all(s.seconds == 5.0 for s in specs)
    pqf = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["wave", "kick", ""], "seconds": [2.0, None, 3.0],
                             "seed": [1, None, 2], "actions": [None, "kick:0-1", None]}), pqf)
    specs, fates, _ = read_prompts(pqf)
    assert [(s.prompt, s.seconds, s.seed, s.actions) for s in specs] == [("wave", 2.0, 1, None),
                                                                          ("kick", 10.0, None, "kick:0-1")]
    assert (fates[2].status, fates[2].field) == ("bad", "prompt")
    bad = tmp_path / "p.csv"
    bad.write_text("x\n")
    with pytest.raises(ConfigError, match="unsupported"):
        read_prompts(bad)
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        from stickgen.generate.bulk import BulkConfig

        BulkConfig(prompts="p", checkpoint="c", out="o", samples_per_prompt=0)


# ----------------------------------------------------------------------------- preemption

RESUME_LINES = [{"prompt": p} for p in ("a person walks", "a person runs", "someone kicks", "a person bows",
                                        "someone claps")]
RESUME_K = 4
# a gate every clip passes: one sample per item, so the kill lands mid-way through one round
PERMISSIVE = ["--min-quality", "0", "--no-physics-gate", "--max-retries", "0", "--steps", "100"]


def _wait_resources_free(ray, timeout=90.0):
    total = ray.cluster_resources().get("CPU", 0)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ray.available_resources().get("CPU", 0) >= total:
            return
        time.sleep(0.2)
    raise AssertionError("the killed job's workers still hold CPUs")


@pytest.fixture(scope="module")
def killed_and_resumed(ray_local, ckpt_hash, tmp_path_factory):
    """`python -m jobs.generate` on this session's cluster, SIGKILLed after a few shards, then
    the same job run again to completion."""
    from jobs.generate import config_from_args, parse_args
    from stickgen.generate.bulk import run_bulk

    tmp = tmp_path_factory.mktemp("bulk_kill")
    prompts = _write_prompts(tmp / "prompts.jsonl", RESUME_LINES)
    out = tmp / "out"
    argv = [str(prompts), "--checkpoint", str(ckpt_hash), "--out", str(out), "-k", str(RESUME_K),
            "--batch-size", "1", "--seconds", "10", *PERMISSIVE]
    gcs = ray_local.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    log = open(tmp / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.generate", *argv, "--ray-address", gcs], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "data").glob("part-*.parquet"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the job ended before it could be killed: {(tmp / 'killed.log').read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)  # preemption: the driver dies without any cleanup
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        log.close()
    _wait_resources_free(ray_local)  # its sampler actors and in-flight tasks are gone too
    before = {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("part-*.parquet")}
    rows_before = len(_read_out(out))
    summary = run_bulk(config_from_args(parse_args(argv)), verbose=False)
    return out, argv, before, rows_before, summary


def test_killed_run_resumes_with_no_duplicates_or_gaps(killed_and_resumed):
    from stickgen.generate.bulk import item_id, prompt_id_of

    out, _, before, rows_before, summary = killed_and_resumed
    total = len(RESUME_LINES) * RESUME_K
    assert 3 <= rows_before < total  # really killed half-way
    ids = _read_out(out)["id"].to_pylist()
    want = {item_id(prompt_id_of(x["prompt"], 10.0, None, None), k) for x in RESUME_LINES for k in range(RESUME_K)}
    assert len(ids) == len(set(ids)) == total and set(ids) == want
    assert summary["clips"]["already_written"] == rows_before
    assert summary["clips"]["generated_this_run"] == total - rows_before
    after = {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("part-*.parquet")}
    assert all(after[name] == t for name, t in before.items())  # finished shards were not rewritten
    assert not [p for p in (out / "data").iterdir() if p.name.startswith(".")]  # no temp files left


def test_same_prompt_seed_checkpoint_gives_the_same_motion_across_batch_sizes(killed_and_resumed, tmp_path):
    """The killed+resumed run sampled one clip per call; this one samples 16 per call."""
    from jobs.generate import config_from_args, parse_args
    from stickgen.data.schema import table_to_arrays
    from stickgen.generate.bulk import run_bulk

    out, argv, _, _, _ = killed_and_resumed
    argv = list(argv)
    argv[argv.index("--out") + 1] = str(tmp_path / "out16")
    argv[argv.index("--batch-size") + 1] = "16"
    (tmp_path / "out16").mkdir()  # reuse the prompt embeddings (saves loading the encoder again)
    shutil.copy(out / "embeddings.parquet", tmp_path / "out16" / "embeddings.parquet")
    s = run_bulk(config_from_args(parse_args(argv)), verbose=False)
    assert not [x for x in s["stages"] if x["phase"] == "embed"]  # the cache was used
    a, b = _read_out(out), _read_out(tmp_path / "out16")
    a, b = a.take(pa.compute.sort_indices(a["id"])), b.take(pa.compute.sort_indices(b["id"]))
    assert a["id"].to_pylist() == b["id"].to_pylist() and a["seed"].to_pylist() == b["seed"].to_pylist()
    ma, mb = table_to_arrays(a, ("motion",))["motion"], table_to_arrays(b, ("motion",))["motion"]
    assert np.abs(ma - mb).max() <= MOTION_ATOL


@pytest.mark.parametrize("cpus,gpus,actors", [(2, 0, None), (2, 0, 2), (16, 0, None), (16, 1, None), (32, 4, None)])
def test_actor_pool_never_takes_every_cpu(cpus, gpus, actors):
    """An actor pool holding every CPU starves the other operators and hangs (ray-2.60-notes §1)."""
    from stickgen.generate.bulk import BulkConfig, plan_actors

    cfg = BulkConfig(prompts="p", checkpoint="c", out="o", actors=actors)
    p = plan_actors(cfg, cpus, gpus, n_items=10_000)
    assert p.actors * p.num_cpus <= cpus - 1 + 1e-9 and p.task_cpus > 0
    assert p.actors * p.num_cpus + p.task_cpus <= cpus + 1e-9  # at least one task always fits
    if gpus:
        assert (p.device, p.num_gpus, p.actors, p.batch_size) == ("cuda", 1.0, int(gpus), 1024)
    half = plan_actors(BulkConfig(prompts="p", checkpoint="c", out="o", gpus_per_actor=0.5), 16, 1, 10_000)
    assert (half.actors, half.num_gpus) == (2, 0.5)  # fractional GPUs: two actors share one


def test_prompt_encoder_pass_builds_for_a_gpu_node_and_encodes_chunk_by_chunk(ray_local):
    """Ray Data refuses, as the dataset is built, an operator that asks for GPUs without an explicit
    batch_size: the GPU branch of the prompt encoder pass is built here as a one-GPU node builds it
    (never run: no GPU here; benchmarks/gpu_ray_check.py runs it on one). The CPU branch runs: with
    batches of `chunk` rows each chunk is still one encoder call, so the vectors equal the chunks
    encoded in process, bit for bit."""
    import ray

    from stickgen.generate.bulk import embed_dataset
    from stickgen.text.embedder import TextEmbedder, chunk_texts

    texts = ["a man waves", "a woman walks", "someone kicks twice", "a bow", "the figure runs in a circle"]
    embed_dataset(texts, "hash-384", 2, cpus=16, gpus=1)  # raised ValueError with batch_size=None
    out = pa.concat_tables(ray.get(embed_dataset(texts, "hash-384", 2, cpus=2, gpus=0).to_arrow_refs()))
    got = dict(zip(out["text"].to_pylist(), np.asarray(out["embedding"].to_pylist(), np.float32)))
    enc = TextEmbedder("hash-384", 2, "cpu", 1)
    for chunk in chunk_texts(texts, 2):
        want = enc.encode(chunk)
        assert all(np.array_equal(got[t], w) for t, w in zip(chunk, want))
    assert sorted(got) == sorted(texts) and set(out["encoder"].to_pylist()) == {"hash-384"}
