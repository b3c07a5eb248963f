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
                    mask=lambda params: _decay_mask(params)),
    )
    return tx, schedule


def _decay_mask(params):
    # Decay matrices only: not biases, norms, embeddings tables of positions, or codebooks.
    import jax
    from flax import traverse_util
    flat = traverse_util.flatten_dict(params)
    keep = {k: (k[-1] == "kernel") for k in flat}
    return traverse_util.unflatten_dict(keep) if isinstance(params, dict) else jax.tree.map(lambda _: True, params)
