"""Latent action model (LAM): one discrete action (of 6 by default) per frame transition.

Run:
  genie-jax train --config=experiments/configs/lam.py:size=tiny --workdir=runs/lam
Sizes (the tokenizer's video model, data and schedule of that size, with 6 codes and patch 4;
base.py), and a bigger batch:
  tiny     32x32 procedural video, patch 4, width 128, 2+2 layers: a CPU run in minutes
  test     16x16, width 32, one layer each side: for tests only
  cpu      the tiny model on 64x64 frames with patch 8 (lam_coinrun.py's model)
  coinrun  64x64, patch 4 (as Genie's CoinRun study: 6 latent actions), width 512, 8+8 layers
  200m, 1b, 11b   for TPU pods: 128x128 frames, patch 16, 8 latent actions (as Genie), width
           1024, 6+6 layers (~200M) at 200m and 9+9 (~300M, Genie's LAM size) at 1b and 11b
model.image_size follows data.resolution.
Knobs: size; input (pixels | tokens: the encoder reads the codes of a finished tokenizer run of
the same size, Genie's LAM-input ablation) and tokenizer (that run's folder, default runs/tok;
also --config.model.input=tokens and --config.tokenizer.workdir=DIR); tok_temporal (that
run's `temporal` knob, tokenizer.py).
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, size="tiny", input="pixels", tokenizer="runs/tok",
                           tok_temporal="")
    c = base.get_base(knobs.size, "lam")
    c.stage = "lam"
    c.model = base.video_vq_model(base.LAM[knobs.size],
                                  image_size=base.square_of(c.data, "resolution"))
    # the tokenizer a token-input LAM reads (unused by a pixel LAM)
    c.tokenizer = ml_collections.ConfigDict(dict(
        workdir=knobs.tokenizer,
        model=base.tokenizer_model(base.TOKENIZER[knobs.size],
                                   image_size=c.model.get_oneway_ref("image_size"),
                                   temporal=knobs.tok_temporal)))
    base.set_lam_input(c.model, c.tokenizer.model, knobs.input)
    c.loss = ml_collections.ConfigDict(dict(
        vq_weight=1.0, restart_dead_after=base.SCHEDULE[knobs.size]["restart_dead_after"]))
    if knobs.size == "tiny":
        c.train.steps = 3000
    return c
