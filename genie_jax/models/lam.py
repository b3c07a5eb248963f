"""Latent action model (LAM): infer one discrete action per transition t -> t+1 from pixels.

Encoder: pixel patches of every frame plus one learned *action token* per frame go through an
ST-transformer (spatial attention inside a frame, causal attention across frames). The action
token of frame t+1 has seen x_1..x_{t+1} and nothing later; its output, projected and quantised
by a small VQ codebook (default 6 codes), is the latent action a_t of transition t -> t+1.
So T frames give T-1 actions, and a_t never depends on frames after t+1.

Decoder: an ST-transformer, causal in time, over the patches of x_1..x_{T-1}; the quantised a_t
is added to every patch of frame t. Its output at frame t is the prediction of x_{t+1}, so it
sees x_1..x_t and a_1..a_t only: a_t has to carry what changed. Only the VQ codes are used
downstream (the dynamics model and the sampler).

Input (`input`): 'pixels' (Genie's choice) or 'tokens', the frozen tokenizer's codes of the same
frames (Genie's LAM-input ablation: pixels 1.91 vs tokens 1.33 delta-PSNR on Platformers). With
tokens the encoder embeds each code (token_codes entries) and joins the k x k codes under one LAM
patch (k = patch_size / token_patch) into that patch's input; the decoder still sees pixels and
predicts pixels, so the loss is the same. Tokens are then an argument of every encoding method.

Indices in this file are 0-based: actions_B(T-1)[:, t] is the transition from frame t to t+1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from genie_jax.models.layers import (ACT_BTND, PositionalEmbedding, dense, lookup, patchify,
                                     to_unit_float, unpatchify)
from genie_jax.models.tokenizer import VideoVQModel


LAM_INPUTS = ("pixels", "tokens")


class LatentActionModel(VideoVQModel):
    num_codes: int = 6
    input: str = "pixels"   # 'pixels' | 'tokens' (the tokenizer's codes; see the module doc)
    token_codes: int = 0    # tokens: the tokenizer's codebook size
    token_patch: int = 0    # tokens: the tokenizer's patch size (divides patch_size)

    def setup(self):
        dt, pdt = self.setup_common()
        if self.input not in LAM_INPUTS:
            raise ValueError(f"lam model.input must be one of {LAM_INPUTS}; got {self.input!r}")
        if self.input == "tokens":
            if self.token_codes < 1 or self.token_patch < 1 or self.patch_size % self.token_patch:
                raise ValueError(
                    f"a token-input LAM needs model.token_codes >= 1 and a model.token_patch that "
                    f"divides model.patch_size={self.patch_size}; got token_codes="
                    f"{self.token_codes}, token_patch={self.token_patch}")
            group = (self.patch_size // self.token_patch) ** 2
            self.token_embed = self.param(
                "token_embed", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                            (None, None)),
                (self.token_codes, max(8, self.width // group)), pdt)
        self.embed_in = dense(self.width, "patch_in", "embed", dt, pdt, "embed_in")
        self.action_token = self.param(
            "action_token", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
            (self.width,), pdt)
        self.pos_enc = PositionalEmbedding(self.max_frames, pdt)
        self.encoder = self.st_transformer(self.depth)
        self.to_latent = dense(self.code_dim, "embed", "latent", dt, pdt, "to_latent")
        self.vq = self.make_quantizer(pdt)
        self.dec_embed = dense(self.width, "patch_in", "embed", dt, pdt, "dec_embed")
        self.from_action = dense(self.width, "latent", "embed", dt, pdt, "from_action")
        self.pos_dec = PositionalEmbedding(self.max_frames, pdt)
        self.decoder = self.st_transformer(self.decoder_depth)
        self.to_pixels = dense(self.patch_size ** 2 * self.channels, "embed", "patch_in",
                                dt, pdt, "to_pixels")

    def check_frames(self, frames_BTHWC: jax.Array) -> None:
        super().check_frames(frames_BTHWC)
        if frames_BTHWC.shape[1] < 2:
            raise ValueError(f"the LAM needs at least 2 frames; got {frames_BTHWC.shape[1]}")

    def _patches(self, frames_BTHWC: jax.Array) -> jax.Array:
        return patchify(to_unit_float(frames_BTHWC) * 2.0 - 1.0, self.patch_size)

    def _token_patches(self, frames_BTHWC: jax.Array, tokens_BTN) -> jax.Array:
        """The tokenizer's codes of the frames -> [B,T,N,k*k*E]: each LAM patch's k x k code
        embeddings side by side (the layout patchify gives pixels)."""
        B, T = frames_BTHWC.shape[:2]
        h, w = (s // self.token_patch for s in self.image_size)
        if tokens_BTN is None:
            if not self.is_initializing():
                raise ValueError("this LAM reads the tokenizer's tokens (model.input='tokens'); "
                                 "pass tokens=[batch, time, tokens per frame]")
            tokens_BTN = jnp.zeros((B, T, h * w), jnp.int32)
        if tuple(tokens_BTN.shape) != (B, T, h * w):
            raise ValueError(f"tokens must be [{B}, {T}, {h * w}] (a {h}x{w} grid per frame: "
                             f"image_size / token_patch); got {tuple(tokens_BTN.shape)}")
        emb = lookup(self.token_embed.astype(self.dtypes()[0]), tokens_BTN)  # [B,T,h*w,E]
        return patchify(emb.reshape(B, T, h, w, -1), self.patch_size // self.token_patch)

    def latents(self, frames_BTHWC: jax.Array, train: bool = False,
                tokens_BTN: jax.Array | None = None) -> jax.Array:
        """Frames x_0..x_{T-1} (and, for a token-input LAM, their tokens) -> pre-quantisation
        action latents [B,T-1,L].

        Latent t (transition t -> t+1) is read from frame t+1's action token.
        """
        self.check_frames(frames_BTHWC)
        x_BTNP = (self._token_patches(frames_BTHWC, tokens_BTN) if self.input == "tokens"
                  else self._patches(frames_BTHWC))
        B, T = x_BTNP.shape[:2]
        x_BTND = self.embed_in(x_BTNP)
        tok_BT1D = jnp.broadcast_to(self.action_token.astype(x_BTND.dtype),
                                    (B, T, 1, self.width))
        x_BTND = nn.with_logical_constraint(jnp.concatenate([tok_BT1D, x_BTND], axis=2), ACT_BTND)
        x_BTND = self.encoder(self.pos_enc(x_BTND), deterministic=not train)
        return self.to_latent(x_BTND[:, 1:, 0])  # frames 1..T-1 -> transitions 0..T-2

    def encode(self, frames_BTHWC: jax.Array, train: bool = False,
               tokens_BTN: jax.Array | None = None):
        """Frames x_0..x_{T-1} -> (quantised actions [B,T-1,L], codes [B,T-1], vq aux)."""
        return self.vq(self.latents(frames_BTHWC, train=train, tokens_BTN=tokens_BTN),
                       train=train)

    def decode(self, frames_BTHWC: jax.Array, q_BTL: jax.Array, train: bool = False) -> jax.Array:
        """Context frames x_0..x_{T-2} and actions a_0..a_{T-2} -> predictions of x_1..x_{T-1}.

        frames_BTHWC holds T-1 frames (the context), q_BTL their T-1 quantised actions.
        Output frame t is the prediction of x_{t+1}; float in [0, 1], unclipped.
        """
        x_BTND = self.dec_embed(self._patches(frames_BTHWC))
        x_BTND = x_BTND + self.from_action(q_BTL.astype(x_BTND.dtype))[:, :, None]
        x_BTND = self.decoder(self.pos_dec(nn.with_logical_constraint(x_BTND, ACT_BTND)),
                              deterministic=not train)
        patches = self.to_pixels(x_BTND).astype(jnp.float32)
        return (unpatchify(patches, self.patch_size, *self.image_size) + 1.0) / 2.0

    def actions(self, frames_BTHWC: jax.Array, tokens_BTN: jax.Array | None = None) -> jax.Array:
        """Latent action codes [B, T-1] of a clip (inference)."""
        return self.encode(frames_BTHWC, train=False, tokens_BTN=tokens_BTN)[1]

    def __call__(self, frames_BTHWC: jax.Array, train: bool = False,
                 tokens_BTN: jax.Array | None = None):
        """-> (predictions of frames 1..T-1 [B,T-1,H,W,C], codes [B,T-1], vq aux)."""
        q_BTL, codes_BT, aux = self.encode(frames_BTHWC, train=train, tokens_BTN=tokens_BTN)
        return self.decode(frames_BTHWC[:, :-1], q_BTL, train=train), codes_BT, aux


def lam_loss(pred_BTHWC: jax.Array, frames_BTHWC: jax.Array, aux: dict,
             vq_weight: float = 1.0, change_weight: float = 0.0) -> tuple[jax.Array, dict]:
    """Pixel MSE of the next-frame predictions plus the VQ loss. Pure; -> (loss, metrics).

    change_weight c > 0 weights each pixel's error by 1 + c |x_{t+1} - x_t| (channel mean,
    normalised to mean weight 1): the few pixels an action moves count more than the many it
    leaves alone."""
    target = to_unit_float(frames_BTHWC[:, 1:])
    sq = jnp.square(pred_BTHWC - target)
    mse = jnp.mean(sq)
    fit = mse
    if change_weight > 0:
        change = jnp.mean(jnp.abs(target - to_unit_float(frames_BTHWC[:, :-1])), axis=-1,
                          keepdims=True)
        w = 1.0 + change_weight * jax.lax.stop_gradient(change)
        fit = jnp.mean(sq * w) / jnp.mean(w)
    loss = fit + vq_weight * aux["vq_loss"]
    return loss, {"lam_mse": mse, "lam_vq_loss": aux["vq_loss"],
                  "lam_perplexity": aux["perplexity"], "lam_batch_code_usage": aux["batch_usage"]}
