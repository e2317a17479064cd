"""Training recipes (pretrain and SFT): the driver side of a run.

    stickgen train pretrain --config configs/pretrain_medium.yaml --data data/preprocessed
    stickgen train sft --config configs/sft_medium.yaml --init-from runs/pretrain-medium-xxxx/best

Both procedures share the loop (`train.loop`); they differ in data subset and recipe (the SFT card:
init from a pretrained checkpoint, lr 1e-4, 20 epochs, batch 2 x accum 32, curated data). The
driver reads the Parquet dataset with Ray Data, derives the schedule from the row count, computes
feature statistics (or takes them from init_from), names the run deterministically, and hands
`train_loop_per_worker` to `TorchTrainer`. After `fit()` it exports the best checkpoint (lowest
val_loss) to `RUN/best` in the one checkpoint format, ready for `generate` and Serve, and draws
`RUN/logs/loss.png`.

Resuming: Ray Train V2 resumes a run that reuses its `RunConfig(name, storage_path)`; run names are
deterministic (stage, variant, a hash of config + data + init), so re-running the same command —
or `--resume NAME` — continues from the last checkpoint, optimizer, schedule and data position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..model.checkpoint import read_config
from ..model.denoiser import denoiser_config, motion_to_features
from ..model.transformer import ModelConfig
from .config import TrainConfig

STATS_ROWS = 2048  # windows sampled for feature mean/std (per-dimension; plenty for 48 numbers)
ROW_BYTES = 62_000  # one 250-frame window row in memory (motion + physics + embedding + columns)


def _replace(cfg: TrainConfig, **sections) -> TrainConfig:
    return dataclasses.replace(cfg, **sections)


def apply_overrides(cfg: TrainConfig, *, stage: str | None = None, init_from: str | None = None,
                    data: str | None = None, workers: int | None = None, gpu: bool | None = None,
                    name: str | None = None, storage_path: str | None = None, max_steps: int | None = None) -> TrainConfig:
    """CLI flags over the YAML (each flag maps to exactly one config key)."""
    if stage is not None and stage != cfg.stage:
        raise ConfigError(f"config stage is {cfg.stage!r} but the command is `train {stage}`")
    run, sch = cfg.run, cfg.schedule
    if workers is not None:
        run = dataclasses.replace(run, workers=workers)
    if gpu is not None:
        run = dataclasses.replace(run, use_gpu=gpu)
    if name is not None:
        run = dataclasses.replace(run, name=name)
    if storage_path is not None:
        run = dataclasses.replace(run, storage_path=storage_path)
    if max_steps is not None:
        sch = dataclasses.replace(sch, max_steps=max_steps)
    out = _replace(cfg, run=run, schedule=sch)
    if init_from is not None:
        out = _replace(out, init_from=init_from)
    if data is not None:
        out = _replace(out, data=dataclasses.replace(cfg.data, path=data))
    return out


def data_hash(folder: Path) -> str:
    """Identity of a dataset folder: names and sizes of its Parquet shards."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.parquet")):
        h.update(f"{p.relative_to(folder)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:12]


def _subset_dir(cfg: TrainConfig) -> Path:
    root = Path(cfg.data.path)
    sub = root / cfg.data.subset
    if not sub.exists():
        raise ConfigError(f"data.path {root}: no {cfg.data.subset}/ folder (run `stickgen preprocess` first)")
    return sub


def load_datasets(cfg: TrainConfig):
    """(train_ds, val_ds, n_train, embedding_dim, encoder name) from the preprocessed Parquet."""
    import pyarrow.parquet as pq
    import ray.data
    from ray.data.expressions import col

    from ..data.schema import dataset_metadata, flatten_arrays, is_nested_layout
    from .loop import TRAIN_COLUMNS

    sub = _subset_dir(cfg)
    files = sorted(str(p) for p in sub.rglob("*.parquet"))
    if not files:
        raise ConfigError(f"{sub}: no Parquet shards")
    schemas = [pq.read_schema(f) for f in files]  # footers only
    md = dataset_metadata(schemas[0])
    enc = md.get("stickgen.text_encoder")
    if enc and enc != cfg.text_encoder:
        raise ConfigError(f"{sub} was embedded with {enc!r} but the config says text_encoder {cfg.text_encoder!r}")
    dim = int(md.get("stickgen.embedding_dim", 0)) or None
    n_train = ray.data.read_parquet(files, columns=["split"]).filter(expr=col("split") == "train").count()
    n_val = ray.data.read_parquet(files, columns=["split"]).filter(expr=col("split") == "val").count()
    if n_train == 0:
        raise ConfigError(f"{sub}: no rows with split == 'train'")
    ds = ray.data.read_parquet(files, columns=TRAIN_COLUMNS + ["split"])
    if any(is_nested_layout(s) for s in schemas):
        # schema version 1 (nested lists): flatten before any filter or shuffle touches them
        # (pyarrow's take/filter corrupt sliced nested lists: see stickgen.data.schema)
        ds = ds.map_batches(flatten_arrays, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    train = ds.filter(expr=col("split") == "train")
    if cfg.data.max_rows:
        train = train.limit(cfg.data.max_rows)
        n_train = min(n_train, cfg.data.max_rows)
    if n_val == 0:  # tiny curated sets can lack val clips: validate on training rows, and say so
        print(f"[stickgen] warning: {sub} has no val rows; validating on (a sample of) train rows")
        val = train
    else:
        val = ds.filter(expr=col("split") == "val")
    val = val.limit(cfg.run.val_max_rows or 256).materialize()
    # Small sets are materialised into the (distributed) object store: training then needs no
    # read tasks, so workers may take every CPU. Big sets stream, and need CPU headroom for reads.
    store = ray.cluster_resources().get("object_store_memory", 2e9)
    if n_train * ROW_BYTES < 0.25 * store:
        train = train.materialize()
    elif cfg.run.workers * cfg.run.cpus_per_worker >= ray.cluster_resources().get("CPU", 1):
        print("[stickgen] warning: training workers take every CPU; streaming reads need some left")
    if dim is None:
        dim = len(train.take(1)[0]["text_embedding"])
    return train, val, n_train, dim, enc or cfg.text_encoder


def feature_stats(train_ds) -> tuple[list[float], list[float]]:
    from ..data.schema import table_to_arrays

    import pyarrow as pa

    tables = []
    for b in train_ds.limit(STATS_ROWS).iter_batches(batch_size=512, batch_format="pyarrow"):
        tables.append(b)
    arr = table_to_arrays(pa.concat_tables(tables), ("motion", "mask"))
    f = motion_to_features(torch.tensor(arr["motion"]))[torch.tensor(arr["mask"])]
    return f.mean(0).tolist(), f.std(0).clamp_min(1e-3).tolist()


def _init_stats(init_from: str | None):
    """Feature stats of an init_from denoiser checkpoint (SFT keeps pretraining's normalisation)."""
    if not init_from:
        return None
    from ..model.checkpoint import load_checkpoint

    state, config = load_checkpoint(init_from)
    if config.get("model_type") == "motion_denoiser":
        return state["feat_mean"].tolist(), state["feat_std"].tolist(), config
    return None


def run_name(cfg: TrainConfig, dhash: str) -> str:
    if cfg.run.name:
        return cfg.run.name
    key = f"{cfg.fingerprint()}:{dhash}:{cfg.init_from}"
    return f"{cfg.stage}-{cfg.model.variant}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def run_training(cfg: TrainConfig, on_start=None) -> dict:
    """Run (or resume) one training run on the current Ray cluster; returns a summary dict.
    `on_start(run_dir, total_steps)` is called just before training starts (progress displays)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .loop import train_loop_per_worker

    if cfg.stage == "sft" and not cfg.init_from:
        raise ConfigError("SFT starts from a pretrained checkpoint: set init_from in the config or pass --init-from")
    if cfg.init_from and "://" not in cfg.init_from and Path(cfg.init_from).exists():
        # Train workers run in their own working directory: hand them an absolute path
        cfg = _replace(cfg, init_from=str(Path(cfg.init_from).resolve()))
    if not ray.is_initialized():
        ray.init()
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # resume-by-count is exact
    train_ds, val_ds, n_train, dim, enc = load_datasets(cfg)
    sub = _subset_dir(cfg)
    dhash = data_hash(sub)
    W, B, A = cfg.run.workers, cfg.schedule.batch_size, cfg.schedule.grad_accum
    rows_per_worker = n_train // W if W > 1 else n_train
    if rows_per_worker < B:
        raise ConfigError(f"{n_train} training rows cannot give each of {W} workers a batch of {B}")
    micro = math.ceil(rows_per_worker / B)
    steps_per_epoch = math.ceil(micro / A)
    total = steps_per_epoch * cfg.schedule.epochs
    if cfg.schedule.max_steps:
        total = min(total, cfg.schedule.max_steps)
    warmup = min(int(round(cfg.optim.warmup_epochs * steps_per_epoch)), max(total - 1, 0))

    init_stats = _init_stats(cfg.init_from)
    if init_stats is not None:
        mean, std, _ = init_stats
        stats_from_data = False
    else:
        mean, std = feature_stats(train_ds)
        stats_from_data = True
    name = run_name(cfg, dhash)
    storage = cfg.run.storage_path
    local_storage = "://" not in storage
    if local_storage:
        storage = str(Path(storage).resolve())
    run_dir = Path(storage) / name if local_storage else Path("runs") / name
    mc = ModelConfig.variant(cfg.model.variant, embedding_dim=dim, dropout=cfg.model.dropout)
    ckpt_config = denoiser_config(
        mc, text_encoder=enc, stage=cfg.stage, data_hash=dhash,
        sampler={"steps": cfg.sampler.steps, "guidance": cfg.sampler.guidance},
        extra={"run": name, "recipe": {"stage": cfg.stage, "lr": cfg.optim.lr, "epochs": cfg.schedule.epochs,
                                        "batch_size": B, "grad_accum": A, "workers": W,
                                        "weight_decay": cfg.optim.weight_decay, "init_from": cfg.init_from},
               "training_data": str(Path(cfg.data.path) / cfg.data.subset), "train_rows": n_train})
    meta = {"embedding_dim": dim, "feat_mean": mean, "feat_std": std, "stats_from_data": stats_from_data,
            "init_from": cfg.init_from, "total_steps": total, "warmup_steps": warmup,
            "log_dir": str(run_dir / "logs"), "checkpoint_config": ckpt_config}
    if local_storage:
        check_resumable(run_dir, ckpt_config)
    print(f"[stickgen] run {name}: {n_train} train rows, {W} worker(s) x batch {B} x accum {A} "
          f"= effective {B * A * W}; {steps_per_epoch} steps/epoch, {total} steps, warmup {warmup}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": cfg.to_dict(), "meta": meta},
        scaling_config=ScalingConfig(num_workers=W, use_gpu=cfg.run.use_gpu,
                                     resources_per_worker={"CPU": cfg.run.cpus_per_worker, **({"GPU": 1} if cfg.run.use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if cfg.run.use_gpu else "gloo", timeout_s=cfg.run.collective_timeout_s),
        datasets={"train": train_ds, "val": val_ds},
        run_config=RunConfig(
            name=name, storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints,
                                               checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures)),
    )
    if on_start is not None:
        on_start(run_dir, total)
    result = trainer.fit()
    if result.error:
        raise result.error
    best = export_best(result, run_dir)
    plot_losses(run_dir / "logs")
    summary = {"run": name, "run_dir": str(run_dir), "best": str(best), "metrics": result.metrics,
               "total_steps": total, "effective_batch": B * A * W, "train_rows": n_train}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def check_resumable(run_dir: Path, ckpt_config: dict) -> None:
    """A rerun of the same config resumes from the run's last checkpoint (the run name is a hash
    of config + data). If that checkpoint holds a different architecture (saved by an older
    stickgen, e.g. before the denoiser's final norm), say so here instead of failing every worker
    on a state-dict mismatch."""
    arch = ("objective", "features", "final_norm")
    want = {"model": ckpt_config["model"], **{k: ckpt_config["wrapper"].get(k) for k in arch}}
    diff: list[str] = []
    for ck in sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir() and (p / "config.json").exists()):
        old = read_config(ck)
        have = {"model": old.get("model"), **{k: old.get("wrapper", {}).get(k) for k in arch}}
        diff = sorted(k for k in want if have[k] != want[k])
        if diff:
            break
    if diff:
        raise ConfigError(f"{run_dir}: this run's checkpoints are of a different model ({', '.join(diff)} differ: "
                          f"{ {k: have[k] for k in diff} } vs { {k: want[k] for k in diff} }), so it cannot be "
                          "resumed; set run.name (or --resume NAME) to start a new run, or delete the folder")


def export_best(result, run_dir: Path) -> Path:
    """Copy the lowest-val_loss checkpoint's model files to RUN/best (and the last to RUN/last)."""
    cands = [(m.get("val_loss", float("inf")), c) for c, m in (result.best_checkpoints or [])]
    if not cands and result.checkpoint is not None:
        cands = [(0.0, result.checkpoint)]
    if not cands:
        raise RuntimeError("the run reported no checkpoint")
    best = min(cands, key=lambda x: x[0])[1]
    for label, ck in (("best", best), ("last", result.checkpoint or best)):
        dst = run_dir / label
        with ck.as_directory() as d:
            if dst.exists():
                shutil.rmtree(dst)
            dst.mkdir(parents=True)
            for f in ("config.json", "model.safetensors"):
                shutil.copy2(Path(d) / f, dst / f)
    return run_dir / "best"


def plot_losses(log_dir: Path) -> Path | None:
    f = log_dir / "metrics.jsonl"
    if not f.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    tr = [(r["step"], r["loss"]) for r in recs if "loss" in r and r.get("event") is None]
    va = [(r["step"], r["val_loss"]) for r in recs if r.get("event") == "checkpoint" and "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if tr:
        ax.plot(*zip(*tr), label="train loss")
    if va:
        ax.plot(*zip(*va), "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = log_dir / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def job_main(stage: str, argv: list[str] | None = None) -> dict:
    """Entry point of the `jobs/pretrain.py` and `jobs/sft.py` Ray jobs (same flags as the CLI).
    Inside a Ray job, `ray.init()` attaches to the job's cluster."""
    import argparse

    import ray

    from .config import load_train_config

    ap = argparse.ArgumentParser(prog=f"python -m jobs.{stage}")
    ap.add_argument("--config", required=True)
    ap.add_argument("--init-from")
    ap.add_argument("--resume", help="run name to resume")
    ap.add_argument("--data")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--storage")
    ap.add_argument("--max-steps", type=int)
    a = ap.parse_args(argv)
    cfg = apply_overrides(load_train_config(a.config), stage=stage, init_from=a.init_from, data=a.data,
                          workers=a.workers, gpu=a.gpu, name=a.resume, storage_path=a.storage, max_steps=a.max_steps)
    if not ray.is_initialized():
        ray.init()
    summary = run_training(cfg)
    print(json.dumps({k: summary[k] for k in ("run", "run_dir", "best", "total_steps", "effective_batch")}))
    return summary
