"""The embedded default: an in-process local Ray, started the same way by every `stickgen`
command, `python -m jobs.*` run by hand, the demo, the benchmarks and the tests. (Inside a Ray
job the entrypoints attach to the job's cluster instead.)

`address="local"` always starts a fresh cluster; it never attaches to a stale one left behind by
a killed `ray start` (see ray-2.60-notes.md).

Why `idle_worker_killing_time_threshold_ms`: Ray keeps about one idle worker process per CPU
(counting actor processes) and kills the rest after 1 s of idleness. On a small machine the
actors (the preprocess text encoder, Ray Data's stats and autoscaling actors, Serve's controller
and proxy) fill that quota, so the task worker of one phase is killed while the driver
aggregates or embeds, and the next phase pays for a new worker process: about 3 s of one core
here (start Python, import Ray, re-import stickgen). Measured on `stickgen preprocess` of 2,088
clips pinned to one core: ~6 s of a 30 s run. Letting idle workers live `IDLE_WORKER_KEEP_S`
keeps them across the phases of a job. (Raising `num_workers_soft_limit` instead also keeps
them, but makes Ray prestart extra workers for every task backlog: ~0.6 s of a core each.)
"""

from __future__ import annotations

#: how long an idle worker process beyond Ray's quota lives: the gap between a job's phases
IDLE_WORKER_KEEP_S = 60


def init_local_ray(num_cpus: float | None = None, *, include_dashboard: bool | None = None,
                   log_to_driver: bool = True, **kwargs):
    """Start a fresh local Ray with `num_cpus` logical CPUs (default: every core)."""
    import ray

    system_config = {"idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_S * 1000,
                     **(kwargs.pop("_system_config", None) or {})}
    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                    log_to_driver=log_to_driver, _system_config=system_config, **kwargs)
