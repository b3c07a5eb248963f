"""Converter throughput on MP4 input (frames written per second, decode + resize + shard write).

  python experiments/bench_convert.py --out=bench_results/convert.json [--files=4 --seconds=20]

Writes --files test MP4s (H.264 via imageio-ffmpeg, --size WxH at 30 fps, moving shapes) into a
temporary directory, converts them to 64x64 with 1 and 2 worker processes (fresh output dir
each), and reports frames/s from the converter's own summary (file discovery to last unit).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def write_mp4(path: str, n: int, w: int, h: int, seed: int) -> None:
    import imageio_ffmpeg
    rng = np.random.default_rng(seed)
    wr = imageio_ffmpeg.write_frames(path, (w, h), fps=30, macro_block_size=8)
    wr.send(None)
    bg = rng.integers(0, 255, 3, dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    for t in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = bg
        cx, cy = (w / 2 + w / 3 * np.sin(t / 20 + seed)), (h / 2 + h / 3 * np.cos(t / 15))
        f[(xs - cx) ** 2 + (ys - cy) ** 2 < (h / 8) ** 2] = (255, 80, 20)
        f[:, (t * 4) % w:(t * 4) % w + 10] = 30
        wr.send(f)
    wr.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each test video")
    p.add_argument("--size", default="640x360")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--out", default="bench_results/convert.json")
    args = p.parse_args()
    from genie_jax.data import convert as cv
    w, h = map(int, args.size.split("x"))
    n = int(args.seconds * 30)
    results = []
    with tempfile.TemporaryDirectory(prefix="genie_bench_convert_") as tmp:
        t0 = time.perf_counter()
        for i in range(args.files):
            write_mp4(os.path.join(tmp, f"v{i}.mp4"), n, w, h, i)
        mb = sum(os.path.getsize(os.path.join(tmp, f"v{i}.mp4")) for i in range(args.files)) / 1e6
        print(f"wrote {args.files} x {n} frames {w}x{h} ({mb:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f}s")
        inputs = [os.path.join(tmp, f"v{i}.mp4") for i in range(args.files)]
        for workers in [int(x) for x in args.workers.split(",")]:
            out = os.path.join(tmp, f"out{workers}")
            s = cv.convert(inputs, out, cv.ConvertOptions(fractions=(("train", 1.0),)), workers=workers, progress=False)
            assert s["frames"] == args.files * n and s["skipped"] == 0, s
            r = dict(workers=workers, frames=s["frames"], seconds=s["seconds"],
                     frames_per_s=s["frames_per_s"], bytes=s["bytes"])
            results.append(r)
            print(f"workers={workers}: {r['frames_per_s']:,.0f} frames/s ({r['frames']} frames "
                  f"{w}x{h} -> 64x64 in {r['seconds']:.1f}s)")
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(results=results, input=f"{args.files} mp4 x {n} frames {w}x{h} 30fps h264",
                       cpus=os.cpu_count()), f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
