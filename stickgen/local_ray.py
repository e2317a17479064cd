"""The embedded default: an in-process local Ray, started the same way by every `stickgen`
command, `python -m jobs.*` run by hand, the demo, the benchmarks and the tests. (Inside a Ray
job the entrypoints attach to the job's cluster instead.)

`address="local"` always starts a fresh cluster; it never attaches to a stale one left behind by
a killed `ray start` (see ray-2.60-notes.md).

Why `num_workers_soft_limit`: Ray keeps about one idle worker process per CPU and kills the rest
after a second of idleness, and it counts actor processes against that limit. On a small machine
the actors (the preprocess text encoder, Ray Data's stats and autoscaling actors, Serve's
controller and proxy) fill it, so the task worker of one phase is killed while the driver
aggregates or embeds, and the next phase pays for a new worker process: about 3 s of one core
here (start Python, import Ray, re-import stickgen). Measured on `stickgen preprocess` of 2,088
clips pinned to one core: ~6 s of a 30 s run. Keeping `ACTOR_SLOTS` more idle workers than CPUs
costs only their idle memory (~150 MiB each).
"""

from __future__ import annotations

import math
import os

#: idle worker processes kept beyond one per CPU: room for the long-lived actors beside them
ACTOR_SLOTS = 4


def init_local_ray(num_cpus: float | None = None, *, include_dashboard: bool | None = None,
                   log_to_driver: bool = True, **kwargs):
    """Start a fresh local Ray with `num_cpus` logical CPUs (default: every core)."""
    import ray

    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    system_config = {"num_workers_soft_limit": int(math.ceil(cpus)) + ACTOR_SLOTS,
                     **kwargs.pop("_system_config", {})}
    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                    log_to_driver=log_to_driver, _system_config=system_config, **kwargs)
