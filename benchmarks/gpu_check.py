"""GPU smoke test of the model on one CUDA device, without Ray (a bare GPU box may have no Ray):
training steps on real windows, sampling invariants, then the generation benchmark.

    python benchmarks/gpu_check.py --data DIR/pretrain [--steps 400] [--batch 64]

1. train   the medium denoiser (20.6M-parameter trunk, final norm) with the SFT recipe's optimizer
           (AdamW, lr 1e-4, weight decay 0.01), bf16 autocast, batches of real windows from a
           `stickgen preprocess` output. Reports the loss, samples/s, and the denoising error at
           t = 0.2 on held-out windows before and after (1.0 = predicting the mean, which is what
           the collapsed deep model gave; tests/test_generation.py checks the same on CPU).
2. sample  the same seeds twice give identical motion; a prompt sampled alone and inside a batch
           of 16 agree (bf16 on GPU: max abs difference reported, in metres).
3. speed   benchmarks/generate.py --device cuda (animations/s by batch size).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stickgen.data.schema import table_to_arrays  # noqa: E402
from stickgen.model.denoiser import MotionDenoiser, ObjectiveConfig, denoising_loss, sample  # noqa: E402
from stickgen.model.transformer import ModelConfig  # noqa: E402


def denoise_error(model: MotionDenoiser, d: dict, dev: str, t: float = 0.2) -> float:
    """Mean squared error of x0 from x_t at noise level t, relative to the features' variance."""
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.no_grad(), torch.autocast(dev, torch.bfloat16):
        x0 = model.encode_motion(d["motion"])
        eps = torch.randn(x0.shape, generator=g, device=dev)
        tt = torch.full((len(x0),), t, device=dev)
        out = model((1 - t) * x0 + t * eps, tt, d["text_embedding"], None, ~d["mask"], ("pose",))["pose"].float()
    m = d["mask"][..., None].float()
    return float(((out - x0) ** 2 * m).sum() / (m.sum() * x0.shape[-1]) / x0[m[..., 0].bool()].var())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a preprocess output's pretrain/ folder (Parquet)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    a = ap.parse_args()
    dv = a.device
    sync = torch.cuda.synchronize if dv == "cuda" else (lambda: None)
    print(f"{torch.cuda.get_device_name() if dv == 'cuda' else 'cpu'}, torch {torch.__version__}", flush=True)
    ok = True

    cols = ("motion", "mask", "actions", "physics", "text_embedding")
    arr = table_to_arrays(pq.read_table(a.data, columns=list(cols)), cols)
    n = len(arr["motion"])
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    held, train = order[: max(8, n // 10)], order[max(8, n // 10):]
    dev = {k: torch.as_tensor(v).to(dv) for k, v in arr.items()}
    dev["mask"] = dev["mask"].bool()
    dev["actions"] = dev["actions"].long()
    held_d = {k: v[torch.as_tensor(held).to(dv)] for k, v in dev.items()}

    torch.manual_seed(0)
    model = MotionDenoiser(ModelConfig.variant("medium", embedding_dim=dev["text_embedding"].shape[1])).to(dv)
    model.set_feature_stats(dev["motion"], dev["mask"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    err0 = denoise_error(model.eval(), held_d, dv)
    model.train()
    g = torch.Generator().manual_seed(0)
    losses = []
    sync()
    t0 = time.perf_counter()
    for step in range(a.steps):
        idx = torch.as_tensor(train[torch.randint(len(train), (a.batch,), generator=g).numpy()]).to(dv)
        batch = {k: v[idx] for k, v in dev.items()}
        with torch.autocast(dv, torch.bfloat16):
            loss, _ = denoising_loss(model, batch, ObjectiveConfig())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    sync()
    dt = time.perf_counter() - t0
    err1 = denoise_error(model.eval(), held_d, dv)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"train: {n} real windows ({len(train)} train / {len(held)} held out); {a.steps} steps of batch {a.batch} "
          f"in {dt:.1f} s = {a.steps * a.batch / dt:.0f} samples/s; loss {first:.3f} -> {last:.3f}; "
          f"held-out denoising error at t=0.2: {err0:.3f} -> {err1:.3f} (1.0 = the mean)", flush=True)
    if not (np.isfinite(losses).all() and last < 0.7 * first and err1 < 0.6):
        print("FAIL: training on GPU did not learn", flush=True)
        ok = False

    text = held_d["text_embedding"][:16]
    seeds = list(range(100, 116))
    with torch.autocast(dv, torch.bfloat16):
        m1 = sample(model, text, 250, seeds=seeds)
        m2 = sample(model, text, 250, seeds=seeds)
        alone = torch.cat([sample(model, text[i:i + 1], 250, seeds=[seeds[i]]) for i in range(4)])
    same = torch.equal(m1, m2)
    diff = float((alone - m1[:4]).abs().max())
    print(f"sample: repeat identical {same}; alone vs in a batch of 16: max |diff| {diff:.4f} m; "
          f"motion finite {bool(torch.isfinite(m1).all())}", flush=True)
    if not same or not torch.isfinite(m1).all() or diff > 0.05:
        print("FAIL: sampling invariants", flush=True)
        ok = False

    if not a.no_speed and dv == "cuda":
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generate.py"), "--device", "cuda",
                            "--batches", "1,64,512,2048,4096", "--repeats", "5"], cwd=REPO)
        ok &= r.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
