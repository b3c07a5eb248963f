"""Latent action model on CoinRun episodes (64x64) from an ArrayRecord dataset directory.

Run:
  genie-jax train --config=experiments/configs/lam_coinrun.py:dir=data/coinrun --workdir=runs/lam_coinrun
Knobs:
  dir     dataset directory
  budget  smoke: seconds (tests); quick: the `make quickstart` stage (~2.5 CPU minutes);
          default: ~4 minutes; quality: ~7 minutes, the LAM stage of the CoinRun quality run
          (train steps: base.COINRUN_BUDGET)
  input   pixels | tokens: the encoder reads the codes of the CoinRun tokenizer run named by
          the `tokenizer` knob (default runs/tok_coinrun), Genie's LAM-input ablation
  tok_temporal  that tokenizer run's `temporal` knob (causal | none)
Loss: `loss.change_weight` 60 (the default) weights each pixel's error by how much it changed
between the two frames: codes closer to the game's controls, which the LAM's own decoder gains
from (experiments/RESULTS.md, "A LAM loss weighted by what changed" and "400 episodes");
`--config.loss.change_weight=0` is the plain MSE of the quickstart before 2026-11-28.
The model is the tiny LAM (width 128, 2+2 layers, 6 codes) with patch 8 (base.LAM["cpu"]): an
8x8 patch grid is enough to see what moved, and keeps the pixel decoder cheap.
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, dir="data/coinrun", budget="default", input="pixels",
                           tokenizer="runs/tok_coinrun", tok_temporal="")
    c = base.get_base("tiny")
    c.stage = "lam"
    base.use_coinrun_data(c, knobs.dir)
    c.data.batch_size = 16
    c.model = base.video_vq_model(base.LAM["cpu"], image_size=base.square_of(c.data, "resolution"))
    # the tokenizer a token-input LAM reads (unused by a pixel LAM)
    c.tokenizer = ml_collections.ConfigDict(dict(
        workdir=knobs.tokenizer,
        model=base.tokenizer_model(base.TOKENIZER["cpu"],
                                   image_size=c.model.get_oneway_ref("image_size"),
                                   temporal=knobs.tok_temporal)))
    base.set_lam_input(c.model, c.tokenizer.model, knobs.input)
    c.loss = ml_collections.ConfigDict(dict(
        vq_weight=1.0, change_weight=60.0,
        restart_dead_after=base.SCHEDULE["tiny"]["restart_dead_after"]))
    base.set_budget(c, "lam", knobs.budget)
    return c
