"""ST-ViViT VQ-VAE video tokenizer.

Run:
  genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/tok
Sizes:
  tiny     32x32 procedural video, patch 2, width 128, 2+2 layers: ~10 CPU minutes to >30 dB
  test     16x16, width 32, one layer each side: for tests only
  coinrun  64x64, patch 4, width 512, 8+8 layers, 1024 codes of dim 32 (Genie's CoinRun study)
"""
import ml_collections

from experiments.configs.base import get_base, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, size="tiny")
    c = get_base()
    c.stage = "tokenizer"
    c.model = ml_collections.ConfigDict(dict(
        image_size=(32, 32), channels=3, patch_size=4, width=128, depth=2, decoder_depth=2,
        num_heads=4, mlp_ratio=4.0, dropout=0.0, num_codes=1024, code_dim=32, commitment=0.25,
        max_frames=16, dtype="float32", param_dtype="float32", remat=False,
        attention_impl=ml_collections.FieldReference(None, field_type=str)))
    c.loss = ml_collections.ConfigDict(dict(vq_weight=1.0, restart_dead_after=100))
    size = knobs["size"]
    if size == "tiny":
        # A 16x16 token grid per frame, as Genie's CoinRun setup (64x64, patch 4), at half the
        # resolution. Patch 4 here (8x8 tokens) plateaus near 26 dB: too few bits per sprite edge.
        c.data.resolution = 32
        c.data.num_frames = 4
        c.data.batch_size = 4
        c.model.patch_size = 2
        c.train.steps = 1500  # 30.4 dB held-out in 561 s of training on 2 CPU cores
        c.train.log_every = 100
        c.train.eval_every = 500
        c.checkpoint.every = 500
    elif size == "test":  # seconds-long runs for the test suite
        c.data.resolution = 16
        c.data.num_frames = 4
        c.data.batch_size = 8
        c.data.train_episodes = 16
        c.data.eval_episodes = 4
        c.data.episode_length = 16
        c.model.update(width=32, depth=1, decoder_depth=1, num_heads=2, num_codes=64,
                       code_dim=8, max_frames=8)
        c.loss.restart_dead_after = 4
        c.optim.warmup_steps = 2
        c.train.steps = 12
        c.train.log_every = 2
        c.train.eval_every = 6
        c.train.eval_batches = 1
        c.checkpoint.every = 4
    elif size == "coinrun":
        c.data.resolution = 64
        c.data.num_frames = 16
        c.data.batch_size = 48
        c.model.update(image_size=(64, 64), width=512, depth=8, decoder_depth=8, num_heads=8)
        c.optim.lr = 3e-4
        c.train.steps = 100_000
        c.train.eval_every = 2000
        c.checkpoint.every = 2000
    else:
        raise ValueError(f"unknown size {size!r} (tiny, coinrun)")
    c.model.image_size = (c.data.resolution, c.data.resolution)
    return c
