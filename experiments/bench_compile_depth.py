"""Compile time of the dynamics train step against depth: the blocks unrolled against one
`nn.scan` over stacked params (`model.scan_layers`).

  python experiments/bench_compile_depth.py --out=bench_results/compile_depth.json \
      [--depths=2,4,8,16] [--width=512] [--batch=2] [--frames=16] [--remat=none]

The step is the CoinRun-size dynamics (64x64 frames, patch 4: 257 tokens per frame with the
action token; width 512, 8 heads) lowered and compiled with abstract arguments, as `genie-jax
plan` does: nothing is allocated or read from disk. Its frozen tokenizer and LAM are cut to one
encoder and one decoder block each, so that what grows with depth is the dynamics' own stack.
Trace+lower and XLA compile times are timed apart, on a fresh process's first compile of each
step (the persistent compilation cache is off).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

_OUT = flags.DEFINE_string("out", "bench_results/compile_depth.json", "where to write the JSON")
_DEPTHS = flags.DEFINE_list("depths", ["2", "4", "8", "16"], "dynamics depths to compile")
_WIDTH = flags.DEFINE_integer("width", 512, "dynamics width (CoinRun: 512)")
_BATCH = flags.DEFINE_integer("batch", 2, "clips per step")
_FRAMES = flags.DEFINE_integer("frames", 16, "frames per clip")
_REMAT = flags.DEFINE_string("remat", "none", "model.remat policy of the dynamics")


def step_config(depth: int, scan: bool):
    from experiments.configs.dynamics import get_config
    cfg = get_config("size=coinrun")
    cfg.data.batch_size, cfg.data.num_frames = _BATCH.value, _FRAMES.value
    cfg.model.update(width=_WIDTH.value, depth=depth, scan_layers=scan, remat=_REMAT.value)
    for frozen in (cfg.tokenizer.model, cfg.lam.model):
        frozen.update(depth=1, decoder_depth=1)
    cfg.mesh.shape = (1, 1, 1)
    return cfg


def time_compile(depth: int, scan: bool) -> dict:
    import jax
    from genie_jax.train.trainer import build_engine
    engine = build_engine(step_config(depth, scan), devices=jax.devices()[:1])
    args = engine.abstract_state, engine.abstract_batch(), engine.frozen_abstract
    with engine.context():
        t0 = time.perf_counter()
        lowered = engine.step_fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
    return {"depth": depth, "scan_layers": scan, "params": engine.param_count(),
            "lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0,
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes)}


def main(_):
    import jax
    jax.config.update("jax_enable_compilation_cache", False)  # time real compiles
    results = {"device": str(jax.devices()[0]), "width": _WIDTH.value, "batch": _BATCH.value,
               "frames": _FRAMES.value, "remat": _REMAT.value, "runs": []}
    print(f"{'depth':>5} {'layout':>8} {'params':>8} {'lower s':>8} {'compile s':>9} "
          f"{'total s':>8}", flush=True)
    for depth in map(int, _DEPTHS.value):
        for scan in (False, True):
            r = time_compile(depth, scan)
            results["runs"].append(r)
            print(f"{depth:>5} {'scan' if scan else 'unrolled':>8} {r['params'] / 1e6:>7.1f}M "
                  f"{r['lower_s']:>8.2f} {r['compile_s']:>9.2f} {r['total_s']:>8.2f}", flush=True)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
