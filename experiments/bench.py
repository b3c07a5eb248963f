"""Train-step benchmark: step time, frames/s, achieved FLOP/s (XLA cost analysis) against this
machine's measured dense-matmul FLOP/s, compile time and peak memory.

  python experiments/bench.py --out=bench_results/bench.json [--stages=tokenizer,dynamics] \
      [--sizes=tiny,coinrun] [--steps=3]

Stages: the tokenizer, and the dynamics on a frozen tokenizer and LAM whose params are random:
the engine is built and its step compiled with nothing on disk. Sizes: `tiny` is the tiny
config of experiments/configs/{tokenizer,dynamics}.py; `coinrun` is the CoinRun size
(64x64, patch 4, width 512; tokenizer 8 + 8 layers, dynamics 12 layers) at batch 2 with 16 frames.

XLA:CPU runs dots through YNNPACK by default. `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`
gives them to Eigen instead: 1.3x faster for the CoinRun-size dynamics step on this VM, and
slower for the small `cpu` configs (experiments/RESULTS.md, "YNNPACK or Eigen").
"""
from __future__ import annotations

import json
import os
import resource
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench_results/bench.json", "where to write the JSON")
_STAGES = flags.DEFINE_list("stages", ["tokenizer", "dynamics"], "stages to time")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "coinrun"], "config sizes to time")
_STEPS = flags.DEFINE_integer("steps", 3, "timed steps per size (after one warm-up step)")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 2048, "square matmuls of n/2, n and 2n give the peak")


def cpu_ceiling() -> dict:
    """The f32 FLOP/s this CPU can reach in theory: cores x clock x FLOPs per cycle per core.

    FLOPs/cycle: two FMA pipes of the widest datapath (an FMA is 2 FLOPs). AMD family 26 (Zen 5,
    EPYC Turin) has full 512-bit pipes: 2 x 16 lanes x 2 = 64; Zen 4 (family 25 with AVX-512)
    runs AVX-512 on 256-bit pipes, and Zen 3 / AVX2 parts have 256-bit pipes: 32. The clock is
    the one /proc/cpuinfo reports (the base/TSC clock; boost can be higher, so a measured figure
    somewhat above this ceiling means boost, far above it a timing bug)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return {}
    flags = set(info.get("flags", "").split())
    family = int(info.get("cpu family", "0") or 0)
    amd = "AMD" in info.get("vendor_id", "")
    if "avx512f" in flags and (not amd or family >= 26):
        per_cycle, why = 64, "2 x 512-bit FMA pipes"
    elif "fma" in flags:
        per_cycle, why = 32, "2 x 256-bit FMA pipes"
    else:
        per_cycle, why = 8, "SSE"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mhz = float(info.get("cpu MHz", "0") or 0)
    return {"cpu": info.get("model name", ""), "cpu_family": family, "cores": cores,
            "clock_mhz": mhz, "flops_per_cycle_per_core": per_cycle, "datapath": why,
            "ceiling_flops_per_s": cores * mhz * 1e6 * per_cycle}


from experiments.bench_lib import matmul_peak, time_train_step  # noqa: E402


def bench_size(stage: str, size: str, steps: int) -> dict:
    import importlib

    cfg = importlib.import_module(f"experiments.configs.{stage}").get_config(f"size={size}")
    if size == "coinrun":
        cfg.data.batch_size = 2
        cfg.data.num_frames = 16
    cfg.data.train_episodes = 8
    return dict(stage=stage, size=size, **time_train_step(cfg, steps))


def main(_):
    from experiments.bench_lib import tune_malloc
    tune_malloc()  # the allocator genie-jax itself runs with
    import jax
    print(f"devices: {jax.devices()}", flush=True)
    sizes = (_MATMUL_N.value // 2, _MATMUL_N.value, _MATMUL_N.value * 2)
    by_size = {n: matmul_peak(n) for n in sizes}
    peak = max(by_size.values())
    print("dense f32 matmul, median FLOP/s: " + ", ".join(
        f"{n}^3 {v / 1e9:.0f} GFLOP/s" for n, v in by_size.items()), flush=True)
    ceiling = cpu_ceiling() if jax.default_backend() == "cpu" else {}
    if ceiling:
        print(f"theoretical f32 ceiling: {ceiling['cores']} cores x {ceiling['clock_mhz']:.0f} MHz "
              f"x {ceiling['flops_per_cycle_per_core']} FLOPs/cycle ({ceiling['datapath']}) = "
              f"{ceiling['ceiling_flops_per_s'] / 1e9:.0f} GFLOP/s", flush=True)
    # The XLA flags pick kernels (e.g. YNNPACK or Eigen for CPU dots), so every row names them.
    results = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_ceiling": ceiling,
               "num_devices": len(jax.devices()), "matmul_peak_flops_per_s": peak,
               "matmul_flops_per_s_by_size": {str(n): v for n, v in by_size.items()}, "runs": []}
    for stage, size in [(st, sz) for st in _STAGES.value for sz in _SIZES.value]:
        r = bench_size(stage, size, _STEPS.value)
        r["fraction_of_matmul_peak"] = r["achieved_flops_per_s"] / peak
        results["runs"].append(r)
        print(f"[{stage} {size}] params {r['params'] / 1e6:.2f}M  "
              f"step {r['step_s_median'] * 1e3:.1f} ms  "
              f"{r['frames_per_s']:.1f} frames/s  {r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"({100 * r['fraction_of_matmul_peak']:.0f}% of matmul peak)  compile "
              f"{r['compile_s']:.1f} s  XLA temp "
              f"{r.get('xla_memory_bytes', {}).get('temp_size_in_bytes', 0) / 2**20:.0f} MiB",
              flush=True)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak process RSS: {results['peak_rss_mib']:.0f} MiB")
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
