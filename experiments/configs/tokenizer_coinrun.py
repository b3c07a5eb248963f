"""Tokenizer on CoinRun episodes from an ArrayRecord dataset directory.

Run:
  genie-jax data coinrun --out=data/coinrun --episodes=120 --length=300
  genie-jax train --config=experiments/configs/tokenizer_coinrun.py:dir=data/coinrun \
      --workdir=runs/tok_coinrun
Knobs:
  dir     dataset directory
  size    cpu: the tiny model on 64x64 frames with patch 4, i.e. a 16x16 token grid;
          coinrun: Genie's CoinRun tokenizer
  budget  (size=cpu) smoke: seconds (tests); quick: ~8 CPU minutes, the `make quickstart`
          stage; default: ~20 minutes; quality: ~55 minutes, the first stage of the CoinRun
          quality run
"""
import ml_collections

from experiments.configs import tokenizer
from experiments.configs.base import parse_arg

# Steps per budget at ~2.4 steps/s on 2 CPU cores; eval/checkpoint every quarter.
CPU_STEPS = {"smoke": 8, "quick": 1200, "default": 3200, "quality": 8000}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, size="cpu", dir="data/coinrun", budget="default")
    if knobs["size"] == "cpu":
        c = tokenizer.get_config("size=tiny")
        c.model.patch_size = 4
        if knobs["budget"] not in CPU_STEPS:
            raise ValueError(f"unknown budget {knobs['budget']!r} ({', '.join(CPU_STEPS)})")
        c.train.steps = CPU_STEPS[knobs["budget"]]
        c.train.eval_every = c.checkpoint.every = c.train.steps // 4
    elif knobs["size"] == "coinrun":
        c = tokenizer.get_config("size=coinrun")
    else:
        raise ValueError(f"unknown size {knobs['size']!r} (cpu, coinrun)")
    c.data.source = "arrayrecord"
    c.data.dir = knobs["dir"]
    c.data.resolution = 64
    c.model.image_size = (64, 64)
    return c
