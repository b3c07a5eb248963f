"""ST-ViViT VQ-VAE video tokenizer.

Run:
  genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/tok
Sizes (rows of the tables in base.py):
  tiny     32x32 procedural video, patch 2, width 128, 2+2 layers: ~10 CPU minutes to >30 dB
  test     16x16, width 32, one layer each side: for tests only
  cpu      the tiny model on 64x64 frames with patch 4 (tokenizer_coinrun.py's model)
  coinrun  64x64, patch 4, width 512, 8+8 layers, 1024 codes of dim 32 (Genie's CoinRun study)
  200m, 1b, 11b   for TPU pods: ~200M parameters (Genie's tokenizer size), 128x128 frames,
           patch 4, width 1024, 6+6 layers, 1024 codes, 16 frames, batch 128 / 64 / 512
model.image_size follows data.resolution: --config.data.resolution=64 trains on 64x64 frames.
Knobs: size; temporal (causal: ST-ViViT, causal temporal attention | none: every frame coded
alone, a spatial ViT VQ-VAE: a still scene keeps its tokens; models/tokenizer.py).
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, size="tiny", temporal="")
    c = base.get_base(knobs.size, "tokenizer")
    c.stage = "tokenizer"
    c.model = base.tokenizer_model(base.TOKENIZER[knobs.size],
                                   image_size=base.square_of(c.data, "resolution"),
                                   temporal=knobs.temporal)
    c.loss = ml_collections.ConfigDict(dict(
        vq_weight=1.0, restart_dead_after=base.SCHEDULE[knobs.size]["restart_dead_after"]))
    return c
