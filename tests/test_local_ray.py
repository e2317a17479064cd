"""The embedded Ray keeps a job's task worker across a pause between its phases.

Runs in a subprocess: it needs its own 1-CPU Ray (the session's shared one has 2 CPUs and other
tests' actors), started exactly as `stickgen` starts it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys, time
import ray
from stickgen.local_ray import init_local_ray

init_local_ray(1, include_dashboard=False, log_to_driver=False, configure_logging=False, **json.loads(sys.argv[1]))

@ray.remote(num_cpus=0.5)
def pid():
    return os.getpid()

@ray.remote(num_cpus=0.1)
class Holder:  # an actor process, as the preprocess text encoder is: it counts toward Ray's idle quota
    def ping(self):
        return os.getpid()

h = Holder.remote()
ray.get(h.ping.remote())
first = ray.get(pid.remote())
time.sleep(4)  # > Ray's default 1 s idle-worker kill threshold: the driver "aggregating"
try:
    os.kill(first, 0)
    alive = True
except ProcessLookupError:
    alive = False
second = ray.get(pid.remote())
print(json.dumps({"first": first, "second": second, "alive": alive}))
"""


def _pids(extra: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(extra)], cwd=REPO, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_task_worker_survives_a_pause_between_phases():
    kept = _pids({})
    assert kept["alive"], kept
    # and the setting is what keeps it: with Ray's default threshold the worker is killed and replaced
    default = _pids({"_system_config": {"idle_worker_killing_time_threshold_ms": 1000}})
    assert not default["alive"] and default["first"] != default["second"], default
