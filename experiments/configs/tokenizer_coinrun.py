"""Tokenizer on CoinRun episodes from an ArrayRecord dataset directory.

Run:
  genie-jax data coinrun --out=data/coinrun --episodes=120 --length=300
  genie-jax train --config=experiments/configs/tokenizer_coinrun.py:dir=data/coinrun \
      --workdir=runs/tok_coinrun
Knobs: dir (dataset directory), size (cpu: the tiny model on 64x64 frames with patch 4, i.e. a
16x16 token grid; coinrun: Genie's CoinRun tokenizer).
"""
import ml_collections

from experiments.configs import tokenizer
from experiments.configs.base import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, size="cpu", dir="data/coinrun")
    if knobs["size"] == "cpu":
        c = tokenizer.get_config("size=tiny")
        c.model.patch_size = 4
        c.train.steps = 3200  # ~20 CPU minutes
        c.train.eval_every = 800
        c.checkpoint.every = 800
    elif knobs["size"] == "coinrun":
        c = tokenizer.get_config("size=coinrun")
    else:
        raise ValueError(f"unknown size {knobs['size']!r} (cpu, coinrun)")
    c.data.source = "arrayrecord"
    c.data.dir = knobs["dir"]
    c.data.resolution = 64
    c.model.image_size = (64, 64)
    return c
