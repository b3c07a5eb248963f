"""Interactive sampling benchmark: generated frames/s of one `WorldModel.step` (MaskGIT over one
frame's tokens, then tokenizer decode), its compile time, and a check that later steps (including
the ones that slide the fixed-size token buffer) do not recompile.

  python experiments/bench_sampling.py --out=bench_results/bench_sampling.json \
      [--sizes=tiny,coinrun] [--resolution=64] [--maskgit_steps=25] [--steps=20] [--batch=1]

Sizes are the dynamics configs (experiments/configs/dynamics.py) with their tokenizer and LAM;
`--resolution` (default 64, Genie's CoinRun frames) overrides the image size of all three, so
`tiny` here is the tiny model at 64x64 (tokenizer patch 2: 1024 tokens per frame) and `coinrun`
the CoinRun-sized one (patch 4: 256 tokens per frame, 12 dynamics layers of width 512).
Parameters are randomly initialised: no trained run is needed, and speed does not depend on
their values. Each timed step is fetched to the host (an interactive player needs the pixels).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench_results/bench_sampling.json", "where to write the JSON")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "coinrun"], "dynamics config sizes to time")
_RES = flags.DEFINE_integer("resolution", 64, "frame size (square) for every model")
_MASKGIT = flags.DEFINE_integer("maskgit_steps", 25, "MaskGIT steps per generated frame")
_TEMP = flags.DEFINE_float("temperature", 2.0, "sampling temperature")
_STEPS = flags.DEFINE_integer("steps", 20, "timed WorldModel.step calls (after the first)")
_BATCH = flags.DEFINE_integer("batch", 1, "environments stepped at once")
_PROMPT = flags.DEFINE_integer("prompt_frames", 1, "prompt frames")
_SEED = flags.DEFINE_integer("seed", 0, "init and sampling seed")
_KV = flags.DEFINE_list("kv_cache", ["true"], "true: temporal KV cache (default); false: the "
                        "whole buffer per MaskGIT step; both: time each")


def bench_config(size: str, resolution: int):
    if size == "cpu":  # the CPU CoinRun config that `make quickstart` trains
        from experiments.configs.dynamics_coinrun import get_config
        cfg = get_config()
    else:
        from experiments.configs.dynamics import get_config
        cfg = get_config(f"size={size}")
    cfg.data.resolution = resolution
    for m in (cfg.tokenizer.model, cfg.lam.model, cfg.model):
        m.image_size = (resolution, resolution)
    return cfg


def random_world_model(cfg, seed: int = 0, **kw):
    """A WorldModel with randomly initialised dynamics and tokenizer params (no LAM: prompts of
    one frame need no inferred actions)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from genie_jax.sampling import WorldModel
    from genie_jax.stages.dynamics import DynamicsStage
    stage = DynamicsStage(cfg)
    H, W = cfg.tokenizer.model.image_size
    frames = jnp.zeros((1, 2, H, W, cfg.tokenizer.model.channels), jnp.uint8)
    r_dyn, r_tok = jax.random.split(jax.random.PRNGKey(seed))
    tokens = jnp.zeros((1, 2, stage.model.tokens_per_frame), jnp.int32)
    acts = jnp.zeros((1, 1), jnp.int32)
    dyn = jax.jit(lambda r: nn.unbox(stage.model.init({"params": r}, tokens, acts)["params"]))(r_dyn)
    tok = jax.jit(lambda r: nn.unbox(stage.tokenizer.init(
        {"params": r, "vq": r, "dropout": r}, frames)["params"]))(r_tok)
    return WorldModel(cfg, {"dynamics": dyn, "tokenizer": tok}, **kw)


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


def bench_size(size: str, counter: CompileCounter, kv_cache: bool) -> dict:
    import jax
    import numpy as np
    cfg = bench_config(size, _RES.value)
    t0 = time.perf_counter()
    wm = random_world_model(cfg, _SEED.value, steps=_MASKGIT.value, temperature=_TEMP.value,
                            kv_cache=kv_cache)
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
    times = []
    for i in range(_STEPS.value):  # more steps than the buffer holds: exercises the slide
        t0 = time.perf_counter()
        frame, state = wm.step(state, np.full((B,), (i + 1) % A, np.int32))
        np.asarray(frame)
        times.append(time.perf_counter() - t0)
    counter.active = False
    step_s = float(np.median(times)) if times else float("nan")
    n_dyn = sum(x.size for x in jax.tree.leaves(wm.params["dynamics"]))
    n_tok = sum(x.size for x in jax.tree.leaves(wm.params["tokenizer"]))
    return {
        "size": size, "kv_cache": kv_cache, "resolution": _RES.value, "batch": B, "prompt_frames": K,
        "maskgit_steps": wm.steps, "temperature": wm.temperature,
        "tokens_per_frame": wm.N, "buffer_frames": wm.max_frames,
        "dynamics": {"width": cfg.model.width, "depth": cfg.model.depth, "params": int(n_dyn)},
        "tokenizer": {"width": cfg.tokenizer.model.width,
                      "layers": [cfg.tokenizer.model.depth, cfg.tokenizer.model.decoder_depth],
                      "patch_size": cfg.tokenizer.model.patch_size, "params": int(n_tok)},
        "init_s": init_s, "reset_s_incl_compile": reset_s,
        "first_step_s": first_s,
        "compile_s_estimate": first_s - (step_s if times else 0.0),
        "timed_steps": len(times), "step_s_median": step_s,
        "step_s_min": float(min(times)) if times else None,
        "frames_per_s": B / step_s if times else None,
        "traces": wm.trace_count, "traces_after_first_step": traces_after_first,
        "backend_compiles_first_step": compiles_first,
        "backend_compiles_during_timed_steps": counter.count,
        "recompiled_after_first_step": bool(wm.trace_count > traces_after_first
                                            or counter.count > 0),
    }


def main(_):
    import jax
    if _STEPS.value < 1:
        raise app.UsageError("--steps must be >= 1")
    print(f"devices: {jax.devices()}", flush=True)
    counter = CompileCounter()
    results = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "runs": []}
    kv_modes = {"true": [True], "false": [False], "both": [True, False]}
    bad = [k for k in _KV.value if k.lower() not in kv_modes]
    if bad:
        raise app.UsageError(f"--kv_cache takes {sorted(kv_modes)}; got {bad}")
    modes = [m for k in _KV.value for m in kv_modes[k.lower()]]
    for size in _SIZES.value:
        for kv in modes:
            r = bench_size(size, counter, kv)
            results["runs"].append(r)
            print(f"[{size}, kv_cache={kv}] {r['resolution']}x{r['resolution']}, "
                  f"{r['tokens_per_frame']} tokens/frame, "
                  f"{r['maskgit_steps']} MaskGIT steps, batch {r['batch']}: "
                  f"step {r['step_s_median'] * 1e3:.1f} ms median -> {r['frames_per_s']:.2f} frames/s; "
                  f"first step {r['first_step_s']:.1f} s (compile ~{r['compile_s_estimate']:.1f} s); "
                  f"recompiled later: {r['recompiled_after_first_step']} "
                  f"(traces {r['traces']}, XLA compiles in first/later steps "
                  f"{r['backend_compiles_first_step']}/"
                  f"{r['backend_compiles_during_timed_steps']}); dynamics params "
                  f"{r['dynamics']['params'] / 1e6:.1f}M", flush=True)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
