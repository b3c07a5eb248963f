"""What the tokenizer and LAM stages share: a model that takes frame clips through a VQ."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.errors import UserError
from genie_jax.models.st_transformer import remat_policy
from genie_jax.models.vq import restart_dead_codes_in_state
from genie_jax.stages.base import Stage


def build_model(cls, model_cfg):
    """`cls(**model_cfg)`, with the config's list-valued image_size made a tuple and its remat
    a policy name (a bool from an older config or run folder maps to full/none)."""
    kw = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    kw["image_size"] = tuple(kw["image_size"])
    if "remat" in kw:
        try:
            kw["remat"] = remat_policy(kw["remat"])
        except ValueError as e:
            raise UserError(str(e)) from None
    return cls(**kw)


def frame_grid(real_BTHWC: jax.Array, pred_BTHWC: jax.Array) -> jax.Array:
    """uint8 image: per clip a row of real frames over a row of model frames."""
    B, T, H, W, C = real_BTHWC.shape
    pairs = jnp.stack([real_BTHWC, pred_BTHWC], axis=1).reshape(B * 2, T, H, W, C)
    grid = pairs.transpose(0, 2, 1, 3, 4).reshape(B * 2 * H, T * W, C)
    return (jnp.clip(grid, 0, 1) * 255).round().astype(jnp.uint8)


class VideoVQStage(Stage):
    """A stage whose `self.model(frames, train)` returns (frames, codes, vq aux)."""

    def batch_spec(self, batch_size: int):
        H, W = self.config.model.image_size
        shape = (batch_size, self.config.data.num_frames, H, W, self.config.model.channels)
        return {"frames": jax.ShapeDtypeStruct(shape, np.uint8)}

    def init(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        return self.model.init({"params": r1, "vq": r2, "dropout": r2}, batch["frames"], train=True)

    def apply_train(self, params, model_state, frames, rng):
        """-> ((frames, codes, aux), new model_state), with the VQ statistics updated."""
        r_vq, r_drop = jax.random.split(rng)
        out, new_state = self.model.apply(
            {"params": params, **model_state}, frames, train=True,
            rngs={"vq": r_vq, "dropout": r_drop}, mutable=["vq_stats"])
        return out, dict(new_state)

    def after_update(self, params, model_state):
        params, model_state, restarted = restart_dead_codes_in_state(
            params, model_state, self.config.loss.restart_dead_after)
        return params, model_state, {"codes_restarted": restarted}
