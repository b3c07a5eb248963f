"""AdamW with warmup then cosine or WSD (warmup-stable-decay), plus global-norm clipping."""
from __future__ import annotations

import optax

from genie_jax.errors import UserError


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    end = cfg.lr * cfg.end_lr_frac
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end)
    if cfg.schedule == "wsd":
        decay = max(1, int((total_steps - warmup) * cfg.decay_frac))
        stable = max(0, total_steps - warmup - decay)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, warmup),
             optax.constant_schedule(cfg.lr),
             optax.linear_schedule(cfg.lr, end, decay)],
            [warmup, warmup + stable])
    if cfg.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup),
                                     optax.constant_schedule(cfg.lr)], [warmup])
    raise UserError(f"optim.schedule must be 'cosine', 'wsd' or 'constant', got {cfg.schedule!r}")


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(cfg, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=1e-8, weight_decay=cfg.weight_decay,
                    mask=_decay_mask),
    )
    mult = cfg.get("codebook_lr_mult", 1.0)
    if mult != 1.0:
        # Adam moves each parameter by about lr per step, which is slow for unit-norm code
        # vectors; a larger step for codebooks only lets the quantiser keep up with the encoder.
        tx = optax.chain(tx, optax.masked(optax.scale(mult), _codebook_mask))
    return tx, schedule


def _codebook_mask(params):
    from flax import traverse_util
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] == "codebook" for k in flat})


def _decay_mask(params):
    # Decay weight matrices only: not biases, norms, positional tables or codebooks.
    from flax import traverse_util
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1].endswith("kernel") for k in flat})
