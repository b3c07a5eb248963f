"""Tokenizer stage: reconstruct frame windows through the VQ bottleneck."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.metrics import psnr, ssim
from genie_jax.models.tokenizer import Tokenizer, to_unit_float
from genie_jax.models.vq import restart_dead_codes
from genie_jax.stages.base import Stage


def build_tokenizer(model_cfg) -> Tokenizer:
    kw = model_cfg.to_dict()
    kw["image_size"] = tuple(kw["image_size"])
    return Tokenizer(**kw)


class TokenizerStage(Stage):
    name = "tokenizer"

    def __init__(self, config):
        super().__init__(config)
        self.model = build_tokenizer(config.model)

    def batch_spec(self, batch_size: int):
        H, W = self.config.model.image_size
        shape = (batch_size, self.config.data.num_frames, H, W, self.config.model.channels)
        return {"frames": jax.ShapeDtypeStruct(shape, np.uint8)}

    def init(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        return self.model.init({"params": r1, "vq": r2, "dropout": r2}, batch["frames"], train=True)

    def loss(self, params, model_state, batch, rng):
        r_vq, r_drop = jax.random.split(rng)
        (recon, _, aux), new_state = self.model.apply(
            {"params": params, **model_state}, batch["frames"], train=True,
            rngs={"vq": r_vq, "dropout": r_drop}, mutable=["vq_stats"])
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
        return loss, (metrics, dict(new_state))

    def after_update(self, params, model_state):
        params, vq_stats, restarted = restart_dead_codes(
            params, model_state.get("vq_stats", {}), self.config.loss.restart_dead_after)
        return params, {**model_state, "vq_stats": vq_stats}, {"codes_restarted": restarted}

    def _reconstruct(self, params, model_state, frames):
        recon, tokens, aux = self.model.apply({"params": params, **model_state}, frames, train=False)
        return jnp.clip(recon, 0, 1), tokens, aux

    def eval_step(self, params, model_state, batch):
        recon, _, aux = self._reconstruct(params, model_state, batch["frames"])
        target = to_unit_float(batch["frames"])
        n = recon.shape[0] * recon.shape[1]
        return {
            "psnr": jnp.sum(psnr(recon, target)),
            "ssim": jnp.sum(ssim(recon, target)),
            "count": jnp.asarray(n, jnp.float32),
            "code_counts": aux["counts"],  # summed over batches -> codebook usage
        }

    def visualize(self, params, model_state, batch):
        frames = batch["frames"][:4]
        recon, _, _ = self._reconstruct(params, model_state, frames)
        real = to_unit_float(frames)
        # Rows: (real, reconstruction) per clip; columns: frames.
        B, T, H, W, C = real.shape
        pairs = jnp.stack([real, recon], axis=1).reshape(B * 2, T, H, W, C)
        grid = pairs.transpose(0, 2, 1, 3, 4).reshape(B * 2 * H, T * W, C)
        return {"reconstructions": (grid * 255).round().astype(jnp.uint8)}
