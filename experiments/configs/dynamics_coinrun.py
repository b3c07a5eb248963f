"""MaskGIT dynamics on CoinRun, on the frozen CoinRun tokenizer and LAM (CPU size).

Run (after tokenizer_coinrun.py and lam_coinrun.py with the same dir and budget):
  genie-jax train --config=experiments/configs/dynamics_coinrun.py:dir=data/coinrun,tokenizer=runs/tok_coinrun,lam=runs/lam_coinrun \
      --workdir=runs/dyn_coinrun
Knobs: dir, budget (as the tokenizer and LAM configs: smoke, seconds; quick, ~12 CPU minutes,
the `make quickstart` stage; default, ~20; quality, ~40, the dynamics stage of the quality run),
tokenizer and lam (run folders), lam_mode (frozen|cotrain). The shapes are the CPU-size ones of
tokenizer_coinrun.py and lam_coinrun.py (a mismatching run is refused by its checkpoint meta).
Frames are 4-frame windows, as the tokenizer was trained on: its temporal position embeddings
past frame 4 are untrained, so longer windows would encode to off-distribution tokens.
"""
import ml_collections

from experiments.configs import dynamics, lam_coinrun, tokenizer_coinrun
from experiments.configs.base import parse_arg

CPU_STEPS = {"smoke": 8, "quick": 700, "default": 1200, "quality": 2400}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, dir="data/coinrun", budget="default", tokenizer="runs/tok_coinrun",
                      lam="runs/lam_coinrun", lam_mode="frozen")
    if knobs["budget"] not in CPU_STEPS:
        raise ValueError(f"unknown budget {knobs['budget']!r} ({', '.join(CPU_STEPS)})")
    shared = f"dir={knobs['dir']},budget={knobs['budget']}"
    tok = tokenizer_coinrun.get_config(shared)
    lam = lam_coinrun.get_config(shared)
    c = dynamics.get_config(f"size=tiny,tokenizer={knobs['tokenizer']},lam={knobs['lam']},"
                            f"lam_mode={knobs['lam_mode']}")
    c.data = tok.data
    c.data.batch_size = 8
    c.tokenizer.model = tok.model
    c.lam.model = lam.model
    c.model.update(image_size=tuple(tok.model.image_size), patch_size=tok.model.patch_size,
                   num_codes=tok.model.num_codes, num_actions=lam.model.num_codes)
    c.sampling.max_frames = c.data.num_frames
    c.train.steps = CPU_STEPS[knobs["budget"]]
    c.train.log_every = 50
    c.train.eval_every = c.checkpoint.every = c.train.steps // 4
    return c
