"""Helpers the benchmarks share (no flags here, so any benchmark can import them): random
stand-ins for frozen params and for a whole world model, and the sampler's benchmark configs."""
from __future__ import annotations


def tune_malloc():
    """genie_jax/host_malloc.py's reexec_with_tuned_malloc, loaded from this checkout's file
    without importing the genie_jax package (a --compare child imports another checkout's)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "genie_jax", "host_malloc.py")
    spec = importlib.util.spec_from_file_location("_genie_jax_host_malloc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.reexec_with_tuned_malloc()


def random_frozen(abstract):
    """Stand-ins for frozen params (random, on their shardings): nothing is read from disk."""
    import jax
    leaves, tree = jax.tree.flatten(abstract)
    keys = jax.random.split(jax.random.PRNGKey(0), max(len(leaves), 1))
    return jax.tree.unflatten(tree, [
        jax.device_put(0.02 * jax.random.normal(k, a.shape, a.dtype), a.sharding)
        for k, a in zip(keys, leaves)])


def matmul_peak(n: int, dtype="float32", reps: int = 10) -> float:
    """Median FLOP/s of an n x n f32 matmul: the same statistic as the step time."""
    import time

    import jax
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[reps // 2]


def step_flops(compiled) -> float:
    """XLA's FLOP count of a compiled step (cost_analysis is a dict, or a list of one)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


class EngineStep:
    """One stage's train step as the trainer runs it (its engine, its loader's batches, random
    frozen params), compiled once; each call runs one step on the next of two batches and returns
    (seconds, metrics). `cfg` is a stage config (experiments/configs)."""

    def __init__(self, cfg):
        import time

        import jax
        from genie_jax.data.loader import make_iterator
        from genie_jax.train.trainer import build_engine, loader_options
        self.engine = engine = build_engine(cfg)
        self.frozen = random_frozen(engine.frozen_abstract)
        it = make_iterator(engine.stage.train_source(), loader_options(cfg, seed=0))
        self.batches = [engine.global_batch(next(it)) for _ in range(2)]
        with engine.context():
            t0 = time.perf_counter()
            self.state = engine.init_fn(jax.random.PRNGKey(0))
            jax.block_until_ready(self.state)
            self.init_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.compiled = engine.step_fn.lower(self.state, self.batches[0], self.frozen).compile()
            self.compile_s = time.perf_counter() - t0
        self.flops = step_flops(self.compiled)
        self.mem = self.compiled.memory_analysis()
        self.params = int(sum(x.size for x in jax.tree.leaves(self.state["params"])))
        self.i = 0

    def __call__(self):
        import time

        import jax
        t = time.perf_counter()
        with self.engine.context():
            self.state, m = self.compiled(self.state, self.batches[self.i % 2], self.frozen)
            jax.block_until_ready(m)
        self.i += 1
        return time.perf_counter() - t, m


def time_train_step(cfg, steps: int) -> dict:
    """Times one stage's train step (EngineStep): the median of `steps` calls after one warm-up,
    with XLA's FLOP count of the compiled step and its memory analysis."""
    step = EngineStep(cfg)
    _, m = step()  # warm-up
    times = []
    for _ in range(steps):
        dt, m = step()
        times.append(dt)
    step_s = sorted(times)[len(times) // 2]
    flops, mem = step.flops, step.mem
    frames = cfg.data.batch_size * cfg.data.num_frames
    out = {
        "params": step.params, "batch": cfg.data.batch_size,
        "frames_per_clip": cfg.data.num_frames, "resolution": cfg.data.resolution,
        "width": cfg.model.width, "layers": [cfg.model.depth, cfg.model.get("decoder_depth", 0)],
        "init_s": step.init_s, "compile_s": step.compile_s, "step_s_median": step_s,
        "step_s_all": times, "steps_per_s": 1 / step_s, "frames_per_s": frames / step_s,
        "step_flops": flops, "achieved_flops_per_s": flops / step_s,
        "loss_after": float(m["loss"]),
    }
    if mem is not None:
        out["xla_memory_bytes"] = {
            k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                              "temp_size_in_bytes", "generated_code_size_in_bytes")
            if hasattr(mem, k)}
    return out


def bench_config(size: str, resolution: int, temporal_pos: str = "learned",
                 tok_temporal: str = ""):
    if size == "cpu":  # the CPU CoinRun config that `make quickstart` trains
        from experiments.configs.dynamics_coinrun import get_config
        cfg = get_config()
    elif size == "jasmine":  # Jasmine's small sampling config: 64 tokens/frame, 17-frame buffer
        from experiments.configs.dynamics import get_config
        cfg = get_config("size=tiny")
        cfg.data.num_frames = 17
        cfg.tokenizer.model.patch_size = cfg.model.patch_size = 8
        cfg.tokenizer.model.max_frames = cfg.lam.model.max_frames = cfg.model.max_frames = 17
        cfg.model.width, cfg.model.depth, cfg.model.num_heads = 128, 2, 4
    else:
        from experiments.configs.dynamics import get_config
        cfg = get_config(f"size={size}")
    cfg.data.resolution = resolution
    for m in (cfg.tokenizer.model, cfg.lam.model, cfg.model):
        m.image_size = (resolution, resolution)
    if temporal_pos != "learned":
        cfg.model.temporal_pos = temporal_pos
    if tok_temporal:  # causal | none (models/tokenizer.py); '' keeps the config's
        cfg.tokenizer.model.temporal = tok_temporal
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
