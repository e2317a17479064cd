"""Benchmark: bulk generation end to end (embed + sample + score + write), Ray Data actor pool
with 1 and 2 CPU sampler actors vs a plain loop over the same functions.

    python benchmarks/bulk_generate.py [--variant tiny --steps 4 --prompts 24 -k 20]
                                       [--medium-steps 2 --medium-clips 32] [--repeat 3]

Random-weight checkpoints (throughput does not depend on the weights). The quality gate is off
(min_quality 0, no physics requirement, no retries) so every mode samples each clip exactly once.

Per mode it prints medians over --repeat runs of:
  e2e clips/s     clips / wall time of the whole job (prompt file to summary, incl. loading the
                  model and encoder, actor start-up and the embedding pass)
  steady clips/s  clips / sampling window (loop: the stage times without the loads; Ray: first
                  batch start to last batch end over the pool)
  busy            Ray only: time inside `MotionGenerator.generate` / wall time between each
                  actor's first and last batch (target >= 0.85)
and the ratios to the loop. Each CPU actor gets CPUs / actors torch threads; the loop uses all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    "a person walks forward", "a person runs in a circle", "someone jumps twice", "a person waves hello",
    "a man bows politely", "a woman kicks to the front", "a person throws a punch", "someone sits down",
    "a person stands up slowly", "a dancer spins around", "a person claps their hands", "someone points left",
    "a person walks backwards", "a person steps sideways", "someone climbs a ladder", "a person crawls",
    "a person falls down", "a person kneels", "someone squats", "a person stretches their arms",
    "a person throws a ball", "someone catches a ball", "a swimmer swims", "a child hops on one foot",
    "a person skips happily", "someone balances on one leg", "a person looks around", "a person drinks water",
    "someone pushes a box", "a person pulls a rope", "a person lifts a box", "someone carries a bag",
]


def make_checkpoint(variant: str, root: Path) -> Path:
    import torch

    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig

    d = root / variant
    cfg = ModelConfig.variant(variant, embedding_dim=384)
    torch.manual_seed(0)
    save_checkpoint(d, MotionDenoiser(cfg), denoiser_config(cfg, text_encoder="all-MiniLM-L6-v2"))
    return d


def plain_loop(cfg, batch: int, threads: int) -> dict:
    """The pipeline's own stage functions called in order in this process, no Ray."""
    import pyarrow as pa

    from stickgen.text.embedder import TextEmbedder, text_chunks
    from stickgen.data.schema import column_numpy, window_schema
    from stickgen.generate.bulk import Sampler, item_blocks, item_seed, read_prompts, score_batch, write_batch
    from stickgen.generate.sample import MotionGenerator

    t0 = time.perf_counter()
    specs, _, _ = read_prompts(cfg.prompts, cfg.seconds)
    g = MotionGenerator(cfg.checkpoint)
    enc, dim = g.config["text_encoder"]["name"], int(g.config["text_encoder"]["dim"])
    steps = int(cfg.steps or g.default_steps)
    sampler = Sampler(cfg.checkpoint, g.checkpoint_id, steps, g.default_guidance, "cpu", threads)
    embedder = TextEmbedder(enc, cfg.embed_chunk, "cpu", threads)
    t_load = time.perf_counter() - t0
    times = {"embed": 0.0, "sample": 0.0, "score": 0.0, "write": 0.0}
    t = time.perf_counter()
    emb = {}
    for ch in text_chunks([s.prompt for s in specs], cfg.embed_chunk):
        r = embedder(ch)
        emb.update(zip(r["text"].to_pylist(), column_numpy(r["embedding"], (dim,))))
    times["embed"] = time.perf_counter() - t
    items = [{"id": f"{s.prompt_id}:{k}", "prompt_id": s.prompt_id, "k": k, "prompt": s.prompt,
              "seconds": s.seconds, "actions": "", "seed": item_seed(s, k), "attempt": 0}
             for s in specs for k in range(cfg.samples_per_prompt)]
    items = [dict(it, id=f"generated/{it['prompt_id']}.{it['k']:04d}:00000") for it in items]
    schema = window_schema(dim, enc, generated=True)
    n = 0
    for blk in item_blocks(items, emb, dim, batch):
        t = time.perf_counter()
        b = sampler(blk)
        times["sample"] += time.perf_counter() - t
        t = time.perf_counter()
        b = score_batch(b, cfg.gate, cfg.max_retries)
        times["score"] += time.perf_counter() - t
        t = time.perf_counter()
        r = write_batch(b, cfg.out, schema, g.checkpoint_id)
        times["write"] += time.perf_counter() - t
        n += len(r)
    assert isinstance(r, pa.Table) and n == len(items)
    wall = time.perf_counter() - t0
    work = sum(times.values())
    return {"clips": n, "e2e": n / wall, "steady": n / work, "busy": None, "load_s": t_load,
            "shares": {k: v / work for k, v in times.items()}}


def ray_run(cfg) -> dict:
    from stickgen.generate.bulk import run_bulk

    t0 = time.perf_counter()
    s = run_bulk(cfg, verbose=False)
    wall = time.perf_counter() - t0
    acts = s["actors"]["actors"]
    # sampling window of the pool: first batch start .. last batch end, over all actors
    span = max(a["last_batch_end"] for a in acts) - min(a["first_batch_start"] for a in acts)
    n = s["clips"]["generated_this_run"]
    stages = {x["operator"]: x.get("wall_s") for x in s["stages"]}
    return {"clips": n, "e2e": n / wall, "steady": n / span, "busy": s["actors"]["busy_share"],
            "actors": len(acts), "batches": [a["batches"] for a in acts],
            "per_actor_busy": [a["busy_share"] for a in acts], "stages": stages,
            "throughput": s["throughput"]}


def bench(variant: str, steps: int, n_prompts: int, k: int, seconds: float, batch: int, repeat: int,
          root: Path, cpus: int) -> list[tuple[str, dict]]:
    from stickgen.generate.bulk import BulkConfig, QualityGate

    ckpt = make_checkpoint(variant, root)
    prompts = root / f"prompts-{n_prompts}.txt"
    prompts.write_text("\n".join(PROMPTS[:n_prompts]) + "\n")
    gate = QualityGate(min_quality=0.0, require_physics_valid=False)
    rows = []
    modes = [("loop", None), ("ray 1 actor", 1), ("ray 2 actors", 2)]
    results: dict[str, list[dict]] = {m: [] for m, _ in modes}
    for r in range(repeat):
        for mode, actors in modes:
            out = root / f"out-{variant}-{mode.replace(' ', '_')}-{r}"
            cfg = BulkConfig(prompts=str(prompts), checkpoint=str(ckpt), out=str(out), samples_per_prompt=k,
                             seconds=seconds, steps=steps, max_retries=0, gate=gate, batch_size=batch, actors=actors)
            res = plain_loop(cfg, batch, cpus) if actors is None else ray_run(cfg)
            results[mode].append(res)
            print(f"  [{variant} steps={steps}] run {r} {mode:>12}: {res['clips']} clips, e2e {res['e2e']:.2f}/s, "
                  f"steady {res['steady']:.2f}/s" + (f", busy {res['busy']:.3f} {res.get('per_actor_busy')} "
                                                      f"batches {res.get('batches')}" if res["busy"] else
                                                      f", shares {json.dumps({k: round(v, 3) for k, v in res['shares'].items()})}"),
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
    for mode, _ in modes:
        rs = results[mode]
        med = {key: statistics.median(x[key] for x in rs) for key in ("e2e", "steady")}
        med["busy"] = statistics.median(x["busy"] for x in rs) if rs[0]["busy"] is not None else None
        rows.append((mode, med))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="tiny")
    ap.add_argument("--steps", type=int, default=4, help="sampler steps for --variant (4 = the default, DEFAULT_SAMPLER)")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("-k", type=int, default=20, help="samples per prompt")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--medium-steps", type=int, default=2, help="steps for the medium run (0: skip it)")
    ap.add_argument("--medium-clips", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--medium-repeat", type=int, default=1)
    args = ap.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    print(f"{cpus} CPUs, torch CPU; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    try:
        runs = [(args.variant, args.steps, args.prompts, args.k, args.batch_size, args.repeat)]
        if args.medium_steps:
            mk = max(1, args.medium_clips // 8)
            runs.append(("medium", args.medium_steps, 8, mk, min(args.batch_size, 8), args.medium_repeat))
        table = []
        for variant, steps, n_prompts, k, batch, repeat in runs:
            print(f"{variant}: {n_prompts} prompts x {k} = {n_prompts * k} clips of {args.seconds:g} s, "
                  f"{steps} steps, batch {batch}, {repeat} repeat(s)", flush=True)
            for mode, med in bench(variant, steps, n_prompts, k, args.seconds, batch, repeat, root, cpus):
                table.append((variant, steps, mode, med))
        print(f"\nmedians (load average at end {os.getloadavg()[0]:.1f}):")
        print(f"{'model':<8} {'steps':>5} {'mode':<13} {'e2e clips/s':>12} {'x loop':>7} {'steady clips/s':>15} "
              f"{'x loop':>7} {'busy':>6}")
        base = {}
        for variant, steps, mode, med in table:
            if mode == "loop":
                base[variant] = med
            b = base[variant]
            busy = f"{med['busy']:.3f}" if med["busy"] is not None else "-"
            print(f"{variant:<8} {steps:>5} {mode:<13} {med['e2e']:>12.2f} {med['e2e'] / b['e2e']:>7.2f} "
                  f"{med['steady']:>15.2f} {med['steady'] / b['steady']:>7.2f} {busy:>6}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
