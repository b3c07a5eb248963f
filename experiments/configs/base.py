"""Sections shared by every stage's config. Stage configs import `get_base()` and override."""
import ml_collections

from genie_jax.sharding import DEFAULT_RULES


def get_base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = ""
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "procedural"   # 'procedural' (built in) or 'arrayrecord' (a dataset dir)
    c.data.dir = ""                # for 'arrayrecord'
    c.data.eval_split = "val"
    c.data.seed = 0
    c.data.resolution = 32
    c.data.num_frames = 8
    c.data.batch_size = 16         # global, over all hosts and devices
    c.data.train_episodes = 512    # procedural only
    c.data.eval_episodes = 32      # procedural only
    c.data.episode_length = 64     # procedural only
    c.data.num_sprites = 2         # procedural only
    c.data.worker_count = 0
    c.data.read_threads = 1
    c.data.prefetch = 2

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3
    c.optim.schedule = "cosine"    # 'cosine' | 'wsd' | 'constant'
    c.optim.warmup_steps = 200
    c.optim.end_lr_frac = 0.1
    c.optim.decay_frac = 0.2       # wsd: fraction of steps spent decaying
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.clip_norm = 1.0
    c.optim.codebook_lr_mult = 1.0 # step-size multiplier for VQ codebooks

    c.train = ml_collections.ConfigDict()
    c.train.steps = 2000
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 4
    c.train.max_minutes = 0.0      # > 0: save and stop after this much wall time

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)      # (data, fsdp, tensor); -1 takes the remaining devices

    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = [list(r) for r in DEFAULT_RULES]
    return c


def parse_arg(arg: str | None, **defaults) -> dict:
    """'size=tiny,foo=1' -> dict, with defaults; unknown knobs are an error naming them."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config knob {key!r} in ':{arg}' (known: {sorted(defaults)})")
        out[key] = value
    return out
