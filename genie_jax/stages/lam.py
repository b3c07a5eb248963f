"""Latent action model stage: predict frame t+1 from frames <= t and a quantised latent action."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.metrics import psnr
from genie_jax.models.lam import LatentActionModel, lam_loss
from genie_jax.models.tokenizer import to_unit_float
from genie_jax.models.vq import restart_dead_codes
from genie_jax.stages.base import Stage


def build_lam(model_cfg) -> LatentActionModel:
    kw = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    kw["image_size"] = tuple(kw["image_size"])
    return LatentActionModel(**kw)


def next_frame_grid(real_BTHWC: jax.Array, pred_BTHWC: jax.Array) -> jax.Array:
    """uint8 image: per clip a row of real frames 1..T-1 over a row of their predictions."""
    B, T, H, W, C = real_BTHWC.shape
    pairs = jnp.stack([real_BTHWC, pred_BTHWC], axis=1).reshape(B * 2, T, H, W, C)
    grid = pairs.transpose(0, 2, 1, 3, 4).reshape(B * 2 * H, T * W, C)
    return (jnp.clip(grid, 0, 1) * 255).round().astype(jnp.uint8)


class LamStage(Stage):
    name = "lam"

    def __init__(self, config):
        super().__init__(config)
        self.model = build_lam(config.model)

    def batch_spec(self, batch_size: int):
        H, W = self.config.model.image_size
        shape = (batch_size, self.config.data.num_frames, H, W, self.config.model.channels)
        return {"frames": jax.ShapeDtypeStruct(shape, np.uint8)}

    def init(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        return self.model.init({"params": r1, "vq": r2, "dropout": r2}, batch["frames"], train=True)

    def loss(self, params, model_state, batch, rng):
        r_vq, r_drop = jax.random.split(rng)
        (pred, _, aux), new_state = self.model.apply(
            {"params": params, **model_state}, batch["frames"], train=True,
            rngs={"vq": r_vq, "dropout": r_drop}, mutable=["vq_stats"])
        loss, metrics = lam_loss(pred, batch["frames"], aux, self.config.loss.vq_weight)
        target = to_unit_float(batch["frames"][:, 1:])
        metrics["psnr"] = jnp.mean(psnr(jnp.clip(pred, 0, 1), target))
        return loss, (metrics, dict(new_state))

    def after_update(self, params, model_state):
        params, vq_stats, restarted = restart_dead_codes(
            params, model_state.get("vq_stats", {}), self.config.loss.restart_dead_after)
        return params, {**model_state, "vq_stats": vq_stats}, {"codes_restarted": restarted}

    def eval_step(self, params, model_state, batch):
        pred, _, aux = self.model.apply({"params": params, **model_state}, batch["frames"])
        target = to_unit_float(batch["frames"][:, 1:])
        n = pred.shape[0] * pred.shape[1]
        return {
            "psnr": jnp.sum(psnr(jnp.clip(pred, 0, 1), target)),
            "count": jnp.asarray(n, jnp.float32),
            "action_counts": aux["counts"],  # -> action_usage, action_perplexity
        }

    def visualize(self, params, model_state, batch):
        frames = batch["frames"][:4]
        pred, _, _ = self.model.apply({"params": params, **model_state}, frames)
        return {"next_frame_predictions": next_frame_grid(to_unit_float(frames[:, 1:]), pred)}
