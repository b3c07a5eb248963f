"""Tokenizer stage: reconstruct frame windows through the VQ bottleneck."""
from __future__ import annotations

import jax.numpy as jnp

from genie_jax.metrics import psnr, ssim
from genie_jax.models.layers import to_unit_float
from genie_jax.models.tokenizer import Tokenizer
from genie_jax.stages.video_vq import VideoVQStage, build_model, frame_grid, training_model


def build_tokenizer(model_cfg) -> Tokenizer:
    return build_model(Tokenizer, model_cfg)


class TokenizerStage(VideoVQStage):
    name = "tokenizer"

    def __init__(self, config):
        super().__init__(config)
        self.model = training_model(build_tokenizer(config.model), config)

    def loss(self, params, frozen, model_state, batch, rng):
        (recon, _, aux), new_state = self.apply_train(params, model_state, batch["frames"], rng)
        target = to_unit_float(batch["frames"])
        mse = jnp.mean(jnp.square(recon - target))
        loss = mse + self.config.loss.vq_weight * aux["vq_loss"]
        metrics = {
            "mse": mse,
            "psnr": jnp.mean(psnr(jnp.clip(recon, 0, 1), target)),
            "vq_loss": aux["vq_loss"],
            "perplexity": aux["perplexity"],
            "batch_code_usage": aux["batch_usage"],
        }
        return loss, (metrics, new_state)

    def _reconstruct(self, params, model_state, frames):
        recon, tokens, aux = self.model.apply({"params": params, **model_state}, frames, train=False)
        return jnp.clip(recon, 0, 1), tokens, aux

    def eval_step(self, params, frozen, model_state, batch):
        recon, _, aux = self._reconstruct(params, model_state, batch["frames"])
        target = to_unit_float(batch["frames"])
        n = recon.shape[0] * recon.shape[1]
        return {
            "psnr": jnp.sum(psnr(recon, target)),
            "ssim": jnp.sum(ssim(recon, target)),
            "count": jnp.asarray(n, jnp.float32),
            "code_counts": aux["counts"],  # summed over batches -> codebook usage
        }

    def visualize(self, params, frozen, model_state, batch):
        frames = batch["frames"][:4]
        recon, _, _ = self._reconstruct(params, model_state, frames)
        return {"reconstructions": frame_grid(to_unit_float(frames), recon)}
