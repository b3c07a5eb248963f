"""Latent action model on CoinRun episodes (64x64) from an ArrayRecord dataset directory.

Run:
  genie-jax train --config=experiments/configs/lam_coinrun.py:dir=data/coinrun --workdir=runs/lam_coinrun
Knobs:
  dir     dataset directory
  budget  smoke: seconds (tests); quick: the `make quickstart` stage (~2.5 CPU minutes);
          default: ~4 minutes; quality: ~7 minutes, the LAM stage of the CoinRun quality run
The model is the tiny LAM (width 128, 2+2 layers, 6 codes) with patch 8: an 8x8 patch grid is
enough to see what moved, and keeps the pixel decoder cheap.
"""
import ml_collections

from experiments.configs import lam
from experiments.configs.base import parse_arg

CPU_STEPS = {"smoke": 8, "quick": 500, "default": 1000, "quality": 1500}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, dir="data/coinrun", budget="default")
    if knobs["budget"] not in CPU_STEPS:
        raise ValueError(f"unknown budget {knobs['budget']!r} ({', '.join(CPU_STEPS)})")
    c = lam.get_config("size=tiny")
    c.data.source = "arrayrecord"
    c.data.dir = knobs["dir"]
    c.data.resolution = 64
    c.model.image_size = (64, 64)
    c.model.patch_size = 8
    c.train.steps = CPU_STEPS[knobs["budget"]]
    c.train.log_every = 50
    c.train.eval_every = c.checkpoint.every = c.train.steps // 2
    return c
