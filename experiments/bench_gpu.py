"""One short accelerator run for the GPU figures of the sampler and the train steps.

  python experiments/bench_gpu.py --out=bench_results/gpu.json [--steps=10] [--peak_tflops=989] \
      [--train_rows=tokenizer:cudnn,dynamics:xla] [--sample_rows=bfloat16:rope,...]

Rows (all CoinRun size, 64x64, patch 4, width 512, random params; nothing is read from disk):
  train   tokenizer (8+8 layers, batch 48 x 16 frames) and dynamics (12 layers on a frozen
          tokenizer and LAM, batch 36 x 16 frames), bf16 compute on f32 params, with
          jax.nn.dot_product_attention's XLA or cuDNN implementation: step time, tokens/s,
          MFU = model FLOPs (genie_jax.plan.model_flops, counted on the CPU: the GPU program's
          own count misses the library calls) against the chip's dense bf16 peak
          (--peak_tflops; 989 for the H100 SXM and H200), and a profile of 3 steps: device
          kernel time by class (matmul, attention, XLA fusions, ...) and the top kernels.
  sample  WorldModel.step, batch 1, 25 MaskGIT steps, 16-frame buffer, after the buffer is full:
          p50/p95 latency and frames/s, f32 and bf16, learned (absolute) and rotary temporal
          positions (the rolling KV cache).
The device image has no grain (the data loader and checkpoints are not used here), so a stand-in
module is registered when it is missing.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
import types

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench_results/gpu.json", "where to write the JSON")
_STEPS = flags.DEFINE_integer("steps", 10, "timed train steps / sampler steps per row")
_PEAK = flags.DEFINE_float("peak_tflops", 989.0, "dense bf16 peak of the chip, TFLOP/s")
_PARTS = flags.DEFINE_list("parts", ["train", "sample"], "which rows to run")
_TRAIN_ROWS = flags.DEFINE_list("train_rows", ["tokenizer:cudnn", "dynamics:xla",
                                               "dynamics:cudnn"],
                                "train rows, stage:attention (xla|cudnn); the H200 run found the "
                                "tokenizer's XLA attention out of memory and cuDNN refusing the "
                                "dynamics' 257-token frames (now padded to 264 under cuDNN: "
                                "st_transformer.full_attention)")
_SIZE = flags.DEFINE_string("size", "coinrun", "config size (test: a seconds-long CPU dry run)")
_MODEL_FLOPS = flags.DEFINE_bool("model_flops", True, "count model FLOPs (a CPU lowering; the "
                                  "same on every machine, so a short device run may skip it)")
_PROFILE = flags.DEFINE_bool("profile", True, "trace 3 train steps: device time by kernel class")
_SAMPLE_ROWS = flags.DEFINE_list("sample_rows", ["bfloat16:learned", "bfloat16:rope",
                                                 "float32:learned", "float32:rope"],
                                 "sampler rows, dtype:temporal_pos[:options] (sample_opts), "
                                 "in this order")
_FRAME_FLOPS = flags.DEFINE_float("frame_flops", 0.0, "model FLOPs of one generated frame "
                                  "(--parts=flops prints them; the same on every machine) for "
                                  "the sampler rows' MFU; 0: no MFU")


def _set_models(cfg, **kw):
    for sec in ("model", "tokenizer", "lam"):
        if sec in cfg:
            m = cfg[sec] if sec == "model" else cfg[sec].model
            m.update(kw)


def train_row(stage: str, impl: str, steps: int, peak: float, size: str) -> dict:
    import jax
    from experiments.bench_lib import random_frozen
    from genie_jax.train.trainer import build_engine
    cfg = importlib.import_module(f"experiments.configs.{stage}").get_config(f"size={size}")
    if size == "coinrun":
        cfg.data.num_frames = 16
    _set_models(cfg, dtype="bfloat16", attention_impl=impl)
    engine = build_engine(cfg)
    frozen = random_frozen(engine.frozen_abstract)
    spec = engine.abstract_batch()
    batch = {k: jax.device_put(jax.random.randint(jax.random.PRNGKey(1), s.shape, 0, 255)
                               .astype(s.dtype), s.sharding) for k, s in spec.items()}
    with engine.context():
        state = engine.init_fn(jax.random.PRNGKey(0))
        t0 = time.perf_counter()
        compiled = engine.step_fn.lower(state, batch, frozen).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0))
        for _ in range(2):
            state, m = compiled(state, batch, frozen)
        jax.block_until_ready(m)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            state, m = compiled(state, batch, frozen)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
        prof = profile_steps(compiled, state, batch, frozen) if _PROFILE.value else None
    step_s = sorted(times)[len(times) // 2]
    B, T = cfg.data.batch_size, cfg.data.num_frames
    n_tok = B * T * (cfg.data.resolution // cfg.model.patch_size) ** 2
    model = model_flops_of(cfg) if _MODEL_FLOPS.value else float("nan")
    return {"part": "train", "stage": stage, "attention": impl, "batch": B, "frames": T,
            "params": engine.param_count(), "compile_s": compile_s, "step_s_p50": step_s,
            "step_s_all": times, "tokens_per_s": n_tok / step_s,
            # The GPU program's own count misses the work inside library calls (cuBLAS/cuDNN):
            # 5.4e12 against 7.0e13-8.5e13 model FLOPs on the H200. MFU uses the model FLOPs.
            "gpu_counted_flops_per_step": flops, "model_flops_per_step": model,
            "tflops_per_s": model / step_s / 1e12, "mfu": model / step_s / (peak * 1e12),
            "loss": float(m["loss"]), "profile": prof}


def model_flops_of(cfg) -> float:
    """Model FLOPs of the step (genie_jax.plan.model_flops: lowered for one CPU device, no
    rematerialisation), with XLA attention so that the CPU can lower it."""
    from genie_jax.plan import model_flops
    c = cfg.copy_and_resolve_references()
    _set_models(c, attention_impl=None)
    return model_flops(c)


def _kernel_class(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")):
        return "matmul (cuBLAS/cutlass)"
    if any(k in n for k in ("cudnn", "flash", "fmha", "attention")):
        return "attention (cuDNN)"
    if any(k in n for k in ("memcpy", "memset", "copy")):
        return "copies"
    if any(k in n for k in ("reduce", "scatter", "gather", "sort")):
        return "reductions/gather/scatter/sort"
    if "fusion" in n or "loop" in n or "input_" in n:
        return "XLA fusions (elementwise)"
    return "other"


def profile_steps(compiled, state, batch, frozen, n: int = 3) -> dict:
    """Where the time of `n` train steps goes (profile_calls)."""
    box = {"state": state}

    def one():
        box["state"], m = compiled(box["state"], batch, frozen)
        return m
    return profile_calls(one, n)


def profile_calls(call, n: int = 3) -> dict:
    """Where the time of `n` calls of `call()` (returns arrays to wait for) goes: a jax.profiler
    trace (Perfetto JSON), device kernel time summed by class and by kernel name, the number of
    kernels, and the device's busy time against the wall time."""
    import gzip
    import glob
    import tempfile
    import jax
    d = tempfile.mkdtemp(prefix="genie-prof-")
    with jax.profiler.trace(d, create_perfetto_trace=True):
        t = time.perf_counter()
        for _ in range(n):
            m = call()
        jax.block_until_ready(m)
        wall = time.perf_counter() - t
    files = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        return {"error": f"no perfetto trace under {d}"}
    events = json.load(gzip.open(files[0])).get("traceEvents", [])
    names = {e["pid"]: e["args"].get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {p for p, nm in names.items() if "/device:" in nm and "CPU" not in nm}
    by_name, by_class, busy, kernels = {}, {}, 0.0, 0
    for e in events:
        if e.get("ph") != "X" or e.get("pid") not in device:
            continue
        us = float(e.get("dur", 0.0))
        busy += us
        kernels += 1
        by_name[e["name"]] = by_name.get(e["name"], 0.0) + us
        c = _kernel_class(e["name"])
        by_class[c] = by_class.get(c, 0.0) + us
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:20]
    return {"steps": n, "wall_ms_per_step": 1e3 * wall / n, "devices": sorted(names[p] for p in device),
            "kernel_ms_per_step": busy / 1e3 / n, "kernels_per_step": kernels / n,
            "by_class_ms_per_step": {k: v / 1e3 / n for k, v in
                                     sorted(by_class.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms_per_step": [[k[:120], v / 1e3 / n] for k, v in top]}


def sample_opts(spec: str) -> dict:
    """'bfloat16:rope:unroll=5:tok=none:cast:prof' -> the sampler row's settings. dtype and
    temporal positions, then options: unroll=K MaskGIT steps per loop iteration, tok=none|causal
    (the tokenizer's temporal layout), cast (parameters stored in the compute dtype once, not
    cast in every pass), attn=cudnn|xla (jax.nn.dot_product_attention's implementation; default:
    XLA's choice), prof (a profile of 3 steps)."""
    dtype, temporal_pos, *rest = spec.split(":")
    opts = {"dtype": dtype, "temporal_pos": temporal_pos, "unroll": 1, "tok": "",
            "cast": False, "attn": None, "prof": False}
    for o in rest:
        k, _, v = o.partition("=")
        if k not in opts or k in ("dtype", "temporal_pos"):
            raise ValueError(f"sampler row {spec!r}: unknown option {k!r}")
        opts[k] = int(v) if k == "unroll" else (v if k in ("tok", "attn") else True)
    return opts


def sample_row(spec: str, steps: int, size: str, frame_flops: float = 0.0,
               peak: float = 989.0) -> dict:
    import jax
    import numpy as np
    from experiments.bench_lib import bench_config, random_world_model
    o = sample_opts(spec)
    cfg = bench_config(size, 64, o["temporal_pos"], tok_temporal=o["tok"])
    _set_models(cfg, dtype=o["dtype"], attention_impl=o["attn"])
    wm = random_world_model(cfg, steps=25, temperature=2.0, unroll=o["unroll"],
                            cast_params=o["cast"])
    prompt = np.random.default_rng(0).integers(0, 255, (1, 1, 64, 64, 3), dtype=np.uint8)
    state = wm.reset(prompt)
    t0 = time.perf_counter()
    frame, state = wm.step(state, 0)
    jax.block_until_ready(frame)
    first_s = time.perf_counter() - t0
    for a in range(wm.max_frames):  # fill the buffer: steady state slides every step
        frame, state = wm.step(state, a % 6)
    np.asarray(frame)
    times = []
    for a in range(steps):
        t = time.perf_counter()
        frame, state = wm.step(state, a % 6)
        np.asarray(frame)  # the frame on the host, as a player needs it
        times.append(time.perf_counter() - t)
    ts = np.sort(times)
    p50, p95 = float(np.percentile(ts, 50)), float(np.percentile(ts, 95))
    row = {"part": "sample", "spec": spec, **o, "maskgit_steps": wm.steps,
           "buffer": wm.max_frames, "first_step_s": first_s, "p50_ms": 1e3 * p50,
           "p95_ms": 1e3 * p95, "frames_per_s": 1.0 / p50, "traces": wm.trace_count}
    stats = jax.devices()[0].memory_stats() or {}
    row["peak_bytes"] = stats.get("peak_bytes_in_use")
    if frame_flops:
        row.update(flops_per_frame=frame_flops, tflops_per_s=frame_flops / p50 / 1e12,
                   mfu=frame_flops / p50 / (peak * 1e12))
    if o["prof"]:
        box = {"state": state}

        def one():
            f, box["state"] = wm.step(box["state"], 1)
            return np.asarray(f)
        row["profile"] = profile_calls(one, 3)
    return row


def flops_row(spec: str, size: str) -> dict:
    o = sample_opts(spec)
    return {"part": "flops", "spec": spec,
            "flops_per_frame": sampler_flops(size, o["temporal_pos"], o["tok"])}


def sampler_flops(size: str, temporal_pos: str = "rope", tok: str = "") -> float:
    """Model FLOPs of one generated frame (25 MaskGIT steps, buffer full): the step lowered with
    the MaskGIT loop unrolled, so that XLA's cost analysis counts every pass (it counts a loop
    body once), on the default device."""
    import jax
    import numpy as np
    from experiments.bench_lib import bench_config, random_world_model
    cfg = bench_config(size, 64, temporal_pos, tok_temporal=tok)
    wm = random_world_model(cfg, steps=25, temperature=2.0, unroll=25)
    state = wm.reset(np.zeros((1, 1, 64, 64, 3), np.uint8))
    state = {**state, "length": jax.numpy.asarray(wm.max_frames, jax.numpy.int32)}
    cost = jax.jit(wm._step_impl).lower(wm.params, state, jax.numpy.zeros((1,), "int32"))
    cost = cost.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return float(cost.get("flops", 0.0))


def main(_):
    if importlib.util.find_spec("grain") is None:
        sys.modules["grain"] = types.ModuleType("grain")
    import jax
    import flax
    out = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
           "jax": jax.__version__, "flax": flax.__version__, "rows": []}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}), flush=True)
    jobs = []
    if "train" in _PARTS.value:
        jobs += [(train_row, (*r.split(":"), _STEPS.value, _PEAK.value, _SIZE.value))
                 for r in _TRAIN_ROWS.value]
    if "sample" in _PARTS.value:
        jobs += [(sample_row, (r, max(_STEPS.value, 20), _SIZE.value, _FRAME_FLOPS.value,
                               _PEAK.value)) for r in _SAMPLE_ROWS.value]
    if "flops" in _PARTS.value:
        jobs += [(flops_row, (r, _SIZE.value)) for r in _SAMPLE_ROWS.value]
    for fn, args in jobs:
        try:
            row = fn(*args)
        except Exception as e:  # noqa: BLE001 - one failing row (e.g. cuDNN refusing a shape)
            row = {"part": fn.__name__, "args": list(map(str, args)),
                   "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        out["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        with open(_OUT.value + ".tmp", "w") as f:
            json.dump(out, f, indent=2)
        os.replace(_OUT.value + ".tmp", _OUT.value)


if __name__ == "__main__":
    app.run(main)
