"""Micro-benchmark: BVH reading on ONE core, over the Bandai Namco clips.

    python benchmarks/read_mocap.py [--data DIR] [--repeat 5]

Prints the median ms per file for read_bvh and its split: read (bytes from disk, page-cached),
parse (HIERARCHY + MOTION -> channel matrix), FK (channels -> joint positions) and clip
(rig mapping, up axis, units). Also times a few alternative number parsers on the median-size
file for reference. Threads are pinned to 1 before numpy/pyarrow are imported.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
           "ARROW_NUM_THREADS", "ARROW_IO_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stickgen.motion.bvh import forward_kinematics, parse_bvh, read_bvh  # noqa: E402
from stickgen.motion.formats import read_bytes  # noqa: E402
from stickgen.motion.rig import make_clip  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("STICKGEN_SHARED_DATA", REPO.parent / "shared" / "data")) / \
    "mocap" / "bandai-namco-1" / "data"


def best_of(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls (after one warm-up call)."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def time_file(f: Path, repeat: int) -> dict:
    """Per-stage seconds of the read_bvh pipeline, each the median of `repeat` passes; the
    stages are timed inside one pass (so they add up) and read_bvh itself right after."""
    acc: dict[str, list[float]] = {k: [] for k in ("read", "parse", "fk", "clip", "total")}
    read_bvh(f)  # warm-up (hierarchy cache, page cache)
    for _ in range(repeat):
        t0 = time.perf_counter()
        raw = read_bytes(f)
        t1 = time.perf_counter()
        bvh = parse_bvh(raw, f)
        t2 = time.perf_counter()
        pos = forward_kinematics(bvh.skeleton, bvh.motion)
        t3 = time.perf_counter()
        make_clip(pos, bvh.skeleton.names, 1 / bvh.frame_time, path=f, parents=bvh.skeleton.parents)
        t4 = time.perf_counter()
        read_bvh(f)
        t5 = time.perf_counter()
        for k, v in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            acc[k].append(v)
    out = {k: statistics.median(v) for k, v in acc.items()}
    out.update({f"{k}_min": min(v) for k, v in acc.items()})
    out.update(size=len(raw), frames=len(bvh.motion))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    files = sorted(args.data.glob("*.bvh"))
    if not files:
        sys.exit(f"no .bvh files under {args.data}")
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    rows = [time_file(f, args.repeat) for f in files]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    per_frame_us = statistics.median(r["total"] / r["frames"] * 1e6 for r in rows)
    print(f"{len(files)} Bandai BVH files, median {med['size'] / 1024:.0f} KB, {med['frames']:.0f} frames; 1 thread")
    print(f"per file: median and best of {args.repeat} runs; then the median over files "
          f"(stages timed inside one pass, read_bvh right after)")
    print(f"{'':12s} {'median':>8s} {'best':>8s}")
    for k, label in (("total", "read_bvh"), ("read", "  read"), ("parse", "  parse"), ("fk", "  FK"),
                     ("clip", "  clip")):
        print(f"{label:12s} {med[k] * 1e3:6.2f} ms {med[k + '_min'] * 1e3:6.2f} ms")
    print(f"=> {1 / med['total']:.0f} files/s median, {1 / med['total_min']:.0f} files/s best; "
          f"{per_frame_us:.1f} us/frame")
    print("   (parse: hierarchy + motion text -> [T, C] float64; FK: channels -> [T, J, 3];"
          " clip: rig mapping, up axis, units)")
    slowest = max(rows, key=lambda r: r["total"])
    print(f"slowest file {slowest['total'] * 1e3:6.2f} ms ({slowest['frames']} frames)")

    # reference: other ways to turn the median file's MOTION text into numbers
    f = files[int(np.argsort([r["size"] for r in rows])[len(rows) // 2])]
    raw = read_bytes(f)
    body = raw[raw.index(b"Frame Time"):]
    body = body[body.index(b"\n") + 1:]
    import pyarrow.csv as pacsv

    alts = {
        "np.fromstring(sep=' ')": lambda: np.fromstring(body.decode(), sep=" "),
        "float() over bytes.split()": lambda: np.array(list(map(float, body.split()))),
        "pyarrow.csv.read_csv": lambda: pacsv.read_csv(
            io.BytesIO(body), read_options=pacsv.ReadOptions(use_threads=False, autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter=" ")),
        "stickgen parse_bvh (whole file)": lambda: parse_bvh(raw, f),
    }
    print(f"number parsing alternatives on {f.name} ({len(raw) / 1024:.0f} KB):")
    for name, fn in alts.items():
        print(f"  {name:32s} {best_of(fn, 20) * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
