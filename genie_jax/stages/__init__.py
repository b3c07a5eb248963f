"""Stages plug a model, its loss and its evaluation into the one trainer (genie_jax.train.trainer).

A stage is looked up by `config.stage`; see `get_stage`.
"""
from __future__ import annotations

from genie_jax.errors import UserError


def get_stage(config):
    name = config.stage
    if name == "tokenizer":
        from genie_jax.stages.tokenizer import TokenizerStage
        return TokenizerStage(config)
    if name == "lam":
        from genie_jax.stages.lam import LamStage
        return LamStage(config)
    if name == "dynamics":
        from genie_jax.stages.dynamics import DynamicsStage
        return DynamicsStage(config)
    raise UserError(f"config.stage {name!r} is not a known stage "
                    f"(known: 'tokenizer', 'lam', 'dynamics')")
