"""Sampler steps and guidance: measured quality vs speed, the basis for the default.

    python benchmarks/sampler_sweep.py --checkpoint runs/readme/.../best --data data/readme \
        [--settings 4:1,4:2.5,8:1,8:2.5,16:2.5] [--repeats 3] [--max-prompts 32]

For each `steps:guidance` pair it runs the evaluation protocol of `stickgen eval` (same prompts,
seeds, evaluator; robustness suites off) and prints FID, R-precision top-1/top-3, action accuracy,
jitter against real data, and the sampler cost: denoiser forward passes per animation (steps, x2
with classifier-free guidance because the conditional and unconditional passes are batched
together) and measured generation seconds per clip on this machine.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--evaluator", default=None)
    ap.add_argument("--settings", default="4:1,4:2.5,8:1,8:2.5,16:2.5")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-prompts", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from stickgen.eval.run import EvalSettings, evaluate, get_evaluator, make_candidate

    ev = get_evaluator(args.data, args.evaluator, log=None)
    rows = []
    for spec in args.settings.split(","):
        steps, guidance = int(spec.split(":")[0]), float(spec.split(":")[1])
        s = EvalSettings(repeats=args.repeats, max_prompts=args.max_prompts, suites=(), steps=steps,
                         guidance=guidance, pose_max_windows=2)
        cand = make_candidate(args.checkpoint, steps=steps, guidance=guidance)
        t0 = time.perf_counter()
        res, _ = evaluate(cand, args.data, ev, s, log=None)
        g, r = res["generated"], res["real"]
        n = args.repeats * res["data"]["prompts"]
        rows.append({"steps": steps, "guidance": guidance, "forwards": steps * (2 if guidance != 1.0 else 1),
                     "s_per_clip": res["timings_s"]["generate"] / n, "fid": g["fid"]["mean"],
                     "fid_ci": g["fid"]["ci95"], "r1": g["r_precision_top1"]["mean"],
                     "r3": g["r_precision_top3"]["mean"], "acc": g["action_accuracy"]["mean"],
                     "jitter": g["jitter"]["mean"], "real_jitter": r["jitter"]["mean"],
                     "real_fid": r["fid"]["mean"], "real_r1": r["r_precision_top1"]["mean"],
                     "wall": time.perf_counter() - t0})
        x = rows[-1]
        print(f"steps {steps:>3} guidance {guidance:>4}: FID {x['fid']:.3f} ± {x['fid_ci']:.3f}  R@1 {x['r1']:.3f}  "
              f"R@3 {x['r3']:.3f}  acc {x['acc']:.3f}  jitter {x['jitter']:.1f}  {x['s_per_clip'] * 1000:.0f} ms/clip",
              flush=True)
    x = rows[0]
    print(f"\nreal data (same prompts): FID {x['real_fid']:.3f}  R@1 {x['real_r1']:.3f}  jitter {x['real_jitter']:.1f}")
    print(f"{'steps':>5} {'guid':>5} {'fwd':>4} {'ms/clip':>8} {'FID':>8} {'R@1':>6} {'R@3':>6} {'acc':>6} {'jitter':>7}")
    for x in rows:
        print(f"{x['steps']:>5} {x['guidance']:>5} {x['forwards']:>4} {x['s_per_clip'] * 1000:>8.0f} {x['fid']:>8.3f} "
              f"{x['r1']:>6.3f} {x['r3']:>6.3f} {x['acc']:>6.3f} {x['jitter']:>7.1f}")
    print(f"(checkpoint {args.checkpoint}; {args.repeats} repetitions x {args.max_prompts} prompts; "
          f"{torch.get_num_threads()} torch thread(s); load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
