"""Ray job: bulk-generate an animation dataset from a prompt list.

    python -m jobs.generate PROMPTS --checkpoint DIR|hf://owner/repo --out DIR [-k K] [--render gif] ...

Submitted by `stickgen generate-bulk ... --cluster ADDRESS` or `stickgen submit generate -- ARGS`;
run directly it starts a local Ray. All the work is `stickgen.generate.bulk.run_bulk`; re-running
with the same --out resumes. Exit status 0 when every clip is written, 1 on a bad setting.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.generate", description=__doc__.splitlines()[0])
    p.add_argument("prompts", help=".txt (one prompt per line), .jsonl or .parquet (prompt, seed, seconds, actions)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or hf://owner/repo[@rev]")
    p.add_argument("--out", required=True, help="output folder (shared storage on a multi-node cluster)")
    p.add_argument("-k", "--samples-per-prompt", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length for lines that give none")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--render", default="none", choices=["none", "gif", "mp4", "svg"])
    p.add_argument("--max-retries", type=int, default=2, help="regenerations of a clip failing the quality gate")
    p.add_argument("--min-quality", type=float, default=0.5, help="quality gate: combined quality floor")
    p.add_argument("--no-physics-gate", action="store_true", help="quality gate: do not require physics_valid")
    p.add_argument("--batch-size", type=int, default=None, help="clips per sampler call (default 1024 GPU / 32 CPU)")
    p.add_argument("--actors", type=int, default=None, help="sampler actors (default: from the cluster)")
    p.add_argument("--gpus-per-actor", type=float, default=1.0, help="fractional: several actors per GPU")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS inside a job, else a new local Ray)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    from stickgen.generate.bulk import BulkConfig, QualityGate

    return BulkConfig(
        prompts=args.prompts, checkpoint=args.checkpoint, out=args.out, samples_per_prompt=args.samples_per_prompt,
        seconds=args.seconds, steps=args.steps, guidance=args.guidance, render=args.render,
        max_retries=args.max_retries,
        gate=QualityGate(min_quality=args.min_quality, require_physics_valid=not args.no_physics_gate),
        batch_size=args.batch_size, actors=args.actors, gpus_per_actor=args.gpus_per_actor)


def main(argv: list[str] | None = None) -> int:
    from stickgen.errors import StickgenError
    from stickgen.generate.bulk import run_bulk

    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        # Inside a Ray job RAY_ADDRESS names the job's cluster; run by hand, start a fresh local
        # one ("local" never attaches to a stale cluster left by a killed `ray start`).
        run_bulk(cfg, address=args.ray_address or os.environ.get("RAY_ADDRESS") or "local")
    except StickgenError as e:
        print(f"[generate-bulk] error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
