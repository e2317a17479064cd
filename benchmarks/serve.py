"""Serve benchmark: closed-loop HTTP load on the stickgen app, deployed from cluster/serve.yaml.

    python benchmarks/serve.py [--fast] [--checkpoint DIR] [--seconds 2] [--repeat 3] [--rounds 5] [--no-sweep]

What it does, on a fresh local Ray (with the dashboard, because it deploys the config file the way
`stickgen serve deploy` does):

1. deploys cluster/serve.yaml with the model registry pointed at --checkpoint (default: a tiny
   randomly initialised MotionDenoiser written to a temp dir), one Generator replica pinned to
   one CPU (autoscaling off, min = max = 1: this measures batching, not scaling) and the Api and
   Renderer shrunk to fit a 2-core box;
2. sweep (the measurement behind the batching settings in serve.yaml): max_batch_size at
   concurrency 32, and fixed batch_wait_timeout_s against the adaptive wait at concurrency 1 and
   32. Batching changes are Serve `user_config` updates: applied live, no replica restart;
3. closed-loop load at concurrency 1, 8, 32 with the shipped settings: p50/p95/p99 latency,
   throughput and the batch sizes the Generator formed;
4. Serve's p50 overhead at concurrency 1: pairs of (in-process `MotionGenerator.generate` call,
   one thread and inference mode as in the replica; HTTP request), back to back; the overhead is
   the median of the per-pair differences;
5. throughput at concurrency 32 with batching vs without (max_batch_size = 1), in alternating
   rounds; the ratio reported is the median of the per-round ratios, with the CPU time each Serve
   process spends per request (from /proc), which shows where a 2-core box's time goes.

--fast starts Ray with Serve's high-throughput data path (the cluster environment serve.yaml
advises); without it, Ray's default data path. Run both to compare.

Every request has its own prompt (the text encoder's cache never helps) and seed; format json
(the `.motion` document). Numbers are medians over --repeat runs. On a 2-core box shared with other
work the absolute figures move with the background load; the paired ratios move much less.
"""

from __future__ import annotations

import os
import sys

FAST_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
if "--fast" in sys.argv:  # Serve's high-throughput data path; Ray's processes read it at start
    os.environ.update(FAST_ENV)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import copy  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stickgen.serve.app import BATCHING  # noqa: E402
from stickgen.serve.deploy import DEFAULT_CONFIG, deploy, load_config, wait_running  # noqa: E402

PROMPTS = ["a person walks forward", "someone waves with the right hand", "a man jumps twice",
           "a woman bows slowly", "a person runs and stops", "someone kicks with the left leg"]


def prompt(i: int) -> str:
    return f"{PROMPTS[i % len(PROMPTS)]}, take {i}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoint(root: Path) -> Path:
    import torch

    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig

    cfg = ModelConfig.variant("tiny", embedding_dim=384)
    torch.manual_seed(0)
    save_checkpoint(root / "tiny", MotionDenoiser(cfg), denoiser_config(cfg, text_encoder="all-MiniLM-L6-v2"))
    return root / "tiny"


# --- load generation -------------------------------------------------------------------------------

async def closed_loop(url: str, concurrency: int, n: int, seconds: float, start: int) -> dict:
    """`concurrency` clients, each sending its next request when the last one returns, until `n`
    requests are done. Returns latencies (s), wall time, statuses and the batch sizes seen."""
    import aiohttp

    lat: list[float] = []
    timing: list[dict] = []
    status: Counter = Counter()
    batches: Counter = Counter()
    nxt = 0

    async def client(session):
        nonlocal nxt
        while nxt < n:
            i = nxt
            nxt += 1
            body = {"prompt": prompt(start + i), "seconds": seconds, "seed": start + i}
            t0 = time.perf_counter()
            async with session.post(url + "/v1/animations", json=body) as r:
                await r.read()
                status[r.status] += 1
                if r.status == 200:
                    lat.append(time.perf_counter() - t0)
                    batches[int(r.headers.get("x-batch-size", 0))] += 1
                    timing.append(server_timing(r.headers.get("server-timing", "")))

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"lat": lat, "wall": wall, "status": status, "batches": batches, "timing": timing}


def server_timing(header: str) -> dict:
    """'model;dur=12.3, api;dur=20.1' -> {'model': 12.3, 'api': 20.1} (ms)."""
    out = {}
    for part in filter(None, (p.strip() for p in header.split(","))):
        name, _, dur = part.partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


class Bench:
    def __init__(self, url: str, seconds: float):
        self.url, self.seconds, self.counter = url, seconds, 10_000

    def run(self, concurrency: int, n: int) -> dict:
        """Warm up with 2 x concurrency requests, then measure n."""
        asyncio.run(closed_loop(self.url, concurrency, 2 * concurrency, self.seconds, self.counter))
        self.counter += 2 * concurrency
        r = asyncio.run(closed_loop(self.url, concurrency, n, self.seconds, self.counter))
        self.counter += n
        lat = np.array(r["lat"]) * 1000
        ok = r["status"].get(200, 0)
        sizes = r["batches"]
        st = {k: float(np.median([t[k] for t in r["timing"] if k in t])) for k in ("model", "generator", "output", "api")
              if any(k in t for t in r["timing"])}
        return {"c": concurrency, "n": n, "ok": ok, "errors": n - ok, "timing": st,
                "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                "p99": float(np.percentile(lat, 99)), "rps": ok / r["wall"],
                "mean_batch": sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values())),
                "max_batch": max(sizes) if sizes else 0}

    def median_of(self, repeat: int, concurrency: int, n: int) -> dict:
        runs = [self.run(concurrency, n) for _ in range(repeat)]
        out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("c", "n", "timing")}
        out.update(c=concurrency, n=n, runs=runs)
        return out


class CpuMeter:
    """CPU seconds of this driver's Serve processes (from /proc; Linux), grouped by role."""

    ROLES = {"Api": "ServeReplica:stickgen:Api", "Generator": "ServeReplica:stickgen:Generator",
             "Renderer": "ServeReplica:stickgen:Renderer", "proxy": "ProxyActor", "haproxy": "haproxy",
             "controller": "ServeController"}

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK")
        self.pids: dict[str, list[int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Find the role of every descendant of this process (other users' Ray runs are ignored)."""
        self.pids = {}
        todo, seen = [os.getpid()], set()
        while todo:
            pid = todo.pop()
            for f in Path(f"/proc/{pid}/task").glob("*/children"):
                for c in f.read_text().split():
                    if int(c) not in seen:
                        seen.add(int(c))
                        todo.append(int(c))
        for pid in seen:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            for role, key in self.ROLES.items():
                if key in cmd:
                    self.pids.setdefault(role, []).append(pid)
        self.pids["client"] = [os.getpid()]

    def read(self) -> dict[str, float]:
        out = {}
        for role, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                try:
                    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(f[11]) + int(f[12])) / self.tick
                except (OSError, IndexError):
                    pass
            out[role] = total
        return out


def fmt_row(label: str, r: dict) -> str:
    return (f"{label:<34} c={r['c']:<3} p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  p99 {r['p99']:7.1f} ms  "
            f"{r['rps']:6.1f} req/s  batch mean {r['mean_batch']:4.1f} max {r['max_batch']:<3.0f} "
            f"errors {r['errors']:.0f}")


# --- deployment ------------------------------------------------------------------------------------

class Deployer:
    """cluster/serve.yaml + the local overrides; `set_batching` redeploys only the user_config."""

    def __init__(self, address: str, checkpoint: Path, token: str | None):
        self.address, self.token = address, token
        cfg = load_config(DEFAULT_CONFIG, models={"default": str(checkpoint)})
        app = cfg["applications"][0]
        app["args"].update(device="cpu", cpus_per_replica=1.0)
        deps = {d["name"]: d for d in app["deployments"]}
        for name in ("Api", "Generator", "Renderer"):
            deps[name]["autoscaling_config"].update(min_replicas=1, max_replicas=1)
        deps["Api"]["ray_actor_options"] = {"num_cpus": 0.25}
        deps["Renderer"]["ray_actor_options"] = {"num_cpus": 0.25}
        self.cfg = cfg
        self.gen = deps["Generator"]

    def apply(self, **batching) -> None:
        cfg = copy.deepcopy(self.cfg)
        gen = next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "Generator")
        gen["user_config"] = {**BATCHING, **batching}
        deploy(cfg, self.address, self.token)
        time.sleep(1.0)  # the controller picks the new config up, then reports RUNNING again
        wait_running(self.address, token=self.token, timeout_s=600, poll_s=0.5)
        time.sleep(1.0)  # reconfigure() reaches the replica


_GENERATORS: dict = {}


def in_process_generator(checkpoint: Path):
    """The checkpoint loaded in this process the way a replica runs it: one torch thread."""
    import torch

    from stickgen.generate.sample import MotionGenerator

    if checkpoint not in _GENERATORS:
        torch.set_num_threads(1)
        _GENERATORS[checkpoint] = MotionGenerator(checkpoint)
        _GENERATORS[checkpoint].generate(["warm up"], seconds=1.0, seeds=[0])
    return _GENERATORS[checkpoint]


def paired_overhead(checkpoint: Path, url: str, seconds: float, n: int, start: int) -> tuple[list, list]:
    """n pairs, back to back: an in-process MotionGenerator.generate([prompt]) call (one torch
    thread, inference mode, as the replica runs it), then the same kind of request over HTTP on a
    keep-alive connection. Pairing puts both sides in the same moment of background load.
    Returns (direct ms, http ms)."""
    import http.client
    import json
    from urllib.parse import urlparse

    import torch

    gen = in_process_generator(checkpoint)
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    direct, served = [], []
    for i in range(n):
        k = start + 2 * i
        t0 = time.perf_counter()
        with torch.inference_mode():
            gen.generate([prompt(k)], seconds=seconds, seeds=[k])
        direct.append(1000 * (time.perf_counter() - t0))
        body = json.dumps({"prompt": prompt(k + 1), "seconds": seconds, "seed": k + 1})
        t0 = time.perf_counter()
        conn.request("POST", "/v1/animations", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        served.append(1000 * (time.perf_counter() - t0))
    conn.close()
    return direct, served


def model_ceiling(checkpoint: Path, seconds: float, batch: int, rounds: int) -> list[float]:
    """The model's own batching gain, in-process: per round, `batch` single-prompt generate calls
    against one call with `batch` prompts (same number of requests, back to back). Returns the
    per-round throughput ratios; no server can beat these with this model on this machine."""
    import torch

    gen = in_process_generator(checkpoint)
    out = []
    for k in range(rounds):
        base = 70_000 + 1000 * k
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(batch):
                gen.generate([prompt(base + i)], seconds=seconds, seeds=[base + i])
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            gen.generate([prompt(base + 500 + i) for i in range(batch)], seconds=seconds,
                          seeds=[base + 500 + i for i in range(batch)])
        out.append(single / (time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: a tiny random model)")
    ap.add_argument("--seconds", type=float, default=2.0, help="clip length per request")
    ap.add_argument("--repeat", type=int, default=3, help="runs per closed-loop measurement (median)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per A/B comparison (median)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the batching-settings sweep")
    ap.add_argument("--fast", action="store_true",
                    help="start Ray with RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (HAProxy "
                         "ingress, gRPC between replicas, no user-code thread hop), as cluster/serve.yaml advises")
    args = ap.parse_args()

    import ray
    from ray import serve

    tmp = tempfile.TemporaryDirectory(prefix="stickgen-bench-")
    ckpt = args.checkpoint or tiny_checkpoint(Path(tmp.name))
    http_port, dash_port = free_port(), free_port()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, dashboard_port=dash_port,
             log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    address = f"http://127.0.0.1:{dash_port}"
    token = _local_token()
    dep = Deployer(address, ckpt, token)
    dep.apply()
    url = f"http://127.0.0.1:{http_port}"
    mode = " ".join(f"{k}={v}" for k, v in FAST_ENV.items()) if args.fast else "Ray's default Serve data path"
    print(f"# stickgen serve benchmark: ray {ray.__version__}, {mode}, {os.cpu_count()} CPUs, clip {args.seconds:g} s "
          f"({int(args.seconds * 25)} frames), checkpoint {ckpt.name}; deployed cluster/serve.yaml in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    b = Bench(url, args.seconds)

    if not args.no_sweep:
        print("\n## sweep: max_batch_size at c=32 (adaptive wait)", flush=True)
        for mbs in (4, 8, 16, 32):
            dep.apply(max_batch_size=mbs)
            print(fmt_row(f"max_batch_size={mbs}", b.run(32, 256)), flush=True)
        print("\n## sweep: batch wait at c=1 and c=32 (max_batch_size "
              f"{BATCHING['max_batch_size']})", flush=True)
        waits = [("adaptive 0 / busy 0.1 s", {}),
                 ("fixed 0.002 s", {"batch_wait_timeout_s": 0.002, "busy_batch_wait_timeout_s": 0.0}),
                 ("fixed 0.01 s", {"batch_wait_timeout_s": 0.01, "busy_batch_wait_timeout_s": 0.0}),
                 ("fixed 0.05 s", {"batch_wait_timeout_s": 0.05, "busy_batch_wait_timeout_s": 0.0})]
        for label, kw in waits:
            dep.apply(**kw)
            print(fmt_row(label, b.run(1, 40)), flush=True)
            print(fmt_row(label, b.run(32, 256)), flush=True)

    print(f"\n## closed loop, shipped settings {BATCHING} (median of {args.repeat})", flush=True)
    dep.apply()
    rows = {}
    for c, n in ((1, 60), (8, 192), (32, 384)):
        rows[c] = b.median_of(args.repeat, c, n)
        print(fmt_row("batched", rows[c]), flush=True)

    # A/B pairs run back to back, so a change in background load hits both sides of a ratio.
    print(f"\n## Serve overhead at c=1: {args.rounds} x 40 pairs of (in-process call, HTTP request)", flush=True)
    direct, served, overheads = [], [], []
    for k in range(args.rounds):
        d, h = paired_overhead(ckpt, url, args.seconds, 40, 50_000 + 1000 * k)
        direct.append(statistics.median(d))
        served.append(statistics.median(h))
        overheads.append(statistics.median(h_ - d_ for h_, d_ in zip(h, d)))
        print(f"round {k + 1}: direct MotionGenerator.generate p50 {direct[-1]:6.1f} ms   Serve HTTP p50 "
              f"{served[-1]:6.1f} ms   median paired difference {overheads[-1]:5.1f} ms", flush=True)
    r = b.run(1, 40)
    t = r["timing"]
    print(f"where an HTTP request's time goes (Server-Timing medians, c=1, p50 {r['p50']:.1f} ms): model call "
          f"{t['model']:.1f} ms | Api->Generator hop, queue and batching {t['generator'] - t['model']:.1f} | .motion "
          f"JSON {t['output']:.1f} | rest of the Api {t['api'] - t['generator'] - t['output']:.1f} | client, proxy "
          f"and hop into the Api {r['p50'] - t['api']:.1f}", flush=True)

    print(f"\n## batching vs no batching at c=32, {args.rounds} alternating rounds", flush=True)
    ratios, unb_rps, bat_rps = [], [], []
    meter = CpuMeter() if Path("/proc/self/stat").exists() else None
    cpu = {}
    for k in range(args.rounds):
        for mbs in (1, BATCHING["max_batch_size"]):
            dep.apply(max_batch_size=mbs)
            if meter:
                meter.refresh()
                c0 = meter.read()
            r = b.run(32, 96 if mbs == 1 else 256)
            if meter:
                c1 = meter.read()
                cpu.setdefault(mbs, []).append({k_: 1000 * (c1[k_] - c0[k_]) / (r["ok"] + 2 * 32) for k_ in c1})
            if mbs == 1:
                unb = r
            else:
                bat = r
        unb_rps.append(unb["rps"])
        bat_rps.append(bat["rps"])
        ratios.append(bat["rps"] / unb["rps"])
        print(fmt_row(f"round {k + 1} max_batch_size=1", unb), flush=True)
        print(fmt_row(f"round {k + 1} max_batch_size={BATCHING['max_batch_size']}", bat), flush=True)

    if cpu:
        print("CPU-ms per request by process (median over rounds; warm-up requests included):")
        for mbs, rows_ in cpu.items():
            parts_ = {k_: statistics.median(r_[k_] for r_ in rows_) for k_ in rows_[0]}
            print(f"  max_batch_size={mbs:<3} " + "  ".join(f"{k_} {v:.1f}" for k_, v in sorted(parts_.items())
                                                     if v >= 0.05))

    mbs = BATCHING["max_batch_size"]
    ceiling = model_ceiling(ckpt, args.seconds, mbs, args.rounds)
    print(f"in-process ceiling: {mbs} single calls vs one batch of {mbs}: "
          f"{', '.join(f'{c:.2f}x' for c in ceiling)}", flush=True)

    overhead, ratio = statistics.median(overheads), statistics.median(ratios)
    print("\n## summary (medians)")
    print(f"throughput c=1/8/32: {rows[1]['rps']:.1f} / {rows[8]['rps']:.1f} / {rows[32]['rps']:.1f} req/s; "
          f"p50 {rows[1]['p50']:.0f} / {rows[8]['p50']:.0f} / {rows[32]['p50']:.0f} ms")
    print(f"Serve p50 overhead over a direct call: {overhead:.1f} ms (per round: "
          f"{', '.join(f'{o:.1f}' for o in overheads)}; direct p50 {statistics.median(direct):.1f} ms, Serve HTTP p50 "
          f"{statistics.median(served):.1f} ms; target <= 15 ms) {'PASS' if overhead <= 15 else 'FAIL'}")
    print(f"throughput batched / unbatched at c=32: {statistics.median(bat_rps):.1f} / "
          f"{statistics.median(unb_rps):.1f} req/s, ratio {ratio:.2f}x (per round: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= 3x) {'PASS' if ratio >= 3 else 'FAIL'}")
    print(f"  the model's own gain for a batch of {mbs}, in-process: {statistics.median(ceiling):.2f}x; Serve delivers "
          f"{ratio / statistics.median(ceiling):.0%} of it")
    serve.shutdown()
    ray.shutdown()


def _local_token() -> str | None:
    """Ray 2.60 turns token auth on for a local ray.init(); the dashboard then wants the token."""
    tok = os.environ.get("RAY_AUTH_TOKEN")
    p = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not tok and p.exists():
        tok = p.read_text().strip()
    return tok or None


if __name__ == "__main__":
    main()
