"""What the tokenizer and LAM stages share: a model that takes frame clips through a VQ."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.errors import UserError
from genie_jax.models.st_transformer import remat_policy
from genie_jax.models.tokenizer import Tokenizer
from genie_jax.runs import stage_meta
from genie_jax.models.vq import restart_dead_codes_in_state
from genie_jax.stages.base import FrozenInput, Stage


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


def training_model(model, config):
    """`model` as a training stage runs it: its quantiser draws dead-code restart candidates
    only on the steps that restart a code (loss.restart_dead_after; models/vq.py)."""
    return model.clone(restart_after=int(config.loss.get("restart_dead_after", 0)))


def params_init(model):
    """frames -> model params (an init whose shapes give a frozen input's abstract params)."""
    def init(frames):  # keys made inside: traced under eval_shape, never run on a device
        key = jax.random.PRNGKey(0)
        return model.init({"params": key, "vq": key, "dropout": key}, frames)["params"]
    return init


def frozen_run(stage_name: str, section, model, image_config) -> FrozenInput:
    """A finished run of `stage_name` named by config `section` (workdir + model: its shape
    config, which the checkpoint's meta must match), params only; abstract shapes from `model`
    on 2 frames of `image_config` (a model section with image_size and channels)."""
    H, W = image_config.image_size
    frames = jax.ShapeDtypeStruct((1, 2, H, W, image_config.channels), np.uint8)
    return FrozenInput(f"{stage_name}.workdir", section.workdir,
                       stage_meta(stage_name, {"model": section.model}), params_init(model),
                       (frames,))


def encode_tokens(tokenizer: Tokenizer, tok_params, frames_BTHWC) -> jax.Array:
    """Frozen tokenizer: frames -> tokens [B,T,N] (int32, no gradient)."""
    # vq_stats is made mutable only so the quantiser can create its (unused) statistics.
    (_, tokens, _), _ = tokenizer.apply({"params": tok_params}, frames_BTHWC,
                                        method=Tokenizer.encode, mutable=["vq_stats"])
    return jax.lax.stop_gradient(tokens)


def check_lam_tokens(lam_cfg, tok_cfg, lam_key: str, tok_key: str) -> list[str]:
    """What disagrees between a token-input LAM's config and its tokenizer's (empty for a pixel
    LAM): its token_codes/token_patch/image_size must be the tokenizer's num_codes/patch_size/
    image_size."""
    if lam_cfg.get("input", "pixels") != "tokens":
        return []
    def value(cfg, key):  # image_size may be a list (a config read back from JSON)
        return tuple(cfg[key]) if key == "image_size" else cfg[key]
    pairs = (("token_codes", "num_codes"), ("token_patch", "patch_size"),
             ("image_size", "image_size"))
    return [f"{lam_key}.{a}={lam_cfg[a]} but {tok_key}.{b}={tok_cfg[b]}" for a, b in pairs
            if value(lam_cfg, a) != value(tok_cfg, b)]


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

    def apply_train(self, params, model_state, frames, rng, **kw):
        """-> ((frames, codes, aux), new model_state), with the VQ statistics updated (kw: more
        model arguments, e.g. a token-input LAM's tokens_BTN)."""
        r_vq, r_drop = jax.random.split(rng)
        out, new_state = self.model.apply(
            {"params": params, **model_state}, frames, train=True,
            rngs={"vq": r_vq, "dropout": r_drop}, mutable=["vq_stats"], **kw)
        return out, dict(new_state)

    def after_update(self, params, model_state):
        params, model_state, restarted = restart_dead_codes_in_state(
            params, model_state, self.config.loss.restart_dead_after)
        return params, model_state, {"codes_restarted": restarted}
