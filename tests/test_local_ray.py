"""The embedded default Ray (stickgen.local_ray): what it changes, checked on a real local Ray."""

from __future__ import annotations

import os
import time


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "zombie" not in state and "dead" not in state


def test_idle_task_workers_survive_the_pause_between_phases(ray_local):
    """Between two phases of a job (convert, then write) its task workers sit idle while the
    driver aggregates and the encoder actor embeds. Ray's default keeps one idle worker per CPU
    (a worker Ray prestarted, or one a previous phase used, counts too) and kills the rest after
    1 s idle, so the next phase paid for fresh worker processes: ~3 s of a core each here, two
    per `stickgen preprocess` run on one CPU. init_local_ray keeps CPUs + ACTOR_SLOTS of them."""
    from stickgen.local_ray import ACTOR_SLOTS

    ray = ray_local

    @ray.remote(num_cpus=0.01)
    def busy_pid(seconds: float) -> int:
        time.sleep(seconds)  # all at once: one worker process each
        return os.getpid()

    cpus = int(ray.cluster_resources()["CPU"])
    n = cpus + min(2, ACTOR_SLOTS)
    pids = set(ray.get([busy_pid.remote(1.0) for _ in range(n)]))
    assert len(pids) == n
    time.sleep(3.0)  # idle-worker killing: threshold 1 s, checked every 200 ms
    dead = [p for p in pids if not _alive(p)]
    assert not dead, f"{len(dead)} of {n} idle task workers were killed"
