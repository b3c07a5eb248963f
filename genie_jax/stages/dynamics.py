"""Dynamics stage: MaskGIT over the tokens of a FROZEN tokenizer, conditioned on latent actions.

Config sections:
  model      the Dynamics transformer (num_codes = tokenizer codes, num_actions = LAM codes)
  tokenizer  workdir (a finished tokenizer run) + model (its shape config, checked against the
             checkpoint's meta)
  lam        mode 'frozen' (params from lam.workdir), 'cotrain' (trained here, loss added) or
             'true_actions' (no LAM: the dataset's recorded actions condition the dynamics, an
             ablation; model.num_actions = the dataset's action count), + model (its shape config)
  loss       mask_min/mask_max (MaskGIT rate r ~ U(min, max)), next_frame_prob (the share of
             samples that mask one whole frame after an unmasked past), action_dropout (the
             share of training transitions whose action is replaced by "no action", the
             contrast of the sampler's action guidance, sampling.guidance), lam_weight,
             lam_vq_weight, restart_dead_after (LAM codes, cotrain only)
  data.token_cache  '' (frames, encoded by the frozen tokenizer every step) or a folder written
             by `genie-jax data tokenize` (genie_jax/data/token_cache.py): training batches are
             then the cached tokens and actions of the same windows, and no train step runs the
             tokenizer or the LAM. Evaluation and images still read frames (they run rarely).
             Not with lam.mode=cotrain (the co-trained LAM needs frames).

Trainable params: {'dynamics': ...} plus {'lam': ...} when co-training. Frozen params
{'tokenizer': ..., 'lam': ... (only when frozen)} are named by `frozen_inputs()` (run folder,
expected meta, abstract shapes), read once by the caller (params only, no optimizer state), and
reach the traced methods as their `frozen` argument; they are never checkpointed here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.data.sources import open_episode_source
from genie_jax.data.token_cache import TokenCache, expected_plan, token_dtype
from genie_jax.errors import UserError
from genie_jax.models.dynamics import Dynamics
from genie_jax.models.lam import LatentActionModel, lam_loss
from genie_jax.models.layers import to_unit_float
from genie_jax.models.maskgit import maskgit_loss, random_mask
from genie_jax.models.tokenizer import Tokenizer
from genie_jax.models.vq import restart_dead_codes_in_state
from genie_jax.stages.base import FrozenInput, Stage
from genie_jax.stages.lam import build_lam
from genie_jax.stages.tokenizer import build_tokenizer
from genie_jax.stages.video_vq import (build_model, check_lam_tokens, encode_tokens, frozen_run,
                                       training_model)

LAM_MODES = ("frozen", "cotrain", "true_actions")


def build_dynamics(model_cfg) -> Dynamics:
    return build_model(Dynamics, model_cfg)


def lam_actions(lam: LatentActionModel, lam_params, frames_BTHWC, tokens_BTN=None) -> jax.Array:
    """Frozen LAM: frames [B,T,...] (and their tokens, for a token-input LAM) -> latent action
    codes [B,T-1]."""
    codes, _ = lam.apply({"params": lam_params}, frames_BTHWC, tokens_BTN,
                         method=LatentActionModel.actions, mutable=["vq_stats"])
    return jax.lax.stop_gradient(codes)


def lam_input_tokens(lam: LatentActionModel, tokenizer: Tokenizer, tok_params, frames_BTHWC):
    """What a LAM reads besides frames: the frozen tokenizer's tokens for a token-input LAM,
    else None."""
    if lam.input != "tokens":
        return None
    return encode_tokens(tokenizer, tok_params, frames_BTHWC)


def check_dynamics_config(config) -> None:
    m, tok, lam = config.model, config.tokenizer.model, config.lam.model
    if config.lam.mode not in LAM_MODES:
        raise UserError(f"lam.mode must be one of {LAM_MODES}; got {config.lam.mode!r}")
    want = {"model.num_codes": (m.num_codes, tok.num_codes, "tokenizer.model.num_codes"),
            "model.patch_size": (m.patch_size, tok.patch_size, "tokenizer.model.patch_size"),
            "model.image_size": (tuple(m.image_size), tuple(tok.image_size),
                                 "tokenizer.model.image_size"),
            "lam.model.image_size": (tuple(lam.image_size), tuple(tok.image_size),
                                     "tokenizer.model.image_size")}
    if config.lam.mode != "true_actions":  # true actions: one id per recorded dataset action
        want["model.num_actions"] = (m.num_actions, lam.num_codes, "lam.model.num_codes")
    bad = [f"{k}={a} but {other}={b}" for k, (a, b, other) in want.items() if a != b]
    bad += check_lam_tokens(lam, tok, "lam.model", "tokenizer.model")
    if bad:
        raise UserError("inconsistent dynamics config: " + "; ".join(bad))


class DynamicsStage(Stage):
    name = "dynamics"
    shape_sections = ("model", "tokenizer", "lam")

    def __init__(self, config):
        super().__init__(config)
        check_dynamics_config(config)
        self.model = build_dynamics(config.model)
        self.tokenizer = build_tokenizer(config.tokenizer.model)
        self.lam = training_model(build_lam(config.lam.model), config)
        self.cotrain = config.lam.mode == "cotrain"
        self.true_actions = config.lam.mode == "true_actions"
        self.token_cache = config.data.get("token_cache", "")
        if self.token_cache and self.cotrain:
            raise UserError("data.token_cache cannot train with lam.mode=cotrain: the co-trained "
                            "LAM needs frames; use lam.mode=frozen or true_actions, or set "
                            "data.token_cache=''")

    # ---- frozen params (host side) ---------------------------------------------------------
    def frozen_inputs(self) -> dict[str, FrozenInput]:
        """The frozen tokenizer, and the LAM when it is frozen: params only."""
        cfg = self.config
        out = {"tokenizer": frozen_run("tokenizer", cfg.tokenizer, self.tokenizer,
                                       cfg.tokenizer.model)}
        if cfg.lam.mode == "frozen":
            out["lam"] = frozen_run("lam", cfg.lam, self.lam, cfg.tokenizer.model)
        return out

    # ---- host side -------------------------------------------------------------------------
    def frames_source(self):
        return open_episode_source(self.config.data, "train")

    def train_source(self):
        """The train split's frames, or with data.token_cache its cached windows (checked
        against this config: dataset, window length, tokenizer/LAM run and shapes)."""
        if not self.token_cache:
            return self.frames_source()
        cache = TokenCache(self.token_cache)
        cache.check(expected_plan(self.config, lam=self.config.lam.mode == "frozen"))
        return cache

    def check_frozen(self, steps: dict[str, int]) -> None:
        if self.token_cache:
            TokenCache(self.token_cache).check_steps(steps)

    def eval_batch_spec(self, batch_size: int):
        """Held-out batches are always frames (and recorded actions)."""
        H, W = self.config.tokenizer.model.image_size
        shape = (batch_size, self.config.data.num_frames, H, W,
                 self.config.tokenizer.model.channels)
        spec = {"frames": jax.ShapeDtypeStruct(shape, np.uint8)}
        if self.true_actions:  # actions[t]: the recorded action of transition t -> t+1
            spec["actions"] = jax.ShapeDtypeStruct(shape[:2], np.int32)
        return spec

    def batch_spec(self, batch_size: int):
        """Training batches: as eval_batch_spec, or from a token cache tokens [B,T,N] and the
        actions that condition the dynamics (latent [B,T-1] or recorded [B,T])."""
        if not self.token_cache:
            return self.eval_batch_spec(batch_size)
        T = self.config.data.num_frames
        spec = {"tokens": jax.ShapeDtypeStruct(
            (batch_size, T, self.model.tokens_per_frame), token_dtype(self.model.num_codes))}
        if self.true_actions:
            spec["actions"] = jax.ShapeDtypeStruct((batch_size, T), np.int32)
        else:
            spec["latent_actions"] = jax.ShapeDtypeStruct((batch_size, T - 1), np.int32)
        return spec

    def check_batch(self, batch, batch_size: int) -> None:
        super().check_batch(batch, batch_size)
        if self.true_actions:
            a = np.asarray(batch["actions"])[:, :-1]  # the last action leads out of the window
            A = int(self.config.model.num_actions)
            if a.size and (a.min() < 0 or a.max() >= A):
                raise UserError(
                    f"lam.mode=true_actions needs recorded actions in [0, model.num_actions={A}); "
                    f"the data (data.source={self.config.data.source!r}) has actions in "
                    f"[{a.min()}, {a.max()}] (-1: unknown). Set model.num_actions to the dataset's "
                    f"action count, or use a dataset with actions")

    # ---- traced ----------------------------------------------------------------------------
    def init(self, rng, batch):
        r_dyn, r_lam = jax.random.split(rng)
        frames = batch.get("frames")
        B, T = (frames if frames is not None else batch["tokens"]).shape[:2]
        N = self.model.tokens_per_frame
        tokens = jnp.zeros((B, T, N), jnp.int32)
        actions = jnp.zeros((B, T - 1), jnp.int32)
        dyn = self.model.init({"params": r_dyn, "dropout": r_dyn}, tokens, actions)
        out = {"params": {"dynamics": dyn["params"]}}
        if self.cotrain:
            lam = self.lam.init({"params": r_lam, "vq": r_lam, "dropout": r_lam}, frames,
                                train=True)
            out["params"]["lam"] = lam["params"]
            out["vq_stats"] = {"lam": lam["vq_stats"]}
        return out

    def _actions(self, params, frozen, model_state, batch, rng, train: bool, tokens=None):
        """Latent actions [B,T-1] (+ LAM loss, metrics and new stats when co-training); with
        true actions, the recorded ones (the batch's 'actions'); from a token cache, the cached
        latent ones. `tokens`: the batch's tokens (what a token-input LAM reads)."""
        if self.true_actions:
            return batch["actions"][:, :-1].astype(jnp.int32), 0.0, {}, model_state
        if "latent_actions" in batch:
            return batch["latent_actions"], 0.0, {}, model_state
        frames = batch["frames"]
        tokens = tokens if self.lam.input == "tokens" else None
        if not self.cotrain:
            return lam_actions(self.lam, frozen["lam"], frames, tokens), 0.0, {}, model_state
        r_vq, r_drop = jax.random.split(rng)
        (pred, codes, aux), new = self.lam.apply(
            {"params": params["lam"], "vq_stats": model_state["vq_stats"]["lam"]}, frames,
            train=train, tokens_BTN=tokens, rngs={"vq": r_vq, "dropout": r_drop},
            mutable=["vq_stats"])
        lloss, metrics = lam_loss(pred, frames, aux, self.config.loss.lam_vq_weight)
        metrics["lam_counts"] = aux["counts"]
        new_state = {**model_state, "vq_stats": {"lam": new["vq_stats"]}}
        return jax.lax.stop_gradient(codes), lloss, metrics, new_state

    def _masked_ce(self, params, tokens, actions, rng, train: bool):
        r_mask, r_drop = jax.random.split(rng)
        lc = self.config.loss
        p_drop = float(lc.get("action_dropout", 0.0)) if train else 0.0
        if p_drop > 0:  # -1 is "no action" (models/dynamics.shift_actions)
            dropped = jax.random.bernoulli(jax.random.fold_in(rng, 2), p_drop, actions.shape)
            actions = jnp.where(dropped, -1, actions)
        # whole-frame samples are a training device: held-out CE keeps the plain MaskGIT masks,
        # so it compares across configs
        mask = random_mask(r_mask, tokens.shape, lc.mask_min, lc.mask_max,
                           lc.get("next_frame_prob", 0.0) if train else 0.0)
        inp = jnp.where(mask, self.model.mask_id, tokens)
        logits = self.model.apply({"params": params["dynamics"]}, inp, actions, train=train,
                                  rngs={"dropout": r_drop})
        return maskgit_loss(logits, tokens, mask)

    def _tokens(self, frozen, batch):
        """Cached tokens, or the frozen tokenizer's tokens of the batch's frames."""
        if "tokens" in batch:
            return batch["tokens"].astype(jnp.int32)
        return encode_tokens(self.tokenizer, frozen["tokenizer"], batch["frames"])

    def loss(self, params, frozen, model_state, batch, rng):
        r_lam, r_dyn = jax.random.split(rng)
        tokens = self._tokens(frozen, batch)
        actions, lloss, lmetrics, new_state = self._actions(params, frozen, model_state, batch,
                                                            r_lam, train=True, tokens=tokens)
        ce, metrics = self._masked_ce(params, tokens, actions, r_dyn, train=True)
        loss = ce + self.config.loss.lam_weight * lloss
        lmetrics = dict(lmetrics)
        if "lam_counts" in lmetrics:
            lmetrics["lam_batch_code_usage"] = jnp.mean(lmetrics.pop("lam_counts") > 0)
        return loss, ({**metrics, **lmetrics}, new_state)

    def after_update(self, params, model_state):
        if not self.cotrain:
            return params, model_state, {}
        params, model_state, restarted = restart_dead_codes_in_state(
            params, model_state, self.config.loss.restart_dead_after)
        return params, model_state, {"lam_codes_restarted": restarted}

    def eval_step(self, params, frozen, model_state, batch):
        frames = batch["frames"]
        tokens = encode_tokens(self.tokenizer, frozen["tokenizer"], frames)
        rng = jax.random.PRNGKey(0)  # the same masks at every eval
        actions, _, lmetrics, _ = self._actions(params, frozen, model_state, batch, rng,
                                                train=False, tokens=tokens)
        ce, m = self._masked_ce(params, tokens, actions, rng, train=False)
        B = frames.shape[0]
        out = {"ce": ce * B, "masked_acc": m["masked_acc"] * B,
               "count": jnp.asarray(B, jnp.float32)}
        if self.cotrain:
            out["lam_mse"] = lmetrics["lam_mse"] * B
            out["action_counts"] = lmetrics["lam_counts"]
        else:
            out["action_counts"] = jnp.zeros((self.model.num_actions,), jnp.float32).at[
                actions.reshape(-1)].add(1.0)
        return out

    def visualize(self, params, frozen, model_state, batch):
        """Rows per clip: real frames; tokenizer reconstruction; the last frame predicted in one
        MaskGIT pass (all its tokens masked, argmax) from the real earlier frames."""
        batch = {k: v[:4] for k, v in batch.items()}
        frames = batch["frames"]
        fz = frozen
        tokens = encode_tokens(self.tokenizer, fz["tokenizer"], frames)
        actions, _, _, _ = self._actions(params, frozen, model_state, batch,
                                         jax.random.PRNGKey(0), train=False, tokens=tokens)
        inp = tokens.at[:, -1].set(self.model.mask_id)
        logits = self.model.apply({"params": params["dynamics"]}, inp, actions)
        pred_tokens = tokens.at[:, -1].set(jnp.argmax(logits[:, -1], axis=-1))

        def decode(t):
            out, _ = self.tokenizer.apply({"params": fz["tokenizer"]}, t, method=Tokenizer.decode,
                                          mutable=["vq_stats"])
            return jnp.clip(out, 0, 1)

        rows = jnp.stack([to_unit_float(frames), decode(tokens), decode(pred_tokens)], axis=1)
        B, R, T, H, W, C = rows.shape
        grid = rows.reshape(B * R, T, H, W, C).transpose(0, 2, 1, 3, 4).reshape(B * R * H, T * W, C)
        return {"dynamics_last_frame": (grid * 255).round().astype(jnp.uint8)}
