"""The Ray Train loop: a plain function handed to `TorchTrainer`, run by every worker.

Reads top to bottom: config -> model (init_from / resume) -> DDP -> optimizer + schedule ->
epochs of (micro-batches with gradient accumulation -> clip -> step -> log -> checkpoint).

Gradient accumulation is exact: non-final micro-batches run under `no_sync()` (no all-reduce), each
micro-batch loss is divided by `grad_accum`, and a trailing partial group at the end of an epoch is
rescaled by accum / k before clipping, so every optimizer step uses the mean gradient of the
samples it saw. With per-sample noise seeds and per-sample loss normalisation (see
`model.denoiser`), W workers x batch b x accum a gives the same step as 1 worker x batch W*b*a.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from ray.data.collate_fn import ArrowBatchCollateFn

from ..config import from_dict
from ..data.schema import table_to_arrays
from ..model.checkpoint import load_checkpoint, load_train_state, load_trunk_into, save_checkpoint
from ..model.denoiser import MotionDenoiser, ObjectiveConfig, denoising_loss, denoiser_config
from ..model.transformer import ModelConfig
from .config import TrainConfig

TRAIN_COLUMNS = ["id", "motion", "mask", "actions", "physics", "text_embedding"]
UNUSED_TRUNK_MODULES = ("camera_projection", "partner_projection", "position_decoder", "velocity_decoder",
                        "environment_decoder")


def sample_seed(row_id: str, epoch: int, run_seed: int) -> int:
    """Per-sample noise seed: a function of the row, the epoch and the run seed only."""
    h = hashlib.blake2b(f"{run_seed}:{epoch}:{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


class WindowCollate(ArrowBatchCollateFn):
    """Arrow batch -> dict of tensors for `denoising_loss` (+ per-sample seeds)."""

    def __init__(self, epoch: int, run_seed: int):
        self.epoch, self.run_seed = epoch, run_seed

    def __call__(self, batch: pa.Table) -> dict:
        arr = table_to_arrays(batch, ("motion", "mask", "actions", "physics", "text_embedding"))
        ids = batch["id"].to_pylist()
        # Arrow's buffers are read-only views: each tensor gets its own writable, contiguous memory
        out = {k: torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in arr.items()}
        out["seed"] = torch.tensor([sample_seed(i, self.epoch, self.run_seed) for i in ids], dtype=torch.long)
        return out


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup for `warmup` optimizer steps, then cosine to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights); not biases or norm weights (nanoGPT)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_model(cfg: TrainConfig, embedding_dim: int, final_norm: bool = True) -> MotionDenoiser:
    mc = ModelConfig.variant(cfg.model.variant, embedding_dim=embedding_dim, dropout=cfg.model.dropout)
    model = MotionDenoiser(mc, final_norm=final_norm)
    # never trained by this objective: freezing keeps DDP from waiting on gradients that never come
    unused = list(UNUSED_TRUNK_MODULES)
    if cfg.objective.action <= 0:
        unused.append("action_predictor")
    if cfg.objective.physics <= 0:
        unused.append("physics_decoder")
    for name in unused:
        getattr(model.trunk, name).requires_grad_(False)
    return model


def init_weights(model: MotionDenoiser, init_from: str) -> dict:
    """Weights only from a stickgen checkpoint (whole denoiser) or a published trunk."""
    state, config = load_checkpoint(init_from)
    if config.get("model_type") == "motion_denoiser":
        missing, unexpected = model.load_state_dict(state, strict=False)
        # A denoiser saved without the final norm (its config says so): the norm starts at its init.
        new = [] if config["wrapper"].get("final_norm") else [k for k in missing if k.startswith("final_norm.")]
        missing = [k for k in missing if k not in new]
        if missing or unexpected:
            raise RuntimeError(f"init_from {init_from}: missing {missing}, unexpected {unexpected}")
        return {"kind": "denoiser", "new": new}
    report = load_trunk_into(model, state)
    return {"kind": "trunk", "new": report.new}


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def validate(model: MotionDenoiser, shard, cfg: TrainConfig, device) -> float:
    """Text-conditioned denoising loss on the val shard with fixed per-sample noise (comparable
    across checkpoints; no text/action dropout: the setting generation runs in). The shard is
    always read to the end (the driver caps its size): streaming splits advance in lockstep."""
    model.eval()
    obj = ObjectiveConfig(**{**cfg.objective.__dict__, "p_uncond": 0.0, "p_action_drop": 1.0})
    # [loss sum, count] on the model's device: nccl reduces only CUDA tensors (a CPU tensor there
    # fails with "No backend type associated with device type cpu"); gloo takes either
    acc = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in shard.iter_torch_batches(batch_size=max(8, cfg.schedule.batch_size),
                                          collate_fn=WindowCollate(-1, cfg.run.seed)):
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, _ = denoising_loss(model, batch, obj)
        n = batch["motion"].shape[0]
        acc[0] += loss.detach().double() * n
        acc[1] += n
    model.train()
    total, count = _all_reduce_sum(acc).tolist()
    return total / max(count, 1.0)


class RunLog:
    """Rank 0's metrics: JSONL + CSV + TensorBoard in the run's log folder."""

    def __init__(self, log_dir: Path, enabled: bool):
        self.enabled = enabled
        self.dir = log_dir
        self.tb = None
        if enabled:
            log_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(log_dir / "tb"))
            except Exception:  # tensorboard missing: JSONL/CSV still written
                self.tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        csv = self.dir / "metrics.csv"
        keys = sorted(rec)
        new = not csv.exists()
        with open(csv, "a") as f:
            if new:
                f.write(",".join(keys) + "\n")
            f.write(",".join(str(rec.get(k, "")) for k in keys) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, rec["step"])
            self.tb.flush()


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    cfg: TrainConfig = from_dict(TrainConfig, config["train"])
    meta = config["meta"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    use_amp = cfg.run.use_gpu and device.type == "cuda"
    torch.manual_seed(cfg.run.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    B, accum = cfg.schedule.batch_size, cfg.schedule.grad_accum

    # --- model: init_from (weights only) or resume (everything) ---
    # the architecture the checkpoints will declare (one source: the driver's config.json)
    model = build_model(cfg, meta["embedding_dim"], meta["checkpoint_config"]["wrapper"]["final_norm"])
    model.feat_mean.copy_(torch.tensor(meta["feat_mean"]))
    model.feat_std.copy_(torch.tensor(meta["feat_std"]))
    if meta.get("init_from"):
        init_weights(model, meta["init_from"])
        if meta.get("stats_from_data"):  # a published trunk has no feature stats: keep the data's
            model.feat_mean.copy_(torch.tensor(meta["feat_mean"]))
            model.feat_std.copy_(torch.tensor(meta["feat_std"]))
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                            betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    total, warmup = meta["total_steps"], meta["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, cfg.optim.min_lr_ratio))
    step, epoch0, skip = 0, 0, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state, _ = load_checkpoint(d)
            model.load_state_dict(state)
            ts = load_train_state(d)
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])
            step, epoch0, skip = int(ts["step"]), int(ts["epoch"]), int(ts["micro_in_epoch"])
        if rank == 0:
            print(f"[stickgen] resumed at step {step} (epoch {epoch0}, micro-batch {skip})", flush=True)
    model = prepare_model(model)
    inner: MotionDenoiser = model.module if hasattr(model, "module") else model
    ddp = hasattr(model, "no_sync")
    log = RunLog(Path(meta["log_dir"]), enabled=rank == 0)
    if rank == 0 and step == 0:
        log.write({"step": 0, "event": "start", "effective_batch": B * accum * world, "workers": world,
                   "batch_size": B, "grad_accum": accum, "total_steps": total})
        print(f"[stickgen] effective batch = {B} x {accum} x {world} workers = {B * accum * world}; "
              f"{total} optimizer steps", flush=True)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    ckpt_cfg = meta["checkpoint_config"]

    def save_and_report(metrics: dict, epoch: int, micro_in_epoch: int) -> None:
        metrics = {**metrics, "val_loss": validate(inner, val_shard, cfg, device)}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(tmp, inner, ckpt_cfg, train_state={
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                    "epoch": epoch, "micro_in_epoch": micro_in_epoch, "metrics": metrics})
                if (Path(meta["log_dir"]) / "metrics.jsonl").exists():
                    (Path(tmp) / "metrics.jsonl").write_bytes((Path(meta["log_dir"]) / "metrics.jsonl").read_bytes())
                log.write({"step": step, "epoch": epoch, "event": "checkpoint", **metrics})
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    model.train()
    done = step >= total
    for epoch in range(epoch0, cfg.schedule.epochs):
        if done:
            break
        it = iter(train_shard.iter_torch_batches(
            batch_size=B, collate_fn=WindowCollate(epoch, cfg.run.seed),
            local_shuffle_buffer_size=cfg.run.shuffle_buffer or None, local_shuffle_seed=cfg.run.seed + epoch))
        micro = 0
        for _ in range(skip):  # resume mid-epoch: same order, so skipping by count is exact
            if next(it, None) is None:
                break
            micro += 1
        skip = 0
        nxt = next(it, None)
        k, t_group, terms_acc = 0, time.perf_counter(), {}
        samples, frames = 0, 0
        while nxt is not None:
            batch = {key: v.to(device, non_blocking=True) for key, v in nxt.items()}
            nxt = next(it, None)  # look ahead: the epoch's last micro-batch must sync
            micro += 1
            k += 1
            sync = k == accum or nxt is None
            with (contextlib.nullcontext() if (sync or not ddp) else model.no_sync()):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, terms = denoising_loss(inner, batch, cfg.objective, forward=model)
                (loss / accum).backward()
            for key, v in terms.items():
                terms_acc[key] = terms_acc.get(key, 0.0) + v
            samples += batch["motion"].shape[0]
            frames += int(batch["mask"].sum()) + batch["motion"].shape[0]
            if not sync:
                continue
            if k < accum:  # trailing partial group: make it the mean over the k micro-batches
                for p in inner.parameters():
                    if p.grad is not None:
                        p.grad.mul_(accum / k)
            gnorm = float(torch.nn.utils.clip_grad_norm_(inner.parameters(), cfg.optim.grad_clip))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t_group
            if step % cfg.run.log_every_steps == 0 or step == 1:
                rec = {"step": step, "epoch": epoch, "lr": sched.get_last_lr()[0], "grad_norm": gnorm,
                       "loss": float(sum(getattr(cfg.objective, n) * (v / k) for n, v in terms_acc.items())),
                       **{f"loss_{n}": v / k for n, v in terms_acc.items()},
                       "samples_per_s": samples * world / dt, "tokens_per_s": frames * world / dt}
                log.write(rec)
                if rank == 0:
                    print(f"[stickgen] step {step}/{total} epoch {epoch} loss {rec['loss']:.4f} "
                          f"lr {rec['lr']:.2e} gnorm {gnorm:.2f} {rec['samples_per_s']:.1f} samples/s", flush=True)
            if cfg.run.fault_inject_step is not None and step == cfg.run.fault_inject_step:
                marker = Path(meta["log_dir"]) / f".fault_injected_{step}"
                if rank == min(1, world - 1) and not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.touch()
                    print(f"[stickgen] fault injection: rank {rank} exits at step {step}", flush=True)
                    os._exit(1)
            k, t_group, terms_acc, samples, frames = 0, time.perf_counter(), {}, 0, 0
            if step >= total:
                done = True
                break
            if step % cfg.run.checkpoint_every_steps == 0:
                save_and_report({"step": step, "epoch": epoch}, epoch, micro)
        # epoch end (or max_steps reached): checkpoint; the next epoch starts at micro-batch 0
        save_and_report({"step": step, "epoch": epoch + (0 if done else 1)}, epoch + (0 if done else 1),
                        micro if done else 0)
