"""The embedded default: an in-process local Ray, started by the `stickgen` commands, by
`python -m jobs.preprocess` run by hand, by the demo, the benchmarks and the tests. (Inside a Ray
job the entrypoints attach to the job's cluster instead.)

`address="local"` always starts a fresh cluster; it never attaches to a stale one left behind by
a killed `ray start` (see ray-2.60-notes.md).

A known cost on small machines, measured and not yet changed: Ray keeps about one idle worker
process per CPU, counting actor processes (the preprocess text encoder, Ray Data's helper actors),
and kills idle workers beyond that after 1 s. So on 1-2 CPUs the task worker of one preprocess
phase is killed while the driver aggregates and embeds, and the next phase starts a new one
(~3 s of one core here). Keeping idle workers longer (`idle_worker_killing_time_threshold_ms`,
`num_workers_soft_limit`) removed that, but in the shared test session a later Ray Train run
then reported NaN validation losses; until that is understood the embedded Ray keeps Ray's
defaults.
"""

from __future__ import annotations


def init_local_ray(num_cpus: float | None = None, *, include_dashboard: bool | None = None,
                   log_to_driver: bool = True, **kwargs):
    """Start a fresh local Ray with `num_cpus` logical CPUs (default: what Ray detects)."""
    import ray

    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                    log_to_driver=log_to_driver, **kwargs)
