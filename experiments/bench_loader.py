"""Loader throughput: random 16-frame 64x64 windows from an ArrayRecord dataset via grain.

  python experiments/bench_loader.py --out=bench_results/loader.json [--data=DIR] [--workers=0,2]

Without --data it writes a dataset of --episodes procedural episodes (genie_jax ProceduralVideo,
64x64, --episode-length frames) into a temporary directory first. Prints one line per setting
and writes all numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def make_dataset(out_dir: str, episodes: int, length: int, resolution: int, record_frames: int,
                 compression: str) -> None:
    from genie_jax.data import shards
    from genie_jax.data.procedural import ProceduralVideo
    src = ProceduralVideo("train", num_episodes=episodes, episode_length=length,
                          resolution=resolution)
    fr = shards.parse_fractions("1,0,0")
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    per_unit = 16
    for u0 in range(0, episodes, per_unit):
        w = shards.UnitWriter(staging, f"proc-{u0:05d}", src.frame_shape, fractions=fr,
                              record_frames=record_frames, compression=compression)
        for e in range(u0, min(episodes, u0 + per_unit)):
            d = src.read_window(e, 0, length)
            w.begin_episode(dict(source="procedural", seed=e, fps=15.0))
            w.add(d["frames"], d["actions"])
            w.end_episode()
        w.commit()
    shards.finalize(out_dir)


def bench(data_dir: str, workers: int, batch: int, frames: int, seconds: float,
          read_threads: int, prefetch: int) -> dict:
    from genie_jax.data.loader import LoaderOptions, make_iterator
    from genie_jax.data.shards import open_source
    src = open_source(data_dir, "train")
    opts = LoaderOptions(num_frames=frames, local_batch=batch, seed=0, worker_count=workers,
                         read_threads=read_threads, prefetch=prefetch)
    it = make_iterator(src, opts)
    t_start = time.perf_counter()
    first = next(it)
    t_first = time.perf_counter() - t_start
    assert first["frames"].shape == (batch, frames, *src.frame_shape), first["frames"].shape
    for _ in range(3):  # warm up
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        n += b["frames"].shape[0]
    dt = time.perf_counter() - t0
    return dict(workers=workers, read_threads=read_threads, prefetch=prefetch, batch=batch,
                window_frames=frames, windows=n, seconds=dt, windows_per_s=n / dt,
                frames_per_s=n * frames / dt, first_batch_s=t_first,
                MB_per_s=n * frames * int(np.prod(src.frame_shape)) / dt / 1e6)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", help="existing dataset dir (default: build a procedural one)")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--episode-length", type=int, default=256)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--record-frames", type=int, default=16)
    p.add_argument("--compression", default="none")
    p.add_argument("--workers", default="0,2")
    p.add_argument("--read-threads", type=int, default=1)
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", default="bench_results/loader.json")
    args = p.parse_args()
    from absl import flags  # grain reads absl flags (also in its worker processes)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="genie_bench_")
        data = tmp.name
        t0 = time.perf_counter()
        make_dataset(data, args.episodes, args.episode_length, args.resolution,
                     args.record_frames, args.compression)
        print(f"built {args.episodes}x{args.episode_length} frames at {args.resolution}px in "
              f"{time.perf_counter() - t0:.1f}s ({data})")
    results = []
    for w in [int(x) for x in args.workers.split(",")]:
        r = bench(data, w, args.batch, args.frames, args.seconds, args.read_threads,
                  args.prefetch)
        results.append(r)
        print(f"workers={w}: {r['frames_per_s']:,.0f} frames/s ({r['windows_per_s']:,.0f} "
              f"windows/s, {r['MB_per_s']:.0f} MB/s, first batch {r['first_batch_s']:.2f}s)")
    out = dict(results=results, record_frames=args.record_frames, compression=args.compression,
               dataset=args.data or f"procedural {args.episodes}x{args.episode_length}",
               machine=dict(cpus=os.cpu_count(), platform=platform.platform()))
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
