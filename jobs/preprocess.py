"""Ray job: preprocess raw mocap into the pretrain and SFT Parquet datasets.

    python -m jobs.preprocess SOURCE... --out DIR [--config configs/preprocess.yaml] [--set KEY=VALUE ...]

Submitted by `stickgen preprocess ... --cluster ADDRESS` or `stickgen submit preprocess -- ARGS`;
run directly it starts a local Ray. All the work is `stickgen.data.pipeline.run_preprocess`.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.preprocess", description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", help="folders, globs, .txt file lists, local paths or URIs (s3://, gs://)")
    p.add_argument("--out", required=True, help="output folder (shared storage or a URI on a multi-node cluster)")
    p.add_argument("--config", default=None, help="YAML config (default configs/preprocess.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. curation.sft.action_cap=200 (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import ray

    from stickgen.data.pipeline import load_config, parse_overrides, run_preprocess
    from stickgen.local_ray import init_local_ray

    args = parse_args(argv)
    cfg = load_config(args.config, parse_overrides(args.overrides))
    # Inside a Ray job RAY_ADDRESS names the job's cluster; run by hand, start a fresh local one
    # ("local" never attaches to a stale cluster left by a killed `ray start`).
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        init_local_ray()
    summary = run_preprocess(args.sources, args.out, cfg)
    w = summary["windows"]
    print(f"[stickgen preprocess] done: {w['pretrain']} pretrain / {w['sft']} sft windows in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
