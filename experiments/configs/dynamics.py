"""MaskGIT dynamics on a frozen tokenizer, conditioned on latent actions (frozen or co-trained LAM).

Run (after the tokenizer, and for lam_mode=frozen the LAM, of the same size):
  genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/tok
  genie-jax train --config=experiments/configs/lam.py:size=tiny --workdir=runs/lam
  genie-jax train --config=experiments/configs/dynamics.py:size=tiny --workdir=runs/dyn
  genie-jax train --config=experiments/configs/dynamics.py:size=tiny,lam_mode=cotrain \
      --workdir=runs/dyn_cotrain
Knobs: size (test|tiny|coinrun), tokenizer (tokenizer run folder, default runs/tok),
  lam (LAM run folder, default runs/lam; unused when co-training), lam_mode (frozen|cotrain).
The tokenizer and LAM shape sections are taken from their own configs of the same size; override
with --config.tokenizer.model.X / --config.lam.model.X if those runs used other values.
"""
import ml_collections

from experiments.configs import lam as lam_cfg
from experiments.configs import tokenizer as tok_cfg
from experiments.configs.base import get_base, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = parse_arg(arg, size="tiny", tokenizer="runs/tok", lam="runs/lam", lam_mode="frozen")
    size = knobs["size"]
    if size not in ("tiny", "test", "coinrun"):
        raise ValueError(f"unknown size {size!r} (tiny, test, coinrun)")
    tok, lam = tok_cfg.get_config(f"size={size}"), lam_cfg.get_config(f"size={size}")
    c = get_base()
    c.stage = "dynamics"
    c.data = tok.data  # same frames as the tokenizer saw
    c.tokenizer = ml_collections.ConfigDict(dict(workdir=knobs["tokenizer"], model=tok.model))
    c.lam = ml_collections.ConfigDict(dict(mode=knobs["lam_mode"], workdir=knobs["lam"],
                                           model=lam.model))
    c.model = ml_collections.ConfigDict(dict(
        num_codes=tok.model.num_codes, num_actions=lam.model.num_codes,
        image_size=tuple(tok.model.image_size), patch_size=tok.model.patch_size,
        width=128, depth=4, num_heads=4, mlp_ratio=4.0, dropout=0.0, max_frames=16,
        action_mode="token", dtype="float32", param_dtype="float32", remat=False,
        attention_impl=ml_collections.FieldReference(None, field_type=str)))
    c.loss = ml_collections.ConfigDict(dict(mask_min=0.5, mask_max=1.0, lam_weight=1.0,
                                            lam_vq_weight=1.0, restart_dead_after=100))
    c.sampling = ml_collections.ConfigDict(dict(steps=8, temperature=1.0, schedule="cosine",
                                                max_frames=c.data.num_frames))
    c.train = tok.train
    c.checkpoint = tok.checkpoint
    c.optim = tok.optim
    if size == "test":
        c.model.update(width=32, depth=1, num_heads=2, max_frames=8)
        c.loss.restart_dead_after = 4
        c.sampling.steps = 4
    elif size == "coinrun":  # Genie's CoinRun study: 12 dynamics layers, batch 36
        c.data.batch_size = 36
        c.model.update(width=512, depth=12, num_heads=8)
        c.sampling.update(steps=25, temperature=2.0)
    return c
