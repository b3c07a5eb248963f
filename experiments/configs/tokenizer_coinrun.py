"""Tokenizer on CoinRun episodes from an ArrayRecord dataset directory.

Run:
  genie-jax data coinrun --out=data/coinrun --episodes=120 --length=300
  genie-jax train --config=experiments/configs/tokenizer_coinrun.py:dir=data/coinrun \
      --workdir=runs/tok_coinrun
Knobs:
  dir     dataset directory
  size    cpu: the tiny model on 64x64 frames with patch 4, i.e. a 16x16 token grid, every
          frame coded alone (and so trained on single frames, 16 a step), error-weighted code
          restarts and 10x codebook steps;
          coinrun: Genie's CoinRun tokenizer (ST-ViViT)
  budget  (size=cpu) smoke: seconds (tests); quick: ~10 CPU minutes, the `make quickstart`
          stage; default: ~18 minutes; quality: ~45 minutes, the first stage of the CoinRun
          quality run (train steps: base.COINRUN_BUDGET)
  temporal  causal (ST-ViViT, causal temporal attention) | none (every frame coded alone,
          models/tokenizer.py); default: the size's (cpu: none, coinrun: causal). The stages
          that read the run say the same with their `tok_temporal` knob
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, size="cpu", dir="data/coinrun", budget="default", temporal="")
    size = base.pick(("cpu", "coinrun"), "size", knobs.size)
    base.pick(base.BUDGETS, "budget", knobs.budget)
    schedule_size = "tiny" if size == "cpu" else "coinrun"
    c = base.get_base(schedule_size)
    c.stage = "tokenizer"
    base.use_coinrun_data(c, knobs.dir)
    c.model = base.tokenizer_model(base.TOKENIZER[size],
                                   image_size=base.square_of(c.data, "resolution"),
                                   temporal=knobs.temporal)
    c.loss = ml_collections.ConfigDict(dict(
        vq_weight=1.0, restart_dead_after=base.SCHEDULE[schedule_size]["restart_dead_after"]))
    if size == "cpu":
        base.set_budget(c, "tokenizer", knobs.budget)
        # 10x codebook steps: held-out PSNR no longer stalls between a quarter and half of the
        # quick run (experiments/RESULTS.md, "Tried for the tokenizer target")
        c.optim.codebook_lr_mult = 10.0
    if c.model.temporal == "none":
        # Every frame is coded alone, so nothing needs a window: each step sees single frames
        # drawn independently (16, as 4 windows x 4 frames did), the same compute. Four frames
        # of one window show one level and nearly one view; 16 frames show up to 16. On the
        # quickstart data, 1500 steps of single frames beat 2000 of windows by 0.37 dB held-out
        # and 1250 steps match them (-0.05 dB), so the quick budget is 1250 steps
        # (experiments/RESULTS.md, "A tokenizer trained on single frames").
        c.data.batch_size, c.data.num_frames = c.data.batch_size * c.data.num_frames, 1
    return c
