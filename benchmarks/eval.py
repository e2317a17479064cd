"""Benchmark of `stickgen eval` on CPU.

    python benchmarks/eval.py [--data DIR] [--evaluator DIR] [--clips 1000] [--skip-e2e] [--threads N]

1. Metric computation for 1,000 generated clips (clips given, no generation): evaluator
   embedding + classification, FID (true sqrtm) against the real test set, R-precision (batches of
   32) + MM-Dist, diversity (300 pairs), multimodality, jitter/smoothness, the per-clip quality
   report (physics validity, foot skate), action accuracy. Clips are real windows with seeded
   noise and time shifts, so the quality checks do real work.
2. End to end: `stickgen eval` (run_eval with the CLI defaults: 5 repetitions x 32 prompts,
   every robustness suite, report and plots) on a *small* checkpoint (d_model 256, 6 layers: the
   compute of a trained small model; the weights are random because no trained one exists yet).

Data: DIR is a `stickgen preprocess` output folder; without --data a stand-in dataset is written
to a temp folder from the shared Bandai + CMU clips and seeded synthetic clips (MiniLM
embeddings). Prints wall and CPU seconds and the machine's load average (other processes share
this machine; CPU seconds are the stable number).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("STICKGEN_SHARED_DATA", REPO.parent / "shared" / "data"))


def stand_in_dataset(root: Path) -> Path:
    from stickgen.eval.data import write_dataset
    from stickgen.motion.synth import synthesize_dataset

    files = sorted(glob.glob(str(SHARED / "mocap/bandai-namco-1/data/*.bvh")))
    files += sorted(glob.glob(str(SHARED / "mocap/cmu/*.bvh"))) + sorted(glob.glob(str(SHARED / "mocap/cmu/*.amc")))
    files += [str(p) for p in synthesize_dataset(root / "synth", n_per_action=20, seed=0)]
    return write_dataset(files, root / "data")


class Clock:
    def __init__(self):
        self.rows = []

    def __call__(self, name, fn, *a, **kw):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*a, **kw)
        self.rows.append((name, time.perf_counter() - w, time.process_time() - c))
        return out

    def show(self, title):
        print(f"\n{title}")
        print(f"  {'stage':<44} {'wall s':>8} {'cpu s':>8}")
        for n, w, c in self.rows:
            print(f"  {n:<44} {w:8.2f} {c:8.2f}")
        tw, tc = sum(r[1] for r in self.rows), sum(r[2] for r in self.rows)
        print(f"  {'total':<44} {tw:8.2f} {tc:8.2f}")
        return tw, tc


def bench_metrics(data: Path, ev, n_clips: int) -> None:
    import numpy as np

    from stickgen.eval import metrics as M
    from stickgen.eval.data import load_windows

    test = load_windows(data, ("test",))
    rng = np.random.default_rng(0)
    idx = rng.choice(len(test), n_clips, replace=True)
    motion = test.motion[idx] + rng.normal(0, 0.01, (n_clips, 1, 48)).astype(np.float32)
    mask = test.mask[idx]
    text = ev.embed_text(test.text_embedding[idx])
    ck = Clock()
    enc = ck("evaluator: embed + classify 1 pass", ev.encode, motion, mask)
    ref = ck("evaluator: embed real test set", ev.encode, test.motion, test.mask)
    ck("FID (sqrtm) vs real test", M.fid, enc["emb"], ref["emb"])
    ck("R-precision (batches of 32) + MM-Dist", M.r_precision, text, enc["emb"], rng=np.random.default_rng(0))
    ck("diversity (300 pairs)", M.diversity, enc["emb"], 300, np.random.default_rng(0))
    ck("multimodality (100 prompts x 10 samples)", M.multimodality, enc["emb"].reshape(100, -1, enc["emb"].shape[1]),
       10, np.random.default_rng(0))
    ck("jitter + smoothness", lambda: M.smoothness(M.jitter(motion, mask)))
    ck("quality report per clip (physics, skate)", M.physics_summary, motion, mask)
    ck("action accuracy", M.action_accuracy, [ev.classes[i] for i in enc["logits"].argmax(1)],
       [test.action_labels[i] for i in idx], ev.classes)
    tw, tc = ck.show(f"metrics for {n_clips} clips (given; no generation)")
    print(f"  => {n_clips / tw:.0f} clips/s wall, {n_clips / tc:.0f} clips per CPU-second")


def bench_e2e(data: Path, evaluator: Path, root: Path) -> None:
    import torch

    from stickgen.eval.run import EvalSettings, run_eval
    from stickgen.model.checkpoint import save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.transformer import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.variant("small", embedding_dim=384)
    ck = save_checkpoint(root / "small", MotionDenoiser(cfg), denoiser_config(cfg, text_encoder="all-MiniLM-L6-v2"))
    w, c = time.perf_counter(), time.process_time()
    res = run_eval(str(ck), data, root / "eval_small", evaluator=evaluator, settings=EvalSettings(), log=None)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    p = res["protocol"]
    print(f"\nstickgen eval end to end, small checkpoint (random init), CLI defaults: {p['repeats']} repetitions x "
          f"{res['data']['prompts']} prompts + {sum(v['n'] for v in res['robustness']['suites'].values())} suite prompts")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in res["timings_s"].items()))
    print(f"  => {wall:.1f} s wall, {cpu:.1f} s CPU (all threads); load average {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--evaluator", type=Path)
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-metrics", action="store_true")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()}")
    root = Path(tempfile.mkdtemp(prefix="stickgen-bench-eval-"))
    data = args.data
    if data is None:
        t = time.perf_counter()
        data = stand_in_dataset(root)
        print(f"stand-in dataset written to {data} in {time.perf_counter() - t:.1f} s")
    from stickgen.eval.evaluator import train_evaluator
    from stickgen.eval.run import get_evaluator

    evaluator = args.evaluator
    if evaluator is None:
        w, c = time.perf_counter(), time.process_time()
        evaluator = train_evaluator(data, root / "evaluator", log=None)
        print(f"evaluator trained (default recipe) in {time.perf_counter() - w:.1f} s wall, "
              f"{time.process_time() - c:.1f} s CPU")
    ev = get_evaluator(data, evaluator, log=None)
    if not args.skip_metrics:
        bench_metrics(data, ev, args.clips)
    if not args.skip_e2e:
        bench_e2e(data, evaluator, root)


if __name__ == "__main__":
    main()
