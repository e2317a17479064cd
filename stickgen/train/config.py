"""Training configuration: one YAML file = one `TrainConfig`; every key is read, unknown keys are
errors (see `stickgen.config`). Defaults are the published Stick-Gen recipe where it has one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import load_yaml
from ..errors import ConfigError
from ..model.denoiser import ObjectiveConfig


@dataclass(frozen=True)
class ModelSection:
    variant: str = "medium"      # tiny | small | medium | large (stickgen.model.transformer.VARIANTS)
    dropout: float = 0.1


@dataclass(frozen=True)
class DataSection:
    path: str = "data/preprocessed"  # the folder `stickgen preprocess` wrote (pretrain/, sft/)
    subset: str = "pretrain"         # which curated set to train on: pretrain | sft
    max_rows: int | None = None      # cap the train rows (smoke tests); null = all


@dataclass(frozen=True)
class OptimSection:
    lr: float = 3e-4                 # peak learning rate (published: pretrain 3e-4, SFT 1e-4)
    weight_decay: float = 0.01       # on matrices only; biases, norms and the time MLP's biases are exempt
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0           # max global grad norm
    warmup_epochs: float = 10.0      # linear warmup, converted to optimizer steps (published: 10 / SFT 3)
    min_lr_ratio: float = 0.0        # cosine decays to lr * min_lr_ratio


@dataclass(frozen=True)
class ScheduleSection:
    epochs: int = 50
    batch_size: int = 2              # per worker, per micro-batch
    grad_accum: int = 32             # micro-batches per optimizer step (effective = batch x accum x workers)
    max_steps: int | None = None     # stop after this many optimizer steps (null = run all epochs)


@dataclass(frozen=True)
class SamplerSection:
    steps: int = 4                   # default denoising steps stored in the checkpoint (DEFAULT_SAMPLER)
    guidance: float = 2.5            # default classifier-free guidance scale


@dataclass(frozen=True)
class RunSection:
    workers: int = 1                 # Ray Train workers (data-parallel, DDP)
    use_gpu: bool = False            # nccl + bf16 autocast on GPU; gloo + fp32 on CPU
    cpus_per_worker: float = 1.0
    storage_path: str = "runs"       # local folder or shared storage (s3://, NFS) for multi-node
    name: str | None = None          # run name; null = deterministic from config + data + init
    checkpoint_every_steps: int = 500  # also at every epoch end
    keep_checkpoints: int = 3        # best by val_loss
    max_failures: int = 2            # worker-group restarts from the last checkpoint
    seed: int = 42
    log_every_steps: int = 10
    shuffle_buffer: int = 256        # local shuffle buffer (rows), reseeded every epoch
    val_max_rows: int | None = 512   # validation rows per check (null = all)
    collective_timeout_s: int = 600  # gloo/nccl timeout: a hung peer fails fast instead of in 30 min
    fault_inject_step: int | None = None  # TESTS ONLY: worker rank 1 (or 0) exits at this step, once


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "pretrain"          # pretrain | sft
    text_encoder: str = "all-MiniLM-L6-v2"
    init_from: str | None = None     # weights only (our checkpoints, published ones, hf://); SFT needs it
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self):
        if self.stage not in ("pretrain", "sft"):
            raise ConfigError(f"stage must be pretrain or sft, got {self.stage!r}")
        if self.data.subset not in ("pretrain", "sft"):
            raise ConfigError(f"data.subset must be pretrain or sft, got {self.data.subset!r}")
        if self.schedule.batch_size < 1 or self.schedule.grad_accum < 1 or self.run.workers < 1:
            raise ConfigError("schedule.batch_size, schedule.grad_accum and run.workers must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that defines the run (not where it is stored)."""
        d = self.to_dict()
        d["run"] = {k: v for k, v in d["run"].items() if k not in ("storage_path", "name", "fault_inject_step")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    return load_yaml(TrainConfig, path, overrides)
