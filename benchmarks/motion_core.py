"""Motion core throughput: read + convert + score every Bandai clip in ONE process on ONE core.

    python benchmarks/motion_core.py [--repeats 5] [--data ../shared/data/mocap/bandai-namco-1/data]

Prints clips/s and MB/s (median over repeats) and per-stage milliseconds (median per clip):
read (parse + forward kinematics + rig mapping), convert (canonical joints, camera, 25 fps, v3)
and score (windows, physics, quality, labels). Target (issue #2): >= 150 clips/s on one core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: no BLAS/OpenMP helper threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from stickgen.motion.convert import convert_file  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mocap" / "bandai-namco-1" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    files = sorted(str(p) for p in Path(a.data).glob("*.bvh"))
    if not files:
        raise SystemExit(f"no .bvh files in {a.data}")
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    for f in files[:10]:  # warm caches (imports, parsed headers)
        convert_file(f)
    rates, stages = [], {"read_ms": [], "convert_ms": [], "score_ms": []}
    windows = 0
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        per = {k: [] for k in stages}
        windows = 0
        for f in files:
            rows, info = convert_file(f)
            windows += len(rows)
            for k in per:
                per[k].append(info[k])
        dt = time.perf_counter() - t0
        rates.append(len(files) / dt)
        for k in per:
            stages[k].append(statistics.median(per[k]))
    rate = statistics.median(rates)
    print(f"Bandai: {len(files)} clips, {mb:.1f} MB, {windows} windows; 1 process, 1 thread; {a.repeats} repeats")
    print(f"read + convert + score: {rate:.0f} clips/s median (min {min(rates):.0f}, max {max(rates):.0f}), "
          f"{rate * mb / len(files):.1f} MB/s, {1000 / rate:.2f} ms/clip")
    print("per-stage median ms/clip: " + ", ".join(f"{k[:-3]} {statistics.median(v):.2f}" for k, v in stages.items()))
    print(f"target >= 150 clips/s on one core: {'MET' if rate >= 150 else 'MISSED'} ({rate / 150:.2f}x)")


if __name__ == "__main__":
    main()
