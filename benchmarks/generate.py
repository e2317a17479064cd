"""Generation speed: 10-second (250-frame) animations per second for the MEDIUM model.

    python benchmarks/generate.py [--steps N] [--guidance W] [--batches 1,8,32] [--device cpu|cuda]

For each batch size: wall time per batch (median of repeats), animations/s, core-seconds per
animation (wall x threads / batch), FLOPs per animation (counted by torch's FlopCounterMode on one
denoiser call x calls per animation) and the achieved fraction of this machine's measured peak
(a large fp32 matmul on the same threads). On CUDA it runs in bf16 autocast and reports the same
against the GPU's measured bf16 matmul peak.

Targets (issue #3): CPU <= 1.2 core-seconds per animation at the default step count (the
published card claims 1.5 s on an 8-core i7, ~12 core-s); one H100 >= 1000 animations/s.
Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stickgen.model.denoiser import DEFAULT_SAMPLER, MotionDenoiser, sample
from stickgen.model.transformer import ModelConfig

T = 250


def peak_flops(device: str, dtype: torch.dtype) -> float:
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        reps = 4 if device == "cpu" else 50
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def flops_per_call(model: MotionDenoiser, batch: int, device: str) -> float:
    x = torch.randn(batch, T, model.cfg.input_dim, device=device)
    t = torch.full((batch,), 0.5, device=device)
    text = torch.randn(batch, model.cfg.embedding_dim, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x, t, text)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=DEFAULT_SAMPLER["steps"])
    ap.add_argument("--guidance", type=float, default=DEFAULT_SAMPLER["guidance"])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    dev = a.device
    torch.manual_seed(0)
    model = MotionDenoiser(ModelConfig.variant("medium", embedding_dim=384, dropout=0.0)).to(dev).eval()
    n_params = sum(p.numel() for p in model.trunk.parameters())
    calls = a.steps * (2 if a.guidance != 1.0 else 1)  # classifier-free guidance doubles the batch
    f_anim = flops_per_call(model, 1, dev) * calls
    print(f"medium trunk {n_params:,} params; {a.steps} steps, guidance {a.guidance:g} -> {calls} denoiser "
          f"passes of {T} frames per animation = {f_anim / 1e9:.1f} GFLOP per animation")
    thread_list = [int(x) for x in a.threads.split(",")] if dev == "cpu" else [torch.get_num_threads()]
    for threads in thread_list:
        torch.set_num_threads(threads)
        dtype = torch.float32 if dev == "cpu" else torch.bfloat16
        peak = peak_flops(dev, dtype)
        print(f"\n{dev}, {threads} thread(s): measured peak {peak / 1e9:.0f} GFLOP/s ({dtype})")
        print(f"{'batch':>5} {'wall s':>8} {'anim/s':>8} {'core-s/anim':>12} {'GFLOP/s':>9} {'of peak':>8}")
        for B in [int(x) for x in a.batches.split(",")]:
            text = torch.randn(B, 384, device=dev)
            seeds = list(range(B))
            with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                sample(model, text, T, steps=a.steps, guidance=a.guidance, seeds=seeds)  # warm-up
                walls = []
                for _ in range(a.repeats):
                    if dev == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    sample(model, text, T, steps=a.steps, guidance=a.guidance, seeds=seeds)
                    if dev == "cuda":
                        torch.cuda.synchronize()
                    walls.append(time.perf_counter() - t0)
            w = statistics.median(walls)
            core_s = w * threads / B if dev == "cpu" else float("nan")
            achieved = f_anim * B / w
            print(f"{B:>5} {w:>8.2f} {B / w:>8.2f} {core_s:>12.2f} {achieved / 1e9:>9.0f} {achieved / peak:>8.0%}")
    if dev == "cpu":
        print("\ntarget: <= 1.2 core-seconds per 10-s animation at the default step count")


if __name__ == "__main__":
    main()
