"""Interactive sampling benchmark: generated frames/s of one `WorldModel.step` (MaskGIT over one
frame's tokens, then tokenizer decode), its compile time, and a check that later steps (including
the ones that slide the fixed-size token buffer) do not recompile.

  python experiments/bench_sampling.py --out=bench_results/bench_sampling.json \
      [--sizes=jasmine,cpu,coinrun] [--resolution=64] [--maskgit_steps=25] [--steps=20] \
      [--batch=1] [--compare=/work/main]

`--compare=DIR` times the genie_jax package of another checkout (e.g. an untouched copy of an
older commit) beside this one, each (code, size) pair in its own subprocess, alternating, so
before and after come from the same run on the same machine. Each row reports p50/p95 step
latency, compile time, the process's peak RSS, and its RSS after the first and last timed step
(constant memory: run with --steps=1000).

Sizes are the dynamics configs (experiments/configs/dynamics.py) with their tokenizer and LAM;
`cpu` is the CoinRun CPU config (`*_coinrun.py`: 256 tokens, 4-frame buffer, 4 dynamics layers of
width 128); `jasmine` is Jasmine's small sampling config (64x64 with patch 8: 64 tokens/frame,
dynamics width 128 with 2 layers, a 17-frame buffer; the tiny tokenizer at patch 8).
`--resolution` (default 64, Genie's CoinRun frames) overrides the image size of all three, so
`tiny` here is the tiny model at 64x64 (tokenizer patch 2: 1024 tokens per frame) and `coinrun`
the CoinRun-sized one (patch 4: 256 tokens per frame, 12 dynamics layers of width 512).
`--tok_temporal=causal,none` times both tokenizer kinds (models/tokenizer.py); the cpu config's
own is per-frame since 2026-11-27, so a --compare against older code is like for like only with
--tok_temporal=causal.
Parameters are randomly initialised: no trained run is needed, and speed does not depend on
their values. Each timed step is fetched to the host (an interactive player needs the pixels).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

_OUT = flags.DEFINE_string("out", "bench_results/bench_sampling.json", "where to write the JSON")
_SIZES = flags.DEFINE_list("sizes", ["jasmine", "cpu", "coinrun"],
                           "sizes to time: jasmine, cpu, or a dynamics config size (tiny, coinrun)")
_RES = flags.DEFINE_integer("resolution", 64, "frame size (square) for every model")
_MASKGIT = flags.DEFINE_list("maskgit_steps", ["25"], "MaskGIT steps per generated frame (one "
                             "row per value)")
_TEMP = flags.DEFINE_float("temperature", 2.0, "sampling temperature")
_STEPS = flags.DEFINE_integer("steps", 20, "timed WorldModel.step calls after the buffer is full")
_BATCH = flags.DEFINE_integer("batch", 1, "environments stepped at once")
_PROMPT = flags.DEFINE_integer("prompt_frames", 1, "prompt frames")
_SEED = flags.DEFINE_integer("seed", 0, "init and sampling seed")
_KV = flags.DEFINE_list("kv_cache", ["true"], "true: temporal KV cache (default); false: the "
                        "whole buffer per MaskGIT step; both: time each")
_CODE = flags.DEFINE_string("code", HERE, "checkout whose genie_jax package is timed")
_COMPARE = flags.DEFINE_list("compare", [], "other checkouts to time beside --code, each row in "
                             "its own subprocess (e.g. an untouched copy of the old code)")
_POS = flags.DEFINE_list("temporal_pos", ["learned"], "dynamics temporal positions to time with "
                         "--code (one row each): learned (absolute; the old code's only kind) "
                         "and/or rope (rotary: the sampler keeps a rolling KV cache)")
_TOK = flags.DEFINE_list("tok_temporal", [""], "tokenizers to time with --code (one row each): "
                         "causal (ST-ViViT; the old code's only kind) and/or none (every frame "
                         "coded alone: the step decodes the new frame only); default: the "
                         "config's (cpu: none since 2026-11-27, the others causal)")
_WM_KW = flags.DEFINE_list("wm_kw", [], "extra WorldModel options for --code only, k=v "
                           "(v parsed as JSON, else a string)")


from experiments.bench_lib import bench_config, random_world_model  # noqa: E402,F401


class CompileCounter:
    """Counts XLA backend compiles (jax.monitoring events) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        import jax
        self.count, self.active = 0, False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kw):
        if self.active and event == self.EVENT:
            self.count += 1


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB (Linux /proc)."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line[:5]] = int(line.split()[1]) / 1024
    return vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan"))


def parse_kw(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def fit_to_timed_code(cfg) -> list[str]:
    """Drop the model options that the timed checkout's modules do not have (e.g.
    `scan_layers`, added after the code a --compare row times), so that the configs of this
    checkout build the older models; -> the dropped `key=value`s, printed and kept in the row.
    Such a row is only a like-for-like "before" when every dropped value is the setting that the
    older code always had (e.g. scan_layers=False, temporal_pos='learned')."""
    import dataclasses
    from genie_jax.models.dynamics import Dynamics
    from genie_jax.models.lam import LatentActionModel
    from genie_jax.models.tokenizer import Tokenizer
    dropped = []
    for name, section, module in (("model", cfg.model, Dynamics),
                                  ("tokenizer.model", cfg.tokenizer.model, Tokenizer),
                                  ("lam.model", cfg.lam.model, LatentActionModel)):
        known = {f.name for f in dataclasses.fields(module)}
        for key in [k for k in section.keys() if k not in known]:
            dropped.append(f"{name}.{key}={section[key]!r}")
            del section[key]
    return dropped


def bench_size(size: str, counter: CompileCounter, kv_cache: bool, maskgit_steps: int,
               wm_kw: dict, temporal_pos: str = "learned", tok_temporal: str = "") -> dict:
    import jax
    import numpy as np
    cfg = bench_config(size, _RES.value, temporal_pos, tok_temporal)
    dropped = fit_to_timed_code(cfg)
    if dropped:
        print(f"options the timed code ({_CODE.value}) does not have, dropped: {dropped}",
              flush=True)
    t0 = time.perf_counter()
    wm = random_world_model(cfg, _SEED.value, steps=maskgit_steps, temperature=_TEMP.value,
                            kv_cache=kv_cache, **wm_kw)
    jax.block_until_ready(wm.params)
    init_s = time.perf_counter() - t0
    B, K = _BATCH.value, _PROMPT.value
    H, W = cfg.tokenizer.model.image_size
    rng = np.random.default_rng(_SEED.value)
    prompt = rng.integers(0, 256, (B, K, H, W, cfg.tokenizer.model.channels), dtype=np.uint8)
    t0 = time.perf_counter()
    state = wm.reset(prompt, np.zeros((B, K - 1), np.int32), seed=_SEED.value)
    jax.block_until_ready(state)
    reset_s = time.perf_counter() - t0
    A = wm.dynamics.num_actions
    counter.count, counter.active = 0, True
    t0 = time.perf_counter()
    frame, state = wm.step(state, np.zeros((B,), np.int32))  # numpy: no eager jnp op compiles
    np.asarray(frame)
    first_s = time.perf_counter() - t0
    compiles_first = counter.count  # > 0 shows the compile listener works
    traces_after_first = wm.trace_count
    counter.count = 0
    warm = []
    for i in range(max(wm.max_frames - K, 1)):  # fill the buffer: steady state slides each step
        t0 = time.perf_counter()
        frame, state = wm.step(state, np.full((B,), (i + 1) % A, np.int32))
        np.asarray(frame)
        warm.append(time.perf_counter() - t0)
    rss_start = rss_mib()[0]
    times, rss_trace = [], []
    every = max(_STEPS.value // 10, 1)
    for i in range(_STEPS.value):
        t0 = time.perf_counter()
        frame, state = wm.step(state, np.full((B,), (i + 1) % A, np.int32))
        np.asarray(frame)
        times.append(time.perf_counter() - t0)
        if (i + 1) % every == 0:
            rss_trace.append(round(rss_mib()[0], 1))
    rss_end, rss_peak = rss_mib()
    counter.active = False
    p50, p95 = (float(np.percentile(times, q)) for q in (50, 95))
    n_dyn = sum(x.size for x in jax.tree.leaves(wm.params["dynamics"]))
    n_tok = sum(x.size for x in jax.tree.leaves(wm.params["tokenizer"]))
    return {
        "size": size, "code": _CODE.value, "options_dropped_for_the_code": dropped,
        "wm_kw": wm_kw, "kv_cache": kv_cache,
        "temporal_pos": temporal_pos,
        "tok_temporal": str(cfg.tokenizer.model.get("temporal", "causal")),
        "rolling_cache": bool(getattr(wm, "rolling", False)),
        "resolution": _RES.value, "batch": B, "prompt_frames": K,
        "maskgit_steps": wm.steps, "temperature": wm.temperature,
        "tokens_per_frame": wm.N, "buffer_frames": wm.max_frames,
        "dynamics": {"width": cfg.model.width, "depth": cfg.model.depth, "params": int(n_dyn)},
        "tokenizer": {"width": cfg.tokenizer.model.width,
                      "layers": [cfg.tokenizer.model.depth, cfg.tokenizer.model.decoder_depth],
                      "patch_size": cfg.tokenizer.model.patch_size, "params": int(n_tok)},
        "init_s": init_s, "reset_s_incl_compile": reset_s,
        "first_step_s": first_s, "compile_s_estimate": first_s - p50,
        "warmup_step_s_median": float(np.median(warm)),
        "timed_steps": len(times), "step_s_p50": p50, "step_s_p95": p95,
        "step_s_min": float(min(times)), "step_s_max": float(max(times)),
        "frames_per_s": B / p50,
        "rss_mib_first_timed_step": rss_start, "rss_mib_last_timed_step": rss_end,
        "peak_rss_mib": rss_peak, "rss_mib_every_tenth_of_the_timed_steps": rss_trace,
        "traces": wm.trace_count, "traces_after_first_step": traces_after_first,
        "backend_compiles_first_step": compiles_first,
        "backend_compiles_during_timed_steps": counter.count,
        "recompiled_after_first_step": bool(wm.trace_count > traces_after_first
                                            or counter.count > 0),
    }


def describe(r: dict) -> str:
    code = os.path.basename(os.path.normpath(r["code"]))
    kw = ",".join([f"{k}={v}" for k, v in r["wm_kw"].items()]
                  + (["rope+rolling cache" if r.get("rolling_cache") else "rope"]
                     if r.get("temporal_pos", "learned") != "learned" else [])
                  + (["per-frame tokenizer"] if r.get("tok_temporal") == "none" else []))
    return (f"[{r['size']} @{code}{' ' + kw if kw else ''}, kv_cache={r['kv_cache']}] "
            f"{r['tokens_per_frame']} tokens/frame, buffer {r['buffer_frames']}, "
            f"{r['maskgit_steps']} MaskGIT steps, batch {r['batch']}: step p50 "
            f"{r['step_s_p50'] * 1e3:.1f} ms p95 {r['step_s_p95'] * 1e3:.1f} ms -> "
            f"{r['frames_per_s']:.2f} frames/s; compile ~{r['compile_s_estimate']:.1f} s; "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, RSS first/last timed step "
            f"{r['rss_mib_first_timed_step']:.0f}/{r['rss_mib_last_timed_step']:.0f} MiB; "
            f"recompiled later: {r['recompiled_after_first_step']} "
            f"(traces {r['traces']}, XLA compiles in first/later steps "
            f"{r['backend_compiles_first_step']}/{r['backend_compiles_during_timed_steps']})")


def run_compare(argv_rest: list[str]) -> list[dict]:
    """Each (size, MaskGIT steps, checkout) row in a fresh subprocess, checkouts alternating."""
    rows = []
    roots = [_CODE.value, *_COMPARE.value]
    for size in _SIZES.value:
        for st in _MASKGIT.value:
            for root in roots:
                with tempfile.TemporaryDirectory() as tmp:
                    out = os.path.join(tmp, "row.json")
                    cmd = [sys.executable, os.path.abspath(__file__), f"--code={root}",
                           f"--sizes={size}", f"--maskgit_steps={st}", f"--out={out}",
                           *argv_rest]
                    if root != _CODE.value:  # the old code may not know the new options
                        cmd = [c for c in cmd if not c.startswith(("--wm_kw", "--temporal_pos"))]
                    subprocess.run(cmd, check=True)
                    with open(out) as f:
                        rows.extend(json.load(f)["runs"])
    return rows


def main(argv):
    from experiments.bench_lib import tune_malloc
    tune_malloc()  # the allocator genie-jax itself runs with
    if _STEPS.value < 1:
        raise app.UsageError("--steps must be >= 1")
    kv_modes = {"true": [True], "false": [False], "both": [True, False]}
    bad = [k for k in _KV.value if k.lower() not in kv_modes]
    if bad:
        raise app.UsageError(f"--kv_cache takes {sorted(kv_modes)}; got {bad}")
    if _COMPARE.value:
        passthrough = [a for a in sys.argv[1:] if not a.startswith(
            ("--compare", "--code", "--sizes", "--maskgit_steps", "--out"))]
        rows = run_compare(passthrough)
        results = {"runs": rows}
        print("\nsummary (same run, same machine):")
        for r in rows:
            print(describe(r))
    else:
        sys.path.insert(0, os.path.abspath(_CODE.value))
        import jax
        import genie_jax
        print(f"devices: {jax.devices()}; genie_jax from {os.path.dirname(genie_jax.__file__)}",
              flush=True)
        counter = CompileCounter()
        results = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "runs": []}
        modes = [m for k in _KV.value for m in kv_modes[k.lower()]]
        for size in _SIZES.value:
            for st in _MASKGIT.value:
                for kv in modes:
                    for pos in _POS.value:
                        for tt in _TOK.value:
                            r = bench_size(size, counter, kv, int(st), parse_kw(_WM_KW.value),
                                           pos, tt)
                            results["runs"].append(r)
                            print(describe(r), flush=True)
    sys.path.insert(0, HERE)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
