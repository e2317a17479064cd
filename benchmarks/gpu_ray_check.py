"""GPU smoke test of the Ray paths, end to end through the `stickgen` CLI on one GPU node:

    python benchmarks/gpu_ray_check.py --data MOCAP_DIR --work DIR [--steps 40] [--ref-vectors REF.npz]

1. preprocess   `stickgen preprocess`: the encoder actor pool takes the GPU (num_gpus=1, MiniLM on
                cuda). With --ref-vectors (texts + vectors computed on CPU with the same weights),
                the Parquet embeddings are compared with them.
2. pretrain     `stickgen train pretrain --gpu --workers 1`: Ray Train, nccl, bf16 autocast, medium.
3. sft          `stickgen train sft --gpu` from that checkpoint (the SFT recipe's optimizer).
4. bulk         `stickgen generate-bulk`: the sampler actor on the GPU, every prompt accounted for.
5. serve        `stickgen serve run --device cuda` in the background, then `stickgen client
                generate` over HTTP twice with one seed: same motion both times.

Prints each step's wall time and checks; exit status 1 when a check fails. `--cpu` runs the same
script on CPUs (a dry run of the script itself, no GPU assertions).

Run on 2026-11-26 on a lent H100 whose image has torch but no Ray: Ray 2.60 (without its Java,
RLlib and LLM parts) and the packages it lacked travelled as unpacked wheels on PYTHONPATH, and
MiniLM as a stand-in package with fp16-rounded weights and the word-embedding rows of the smoke
texts only (the 64 MiB transfer limit); --ref-vectors held the CPU's vectors for those weights."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        FAILED.append(what)


def cli(*args: str, timeout: float = 900) -> str:
    """Run `stickgen ARGS` (this checkout's cli.py); echo its tail; raise on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    out = p.stdout + p.stderr
    print(f"$ stickgen {' '.join(args)}   ({time.perf_counter() - t0:.1f} s, exit {p.returncode})", flush=True)
    print("\n".join("    " + ln for ln in out.strip().splitlines()[-12:]), flush=True)
    if p.returncode != 0:
        raise SystemExit(f"stickgen {args[0]} failed (exit {p.returncode})")
    return out


def best_of(out: str) -> str:
    m = re.search(r"best checkpoint (\S+)", out)
    if not m:
        raise SystemExit("no best checkpoint in the training output")
    return m.group(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder of raw mocap (BVH)")
    ap.add_argument("--work", required=True, help="output folder")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per training stage")
    ap.add_argument("--ref-vectors", default=None, help=".npz with texts and their CPU vectors")
    ap.add_argument("--cpu", action="store_true", help="dry run on CPUs")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    w = Path(a.work).resolve()
    w.mkdir(parents=True, exist_ok=True)
    gpu = [] if a.cpu else ["--gpu"]
    if not a.cpu:
        import torch

        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)

    print("1. preprocess", flush=True)
    cli("preprocess", a.data, "--out", str(w / "pp"))
    s = json.loads((w / "pp" / "summary.json").read_text())
    print(f"    summary: cluster {s['cluster']}, parallelism {s['parallelism']}, outputs {s['outputs']}")
    check(s["files"]["rejected"] == 0 and s["windows"]["pretrain"] > 0,
          f"{s['files']['total']} files, none rejected; {s['windows']['pretrain']} pretrain windows")
    t = pq.read_table(w / "pp" / "pretrain", columns=["description", "text_embedding"])
    emb = np.asarray(t["text_embedding"].combine_chunks().flatten().to_numpy()).reshape(len(t), -1)
    check(bool(np.isfinite(emb).all()) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4),
          f"{len(t)} text embeddings of dim {emb.shape[1]}, finite and unit length")
    if a.ref_vectors:
        ref = np.load(a.ref_vectors)
        lut = {str(x): v for x, v in zip(ref["texts"], ref["vectors"])}
        descs = t["description"].to_pylist()
        pairs = [(emb[i], lut[d]) for i, d in enumerate(descs) if d in lut]
        diff = max(float(np.abs(x - y).max()) for x, y in pairs) if pairs else float("nan")
        check(len(pairs) == len(descs) and diff < 1e-3,
              f"embeddings against the CPU reference: {len(pairs)}/{len(descs)} rows, max abs diff {diff:.2e}")

    print("2. pretrain", flush=True)
    out = cli("train", "pretrain", "--config", "configs/pretrain_medium.yaml", "--data", str(w / "pp"), *gpu,
              "--workers", "1", "--max-steps", str(a.steps), "--storage", str(w / "runs"))
    pre = best_of(out)
    check((Path(pre) / "model.safetensors").is_file(), f"pretrain checkpoint {pre}")

    print("3. sft", flush=True)
    out = cli("train", "sft", "--config", "configs/sft_medium.yaml", "--init-from", pre, "--data", str(w / "pp"), *gpu,
              "--workers", "1", "--max-steps", str(max(2, a.steps // 2)), "--storage", str(w / "runs"))
    sft = best_of(out)
    m = re.search(r"val_loss (\S+)\)", out)
    check(m is not None and np.isfinite(float(m.group(1))), f"sft checkpoint {sft}, val_loss {m and m.group(1)}")

    print("4. bulk generation", flush=True)
    prompts = ["an old man waves with both hands", "a person walks forward", "someone runs and then bows", "a man kicks"]
    (w / "prompts.txt").write_text("\n".join(prompts) + "\n")
    cli("generate-bulk", str(w / "prompts.txt"), "--checkpoint", sft, "--out", str(w / "bulk"), "-k", "8",
        "--max-retries", "0", "--min-quality", "0", "--no-physics-gate")
    b = json.loads((w / "bulk" / "summary.json").read_text())
    print(f"    bulk summary: clips {b.get('clips')}, actors {b.get('actors')}, throughput {b.get('throughput')}")
    check(b["clips"]["written_total"] == 8 * len(prompts) and not b["clips"]["missing"],
          f"{b['clips']['written_total']} clips written for {len(prompts)} prompts x 8")
    if not a.cpu:
        check(b["actors"]["device"] == "cuda", "the sampler ran on cuda")

    print("5. serve", flush=True)
    log = open(w / "serve.log", "w")
    srv = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "serve", "run", "--checkpoint", sft, "--port",
                            str(a.port), "--device", "cpu" if a.cpu else "cuda"], cwd=REPO, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{a.port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if srv.poll() is not None or time.perf_counter() - t0 > 300:
                raise SystemExit("serve did not come up:\n" + (w / "serve.log").read_text()[-3000:])
            time.sleep(2)
        print(f"    serving after {time.perf_counter() - t0:.1f} s", flush=True)
        bodies = []
        for k in range(2):
            o = w / f"serve-{k}.json"
            cli("client", "generate", prompts[0], "--url", url, "-o", str(o), "--seed", "7", "--seconds", "4")
            bodies.append(json.loads(o.read_text()))
        same = all(bodies[0][k] == bodies[1][k] for k in ("motion", "actions", "physics"))
        check(same, f"two requests with seed 7: identical motion ({bodies[0]['meta']['total_frames']} frames)")
        with urllib.request.urlopen(url + "/v1/stats", timeout=10) as r:
            print(f"    /v1/stats: {r.read()[:600].decode()}")
    finally:
        os.killpg(srv.pid, signal.SIGINT)
        try:
            srv.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
        log.close()
    print("\nserve log (tail):\n" + "\n".join((w / "serve.log").read_text().splitlines()[-15:]))
    print(f"\n{'ALL CHECKS PASSED' if not FAILED else 'FAILED: ' + '; '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
