"""Helpers the benchmarks share (no flags here, so any benchmark can import them): random
stand-ins for frozen params and for a whole world model, and the sampler's benchmark configs."""
from __future__ import annotations


def random_frozen(abstract):
    """Stand-ins for frozen params (random, on their shardings): nothing is read from disk."""
    import jax
    leaves, tree = jax.tree.flatten(abstract)
    keys = jax.random.split(jax.random.PRNGKey(0), max(len(leaves), 1))
    return jax.tree.unflatten(tree, [
        jax.device_put(0.02 * jax.random.normal(k, a.shape, a.dtype), a.sharding)
        for k, a in zip(keys, leaves)])


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
