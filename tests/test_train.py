"""Ray Train: SFT learns, accumulation is exact, a killed worker resumes from its checkpoint, an
interrupted run resumes on resubmission, and `stickgen submit sft` runs on a real head node.

All runs are real `TorchTrainer.fit()` calls on the session's local Ray (CPU, gloo), on a small
dataset made by the real preprocessing pipeline from synthesized clips."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stickgen.model.checkpoint import load_checkpoint
from stickgen.train.config import load_train_config
from stickgen.train.recipe import apply_overrides, run_training

REPO = Path(__file__).resolve().parents[1]
TINY_PRE = REPO / "configs" / "pretrain_tiny.yaml"
TINY_SFT = REPO / "configs" / "sft_tiny.yaml"


@pytest.fixture(scope="session")
def tiny_data(ray_local, tmp_path_factory):
    """A preprocessed (pretrain + sft) dataset of synthesized clips, via the real pipeline."""
    from stickgen.data.pipeline import load_config, run_preprocess
    from stickgen.motion.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("train_data")
    synthesize_dataset(root / "clips", n_per_action=3, seed=1)
    run_preprocess([str(root / "clips")], root / "data", load_config(), verbose=False)
    return root / "data"


def _cfg(path, tmp, data, **kw):
    return apply_overrides(load_train_config(path), data=str(data), storage_path=str(tmp), **kw)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def pretrained(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    return run_training(_cfg(TINY_PRE, tmp, tiny_data, max_steps=40))


def test_pretrain_exports_a_usable_best_checkpoint(pretrained):
    from stickgen.generate.sample import MotionGenerator

    best = Path(pretrained["best"])
    state, config = load_checkpoint(best)
    assert config["model_type"] == "motion_denoiser" and config["training_stage"] == "pretrain"
    assert (Path(pretrained["run_dir"]) / "logs" / "loss.png").exists()
    anim = MotionGenerator(best).generate(["a person waves"], seconds=2.0, seeds=[0], steps=2)[0]
    assert anim.motion.shape == (50, 48)


def test_sft_lowers_validation_loss(pretrained, tiny_data, tmp_path):
    cfg = _cfg(TINY_SFT, tmp_path, tiny_data, init_from=pretrained["best"], max_steps=40)
    cfg = apply_overrides(cfg)  # (no-op: keeps the CLI path honest)
    summary = run_training(cfg)
    vals = [r["val_loss"] for r in _records(summary["run_dir"]) if r.get("event") == "checkpoint"]
    assert len(vals) >= 2 and vals[-1] < vals[0], vals
    recs = [r for r in _records(summary["run_dir"]) if "loss" in r]
    assert {"loss_recon", "loss_velocity", "lr", "grad_norm", "samples_per_s", "tokens_per_s"} <= set(recs[0])
    assert json.loads(Path(summary["best"], "config.json").read_text())["training_stage"] == "sft"


def test_gradient_accumulation_is_exact(tiny_data, tmp_path):
    """2 workers x batch 2 x accum 2 == 1 worker x batch 8 x accum 1 after one optimizer step:
    the same pre-clip gradient norm (catches any loss-scaling error, which Adam's normalised step
    would hide) and the same weights (catches missing/duplicated synchronisation). Tolerance:
    float32 reduction-order noise, 1e-5 absolute on weights, 1e-4 relative on the grad norm."""
    runs = {}
    for name, (w, b, a) in {"ddp": (2, 2, 2), "single": (1, 8, 1)}.items():
        cfg = _cfg(TINY_PRE, tmp_path / name, tiny_data, workers=w, max_steps=1)
        cfg = apply_overrides(cfg)
        import dataclasses

        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, batch_size=b, grad_accum=a),
                                  data=dataclasses.replace(cfg.data, max_rows=8),
                                  run=dataclasses.replace(cfg.run, cpus_per_worker=0.5, shuffle_buffer=0))
        runs[name] = run_training(cfg)
    g = {k: [r for r in _records(v["run_dir"]) if r.get("step") == 1 and "grad_norm" in r][0]["grad_norm"]
         for k, v in runs.items()}
    assert g["ddp"] == pytest.approx(g["single"], rel=1e-4), g
    w1, _ = load_checkpoint(runs["ddp"]["best"])
    w2, _ = load_checkpoint(runs["single"]["best"])
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=0, msg=k)
    starts = [r for r in _records(runs["ddp"]["run_dir"]) if r.get("event") == "start"]
    assert starts[0]["effective_batch"] == 8


def test_killed_worker_resumes_from_last_checkpoint(tiny_data, tmp_path):
    import dataclasses

    cfg = _cfg(TINY_PRE, tmp_path, tiny_data, workers=2, max_steps=24)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, cpus_per_worker=0.5, checkpoint_every_steps=8,
                                                           log_every_steps=1, fault_inject_step=13, max_failures=1))
    summary = run_training(cfg)
    recs = _records(summary["run_dir"])
    assert (Path(summary["run_dir"]) / "logs" / ".fault_injected_13").exists()
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps[-1] == 24
    restart = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert len(restart) == 1, steps  # exactly one restart ...
    # ... from a checkpoint, not from zero. Which one: the last the controller had registered when
    # the worker died. The worker logs a checkpoint when it reports it and Train V2 registers reports
    # asynchronously, so the one reported just before the kill (step 12 here) may not count yet;
    # the step-8 checkpoint (every 8 steps) and the epoch-end ones before it always do.
    ckpts = {r["step"] for r in recs if r.get("event") == "checkpoint" and r["step"] < 13}
    resumed_from = steps[restart[0]] - 1
    assert resumed_from in ckpts and resumed_from >= 8, (resumed_from, sorted(ckpts), steps)
    assert steps[restart[0] - 1] == 13 - 1 or steps[restart[0] - 1] == 13, steps  # died at the injected step
    assert sum(r.get("event") == "start" for r in recs) == 1


def _as_schema_v1(src: Path, dst: Path) -> None:
    """A copy of a dataset in schema version 1's layout (nested 2-D lists), as older stickgen wrote."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stickgen.data.schema import ARRAY_SHAPES

    for f in [*src.glob("pretrain/*.parquet"), *src.glob("sft/*.parquet")]:
        t = pq.read_table(f)
        for name, (a, b) in ARRAY_SHAPES.items():
            col = t[name].combine_chunks()
            nested = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(col.values, b), a,
                                                       mask=col.is_null() if col.null_count else None)
            t = t.set_column(t.column_names.index(name), pa.field(name, nested.type), nested)
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"stickgen.schema_version": b"1"}), out)


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_training_batches_hold_each_rows_own_values(tiny_data, tmp_path, layout):
    """Known answer: every sample of every training batch (Ray Data read -> split filter ->
    local shuffle -> collate, as the train loop iterates) carries exactly the motion, actions and
    text embedding stored on disk for its id. pyarrow's take/filter on sliced nested lists once
    paired motion with other rows' ids here; version-1 (nested) datasets are flattened on read."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stickgen.data.schema import table_to_arrays
    from stickgen.train.loop import WindowCollate, sample_seed
    from stickgen.train.recipe import load_datasets

    data = tiny_data
    if layout == "v1":
        data = tmp_path / "v1"
        _as_schema_v1(tiny_data, data)
    cfg = _cfg(TINY_PRE, tmp_path, data)
    truth = pa.concat_tables([pq.read_table(f) for f in sorted((tiny_data / "pretrain").glob("*.parquet"))])
    arr = table_to_arrays(truth, ("motion", "actions", "text_embedding"))
    train, _, n_train, _, _ = load_datasets(cfg)
    seen = 0
    for epoch in range(2):
        by_seed = {sample_seed(i, epoch, cfg.run.seed): j for j, i in enumerate(truth["id"].to_pylist())}
        for batch in train.iter_torch_batches(batch_size=5, collate_fn=WindowCollate(epoch, cfg.run.seed),
                                              local_shuffle_buffer_size=16, local_shuffle_seed=epoch):
            for k, s in enumerate(batch["seed"].tolist()):
                j = by_seed[s]
                assert truth["split"][j].as_py() == "train"
                np.testing.assert_array_equal(batch["motion"][k].numpy(), arr["motion"][j])
                np.testing.assert_array_equal(batch["actions"][k].numpy(), arr["actions"][j])
                np.testing.assert_array_equal(batch["text_embedding"][k].numpy(), arr["text_embedding"][j])
                seen += 1
    assert seen == 2 * n_train > 0


def test_interrupted_run_resumes_with_same_steps_and_schedule(tiny_data, tmp_path):
    """Run A straight through; run B dies at step 13 (no retries), then the same command is run
    again: B continues from its step-8 checkpoint, with the same step count, learning-rate
    schedule and data order, so it ends with A's weights."""
    import dataclasses

    base = _cfg(TINY_PRE, tmp_path, tiny_data, max_steps=20)
    base = dataclasses.replace(base, run=dataclasses.replace(base.run, checkpoint_every_steps=8, log_every_steps=1))
    a = run_training(dataclasses.replace(base, run=dataclasses.replace(base.run, name="run-a")))
    broken = dataclasses.replace(base, run=dataclasses.replace(base.run, name="run-b", fault_inject_step=13,
                                                               max_failures=0))
    with pytest.raises(Exception):
        run_training(broken)
    b = run_training(broken)  # same name + storage: Ray Train resumes; the fault fires only once
    lr_a = {r["step"]: r["lr"] for r in _records(a["run_dir"]) if "lr" in r}
    lr_b = {r["step"]: r["lr"] for r in _records(b["run_dir"]) if "lr" in r}
    assert max(lr_b) == 20 and all(lr_b[s] == pytest.approx(lr_a[s]) for s in lr_b)
    wa, _ = load_checkpoint(Path(a["run_dir"]) / "last")
    wb, _ = load_checkpoint(Path(b["run_dir"]) / "last")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-5, msg=k)


def test_submit_sft_to_a_head_node(ray_head, pretrained, tiny_data, tmp_path):
    env = dict(ray_head.env)
    args = ["sft", "--cluster", ray_head.address, "--", "--config", "configs/sft_tiny.yaml",
            "--init-from", pretrained["best"], "--data", str(tiny_data), "--storage", str(tmp_path),
            "--max-steps", "6"]
    out = subprocess.run([sys.executable, "-m", "cli", "submit", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split("submitted ")[1].split()[0]
    deadline = time.time() + 400
    status = ""
    while time.time() < deadline:
        st = subprocess.run([sys.executable, "-m", "cli", "jobs", "status", job_id, "--cluster", ray_head.address],
                            cwd=REPO, env=env, capture_output=True, text=True)
        status = st.stdout
        if any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(3)
    logs = subprocess.run([sys.executable, "-m", "cli", "jobs", "logs", job_id, "--cluster", ray_head.address],
                          cwd=REPO, env=env, capture_output=True, text=True).stdout
    assert "SUCCEEDED" in status, status + logs[-3000:]
    assert "[stickgen] step 1/6" in logs and "effective batch" in logs and '"total_steps": 6' in logs


def test_rerun_over_checkpoints_of_another_architecture_is_refused_clearly(tmp_path):
    """A rerun of a config resumes its run folder; if the folder's checkpoints hold a different
    architecture (here: saved before the denoiser's final norm) the driver says so up front."""
    from stickgen.errors import ConfigError
    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig
    from stickgen.train.recipe import check_resumable

    mc = ModelConfig.variant("tiny", embedding_dim=384)
    old = denoiser_config(mc, text_encoder="all-MiniLM-L6-v2")
    del old["wrapper"]["final_norm"]
    save_checkpoint(tmp_path / "run" / "checkpoint_2026-01-01_00-00-00.000000", MotionDenoiser(mc, final_norm=False), old)
    (tmp_path / "run" / "checkpoint_manager_snapshot.json").write_text("{}")  # sorts after the folders
    check_resumable(tmp_path / "run", old)  # same architecture: resumable
    with pytest.raises(ConfigError, match="final_norm"):
        check_resumable(tmp_path / "run", denoiser_config(mc, text_encoder="all-MiniLM-L6-v2"))


def test_init_from_a_denoiser_saved_before_the_final_norm(tmp_path):
    """SFT from an older pretrain checkpoint: every weight loads, the new final norm starts at its
    init and is reported as new (never silently)."""
    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig
    from stickgen.train.config import ModelSection, TrainConfig
    from stickgen.train.loop import build_model, init_weights

    mc = ModelConfig.variant("tiny", embedding_dim=384, dropout=0.1)
    old_model = MotionDenoiser(mc, final_norm=False)
    old = denoiser_config(mc, text_encoder="all-MiniLM-L6-v2")
    del old["wrapper"]["final_norm"]
    save_checkpoint(tmp_path / "old", old_model, old)
    model = build_model(TrainConfig(model=ModelSection(variant="tiny", dropout=0.1)), 384)
    report = init_weights(model, str(tmp_path / "old"))
    assert report == {"kind": "denoiser", "new": ["final_norm.weight"]}
    for k, v in old_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
