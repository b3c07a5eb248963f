"""Ablation: dynamics with action_mode='token' (everything else as experiments/configs/dynamics.py).

Run:
  genie-jax train --config=experiments/configs/dynamics_action_token.py:size=tiny --workdir=runs/dyn_token
Takes the same knobs as dynamics.py (size, tokenizer, lam, lam_mode).
"""
import ml_collections

from experiments.configs.dynamics import get_config as _dynamics_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = _dynamics_config(arg)
    c.model.action_mode = "token"
    return c
