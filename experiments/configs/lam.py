"""Latent action model (LAM): one discrete action (of 6 by default) per frame transition.

Run:
  genie-jax train --config=experiments/configs/lam.py:size=tiny --workdir=runs/lam
Sizes (same video-model fields, data and schedule as the tokenizer config of that size):
  tiny     32x32 procedural video, patch 4, width 128, 2+2 layers: a CPU run in minutes
  test     16x16, width 32, one layer each side: for tests only
  coinrun  64x64, patch 4 (as Genie's CoinRun study: 6 latent actions), width 512, 8+8 layers
"""
import ml_collections

from experiments.configs import tokenizer
from experiments.configs.base import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, size="tiny")
    size = knobs["size"]
    c = tokenizer.get_config(f"size={size}")
    c.stage = "lam"
    c.model.num_codes = 6
    if size == "tiny":
        c.model.patch_size = 4  # the LAM needs what changed, not pixel detail
        c.data.batch_size = 16
        c.train.steps = 3000
    elif size == "coinrun":
        c.data.batch_size = 36
    return c
