"""Latent action model stage: predict frame t+1 from frames <= t and a quantised latent action.

A token-input LAM (model.input='tokens') reads the codes of a frozen tokenizer, named like the
dynamics stage's: config section `tokenizer` (workdir: a finished tokenizer run; model: its shape
config, checked against the checkpoint), loaded as params only and passed as `frozen`.
"""
from __future__ import annotations

import jax.numpy as jnp

from genie_jax.metrics import psnr
from genie_jax.models.lam import LatentActionModel, lam_loss
from genie_jax.models.layers import to_unit_float
from genie_jax.errors import UserError
from genie_jax.stages.base import FrozenInput
from genie_jax.stages.tokenizer import build_tokenizer
from genie_jax.stages.video_vq import (VideoVQStage, build_model, check_lam_tokens, encode_tokens,
                                       frame_grid, frozen_run, training_model)


def build_lam(model_cfg) -> LatentActionModel:
    return build_model(LatentActionModel, model_cfg)


class LamStage(VideoVQStage):
    name = "lam"

    def __init__(self, config):
        super().__init__(config)
        self.model = training_model(build_lam(config.model), config)
        self.tokenizer = None
        if config.model.get("input", "pixels") == "tokens":
            if "tokenizer" not in config:
                raise UserError("lam model.input='tokens' needs a `tokenizer` config section "
                                "(workdir: a finished tokenizer run, model: its shape config)")
            bad = check_lam_tokens(config.model, config.tokenizer.model, "model",
                                   "tokenizer.model")
            if bad:
                raise UserError("inconsistent token-input LAM config: " + "; ".join(bad))
            self.tokenizer = build_tokenizer(config.tokenizer.model)

    def frozen_inputs(self) -> dict[str, FrozenInput]:
        """A token-input LAM's tokenizer (params only); nothing for a pixel LAM."""
        if self.tokenizer is None:
            return {}
        tok = self.config.tokenizer
        return {"tokenizer": frozen_run("tokenizer", tok, self.tokenizer, tok.model)}

    def _tokens(self, frozen, frames):
        if self.tokenizer is None:
            return None
        return encode_tokens(self.tokenizer, frozen["tokenizer"], frames)

    def apply_train(self, params, model_state, frames, rng, tokens=None):
        return super().apply_train(params, model_state, frames, rng, tokens_BTN=tokens)

    def loss(self, params, frozen, model_state, batch, rng):
        (pred, _, aux), new_state = self.apply_train(params, model_state, batch["frames"], rng,
                                                     self._tokens(frozen, batch["frames"]))
        loss, metrics = lam_loss(pred, batch["frames"], aux, self.config.loss.vq_weight,
                                 self.config.loss.get("change_weight", 0.0))
        target = to_unit_float(batch["frames"][:, 1:])
        metrics["psnr"] = jnp.mean(psnr(jnp.clip(pred, 0, 1), target))
        return loss, (metrics, new_state)

    def eval_step(self, params, frozen, model_state, batch):
        pred, _, aux = self.model.apply({"params": params, **model_state}, batch["frames"],
                                        tokens_BTN=self._tokens(frozen, batch["frames"]))
        target = to_unit_float(batch["frames"][:, 1:])
        n = pred.shape[0] * pred.shape[1]
        return {
            "psnr": jnp.sum(psnr(jnp.clip(pred, 0, 1), target)),
            "count": jnp.asarray(n, jnp.float32),
            "action_counts": aux["counts"],  # -> action_usage, action_perplexity
        }

    def visualize(self, params, frozen, model_state, batch):
        frames = batch["frames"][:4]
        pred, _, _ = self.model.apply({"params": params, **model_state}, frames,
                                      tokens_BTN=self._tokens(frozen, frames))
        return {"next_frame_predictions": frame_grid(to_unit_float(frames[:, 1:]), pred)}
