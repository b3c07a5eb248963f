"""Dynamics training frames/s from frames (the frozen tokenizer and LAM run in every step) and
from a token cache (`genie-jax data tokenize`: the step reads tokens and latent actions).

  python experiments/bench_token_cache.py --out=bench_results/token_cache.json \
      [--sizes=cpu,coinrun] [--steps=5] [--batch=N --dtype=bfloat16] \
      [--data=DATASET --runs=RUNS --cache=CACHE --train_steps=60 --log_every=15 --repeats=2]

Step (nothing on disk; frozen params random, as experiments/bench.py): the jitted train step
alone, fed a frames batch or a cached batch, the two variants' steps alternating. Sizes: `cpu`
is the CoinRun CPU config (experiments/configs/dynamics_coinrun.py: 64x64, 4-frame windows,
batch 8); `coinrun` is the CoinRun size (experiments/configs/dynamics.py:size=coinrun at
bench.py's batch 2 x 16 frames; --batch and --dtype change both, e.g. 36 and bfloat16 on a GPU).
Training (with --data, --runs, --cache): the CPU config trained by the one trainer on a real
dataset and its finished tokenizer and LAM runs (RUNS/tok, RUNS/lam; read only), once from frames
and from the cache, alternating (--repeats runs of --train_steps steps each), no evaluation;
frames/s is the median of the trainer's logged rates after each run's first log interval (so
compilation is left out). Also the loader's time per
batch both ways, and how many cached tokens / latent actions differ from the frozen models'
encoding of the same windows by a separately jitted call at the training batch size.
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import types

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench_results/token_cache.json", "where to write the JSON")
_SIZES = flags.DEFINE_list("sizes", ["cpu", "coinrun"], "step timings: cpu and/or coinrun")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per variant (after one warm-up step)")
_DATA = flags.DEFINE_string("data", "", "dataset of the training comparison (CPU config)")
_RUNS = flags.DEFINE_string("runs", "", "folder with the finished tok/ and lam/ runs")
_CACHE = flags.DEFINE_string("cache", "", "token cache of --data made with those runs")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 60, "train steps per training variant")
_LOG_EVERY = flags.DEFINE_integer("log_every", 15, "log interval of the training variants")
_BATCH = flags.DEFINE_integer("batch", 0, "step timings: batch size (0: 8 for cpu, 2 for coinrun)")
_DTYPE = flags.DEFINE_string("dtype", "", "step timings: compute dtype of every model (e.g. "
                             "bfloat16 on a GPU; default: the config's)")
_REPEATS = flags.DEFINE_integer("repeats", 2, "training runs per variant, alternating")
_COMPARE_BATCHES = flags.DEFINE_integer("compare_batches", 8, "batches for the mismatch rate")

from experiments.bench_lib import random_frozen  # noqa: E402


def step_config(size: str, cached: bool):
    if size == "cpu":
        from experiments.configs.dynamics_coinrun import get_config
        cfg = get_config()
    else:
        from experiments.configs.dynamics import get_config
        cfg = get_config(f"size={size}")
        cfg.data.batch_size, cfg.data.num_frames = 2, 16  # as experiments/bench.py
    if _BATCH.value:
        cfg.data.batch_size = _BATCH.value
    if _DTYPE.value:
        for m in (cfg.model, cfg.tokenizer.model, cfg.lam.model):
            m.dtype = _DTYPE.value
    # The engine reads nothing from disk: the cache folder only fixes the batch's form.
    cfg.data.token_cache = "(synthetic batches)" if cached else ""
    return cfg


def synthetic_batch(engine, seed: int) -> dict:
    """A host batch of the engine's training form with valid values (codes, actions)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    m = engine.stage.model
    highs = {"frames": 256, "tokens": m.num_codes, "latent_actions": m.num_actions,
             "actions": m.num_actions}
    spec = engine.stage.batch_spec(engine.config.data.batch_size)
    return {k: rng.integers(0, highs[k], s.shape).astype(s.dtype) for k, s in spec.items()}


def time_pair(size: str, steps: int) -> list[dict]:
    """Both variants compiled, then their timed steps alternate (frames, cache, frames, ...), so
    that load from other processes on a shared machine falls on both alike."""
    import jax
    from genie_jax.train.trainer import build_engine
    runs = []
    for cached in (False, True):
        cfg = step_config(size, cached)
        engine = build_engine(cfg)
        frozen = random_frozen(engine.frozen_abstract)
        batches = [engine.global_batch(synthetic_batch(engine, i)) for i in range(2)]
        with engine.context():
            state = engine.init_fn(jax.random.PRNGKey(0))
            t0 = time.perf_counter()
            compiled = engine.step_fn.lower(state, batches[0], frozen).compile()
            compile_s = time.perf_counter() - t0
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            state, m = compiled(state, batches[0], frozen)  # warm-up
            jax.block_until_ready(m)
        runs.append(dict(cfg=cfg, engine=engine, frozen=frozen, batches=batches, state=state,
                         compiled=compiled, times=[], out={
                             "size": size, "cached": cached, "batch": cfg.data.batch_size,
                             "frames_per_clip": cfg.data.num_frames,
                             "batch_keys": sorted(batches[0]), "compile_s": compile_s,
                             "step_flops": float(cost.get("flops", 0.0))}))
    for i in range(steps):
        for r in runs:
            with r["engine"].context():
                t = time.perf_counter()
                r["state"], m = r["compiled"](r["state"], r["batches"][i % 2], r["frozen"])
                jax.block_until_ready(m)
                r["times"].append(time.perf_counter() - t)
    out = []
    for r in runs:
        step_s = statistics.median(r["times"])
        frames = r["cfg"].data.batch_size * r["cfg"].data.num_frames
        out.append({**r["out"], "step_s_median": step_s, "step_s_all": r["times"],
                    "frames_per_s": frames / step_s})
    return out


def cpu_training_config(cache: str, steps: int, log_every: int):
    from experiments.configs.dynamics_coinrun import get_config
    runs = _RUNS.value
    cfg = get_config(f"dir={_DATA.value},tokenizer={runs}/tok,lam={runs}/lam,budget=quick")
    cfg.data.token_cache = cache
    cfg.train.update(steps=steps, log_every=log_every, eval_batches=0)
    cfg.checkpoint.update(every=0, async_save=False)
    return cfg


def train_rate(cache: str) -> dict:
    from genie_jax.train.trainer import train
    with tempfile.TemporaryDirectory(prefix="bench_token_cache_") as wd:
        t0 = time.perf_counter()
        summary = train(cpu_training_config(cache, _TRAIN_STEPS.value, _LOG_EVERY.value), wd)
        wall = time.perf_counter() - t0
        with open(os.path.join(wd, "metrics.jsonl")) as f:
            recs = [r for r in map(json.loads, f) if r["split"] == "train"]
    rates = [r["frames_per_s"] for r in recs[1:]]  # the first interval holds the compile
    return {"cached": bool(cache), "steps": summary["step"], "wall_s": wall,
            "frames_per_s_median": statistics.median(rates), "frames_per_s_logged": rates,
            "losses": [r["loss"] for r in recs]}


def loader_and_mismatch(cache: str) -> dict:
    """Loader seconds per batch from frames and from the cache (same seed: same windows), and
    the fraction of cached tokens / latent actions that a fresh encoding of those windows gives
    otherwise."""
    import jax
    import numpy as np
    from genie_jax.data.loader import make_iterator
    from genie_jax.stages import get_stage
    from genie_jax.stages.base import load_frozen
    from genie_jax.stages.dynamics import encode_tokens, lam_actions
    from genie_jax.train.trainer import loader_options

    out = {}
    batches = {}
    for name, c in (("frames", ""), ("cache", cache)):
        cfg = cpu_training_config(c, 1, 1)
        stage = get_stage(cfg)
        it = make_iterator(stage.train_source(), loader_options(cfg, seed=cfg.data.seed))
        got, times = [], []
        for _ in range(max(_COMPARE_BATCHES.value, 32)):  # the first includes opening files
            t = time.perf_counter()
            got.append(next(it))
            times.append(time.perf_counter() - t)
        batches[name] = got[:_COMPARE_BATCHES.value]
        out[f"loader_s_per_batch_{name}"] = statistics.median(times[1:])
    cfg = cpu_training_config("", 1, 1)
    stage = get_stage(cfg)
    inputs = stage.frozen_inputs()
    frozen = load_frozen(inputs, {k: fi.abstract() for k, fi in inputs.items()})
    enc = jax.jit(lambda p, f: (encode_tokens(stage.tokenizer, p["tokenizer"], f),
                                lam_actions(stage.lam, p["lam"], f)))
    tok_diff = act_diff = tok_n = act_n = 0
    for fb, cb in zip(batches["frames"], batches["cache"]):
        assert np.array_equal(fb["actions"], cb["actions"]), "not the same windows"
        tokens, acts = jax.device_get(enc(frozen, fb["frames"]))
        tok_diff += int((tokens != cb["tokens"]).sum())
        tok_n += tokens.size
        act_diff += int((acts != cb["latent_actions"]).sum())
        act_n += acts.size
    out.update(compared_windows=sum(len(b["actions"]) for b in batches["frames"]),
               token_mismatch_rate=tok_diff / tok_n, tokens_compared=tok_n,
               latent_action_mismatch_rate=act_diff / act_n, latent_actions_compared=act_n)
    return out


def main(_):
    if importlib.util.find_spec("grain") is None:  # a device image without grain: the step
        sys.modules["grain"] = types.ModuleType("grain")  # timings need no loader
    import jax
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # orbax's INFO lines
    results = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
               "cores": len(os.sched_getaffinity(0)), "jax": jax.__version__,
               "step": [], "training": []}
    for size in _SIZES.value:
        pair = time_pair(size, _STEPS.value)
        results["step"] += pair
        print(f"[step {size}] frames: {pair[0]['step_s_median'] * 1e3:.0f} ms, "
              f"{pair[0]['frames_per_s']:.1f} frames/s; cache: "
              f"{pair[1]['step_s_median'] * 1e3:.0f} ms, {pair[1]['frames_per_s']:.1f} frames/s "
              f"(x{pair[1]['frames_per_s'] / pair[0]['frames_per_s']:.2f})", flush=True)
    if _DATA.value and _RUNS.value and _CACHE.value:
        results["loader"] = loader_and_mismatch(_CACHE.value)
        print("[loader cpu] " + "  ".join(f"{k} {v:.4g}" for k, v in results["loader"].items()),
              flush=True)
        # frames, cache, frames, cache: load from other processes falls on both alike
        runs = [train_rate(c) for c in ("", _CACHE.value) * _REPEATS.value]
        results["training"] = runs
        rate = {c: statistics.median([x for r in runs if r["cached"] == c
                                      for x in r["frames_per_s_logged"]]) for c in (False, True)}
        results["training_frames_per_s"] = {"frames": rate[False], "cache": rate[True],
                                            "speedup": rate[True] / rate[False]}
        print(f"[training cpu, {_TRAIN_STEPS.value} steps x {_REPEATS.value} each] frames: "
              f"{rate[False]:.1f} frames/s; cache: {rate[True]:.1f} frames/s "
              f"(x{rate[True] / rate[False]:.2f}); logged losses {runs[0]['losses']} (frames) vs "
              f"{runs[1]['losses']} (cache)", flush=True)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
