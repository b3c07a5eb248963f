"""Latent action model stage: predict frame t+1 from frames <= t and a quantised latent action."""
from __future__ import annotations

import jax.numpy as jnp

from genie_jax.metrics import psnr
from genie_jax.models.lam import LatentActionModel, lam_loss
from genie_jax.models.layers import to_unit_float
from genie_jax.stages.video_vq import VideoVQStage, build_model, frame_grid


def build_lam(model_cfg) -> LatentActionModel:
    return build_model(LatentActionModel, model_cfg)


class LamStage(VideoVQStage):
    name = "lam"

    def __init__(self, config):
        super().__init__(config)
        self.model = build_lam(config.model)

    def loss(self, params, frozen, model_state, batch, rng):
        (pred, _, aux), new_state = self.apply_train(params, model_state, batch["frames"], rng)
        loss, metrics = lam_loss(pred, batch["frames"], aux, self.config.loss.vq_weight)
        target = to_unit_float(batch["frames"][:, 1:])
        metrics["psnr"] = jnp.mean(psnr(jnp.clip(pred, 0, 1), target))
        return loss, (metrics, new_state)

    def eval_step(self, params, frozen, model_state, batch):
        pred, _, aux = self.model.apply({"params": params, **model_state}, batch["frames"])
        target = to_unit_float(batch["frames"][:, 1:])
        n = pred.shape[0] * pred.shape[1]
        return {
            "psnr": jnp.sum(psnr(jnp.clip(pred, 0, 1), target)),
            "count": jnp.asarray(n, jnp.float32),
            "action_counts": aux["counts"],  # -> action_usage, action_perplexity
        }

    def visualize(self, params, frozen, model_state, batch):
        frames = batch["frames"][:4]
        pred, _, _ = self.model.apply({"params": params, **model_state}, frames)
        return {"next_frame_predictions": frame_grid(to_unit_float(frames[:, 1:]), pred)}
