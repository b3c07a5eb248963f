"""ST-ViViT VQ-VAE video tokenizer: patchify -> ST encoder -> VQ -> ST decoder -> pixels.

Both encoder and decoder are causal in time, so the tokens of frame t depend only on frames
<= t and a frame can be decoded as soon as its tokens exist (what interactive sampling needs).
Pixels are handled as float in [0, 1]; uint8 input is converted.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from genie_jax.models.st_transformer import STTransformer, _KERNEL_INIT
from genie_jax.models.vq import VectorQuantizer


def patchify(frames_BTHWC: jax.Array, p: int) -> jax.Array:
    B, T, H, W, C = frames_BTHWC.shape
    x = frames_BTHWC.reshape(B, T, H // p, p, W // p, p, C)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(B, T, (H // p) * (W // p), p * p * C)


def unpatchify(patches_BTNP: jax.Array, p: int, H: int, W: int) -> jax.Array:
    B, T, N, P = patches_BTNP.shape
    C = P // (p * p)
    x = patches_BTNP.reshape(B, T, H // p, W // p, p, p, C)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(B, T, H, W, C)


def to_unit_float(frames: jax.Array) -> jax.Array:
    if frames.dtype == jnp.uint8:
        return frames.astype(jnp.float32) / 255.0
    return frames.astype(jnp.float32)


class PositionalEmbedding(nn.Module):
    """Learned spatial (per patch) plus temporal (per frame) embeddings."""
    max_frames: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BTND: jax.Array, offset=0) -> jax.Array:
        """offset: index of the first frame of x (may be traced; the sampler's one-frame pass)."""
        _, T, N, D = x_BTND.shape
        if T > self.max_frames:
            raise ValueError(f"got {T} frames but the model was built for at most "
                             f"{self.max_frames} (model.max_frames)")
        init = nn.initializers.normal(0.02)
        space_ND = self.param("space", nn.with_logical_partitioning(init, ("pos", "embed")),
                              (N, D), self.param_dtype)
        time_TD = self.param("time", nn.with_logical_partitioning(init, ("frame_pos", "embed")),
                             (self.max_frames, D), self.param_dtype)
        time_TD = jax.lax.dynamic_slice_in_dim(time_TD, offset, T)
        return x_BTND + space_ND[None, None].astype(x_BTND.dtype) + \
            time_TD[None, :, None].astype(x_BTND.dtype)


def _dense(features: int, in_name: str, out_name: str, dtype, param_dtype, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(_KERNEL_INIT, (in_name, out_name)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_name,)))


class VideoVQModel(nn.Module):
    """Fields and helpers shared by the pixel models with a VQ bottleneck (tokenizer, LAM)."""
    image_size: tuple[int, int] = (32, 32)
    channels: int = 3
    patch_size: int = 4
    width: int = 128
    depth: int = 2
    decoder_depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    num_codes: int = 1024
    code_dim: int = 32
    commitment: float = 0.25
    max_frames: int = 16
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    remat: bool = False
    attention_impl: str | None = None

    def setup_common(self):
        """Validate shapes; -> (compute dtype, param dtype, STTransformer kwargs)."""
        H, W = self.image_size
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image_size {tuple(self.image_size)} is not divisible by "
                             f"patch_size {self.patch_size}")
        dt, pdt = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
        st = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
                  dtype=dt, param_dtype=pdt, remat=self.remat, attention_impl=self.attention_impl)
        return dt, pdt, st

    def check_frames(self, frames_BTHWC: jax.Array) -> None:
        want = (*self.image_size, self.channels)
        if frames_BTHWC.ndim != 5 or tuple(frames_BTHWC.shape[2:]) != want:
            raise ValueError(f"frames must be [batch, time, {want[0]}, {want[1]}, {want[2]}] "
                             f"({type(self).__name__} model.image_size, model.channels); got "
                             f"{tuple(frames_BTHWC.shape)}")
        if not (frames_BTHWC.dtype == jnp.uint8 or jnp.issubdtype(frames_BTHWC.dtype, jnp.floating)):
            raise ValueError(f"frames must be uint8 or float in [0, 1]; got {frames_BTHWC.dtype}")


class Tokenizer(VideoVQModel):
    def setup(self):
        dt, pdt, st = self.setup_common()
        self.embed_in = _dense(self.width, "patch_in", "embed", dt, pdt, "embed_in")
        self.pos_enc = PositionalEmbedding(self.max_frames, pdt)
        self.encoder = STTransformer(self.depth, **st)
        self.to_latent = _dense(self.code_dim, "embed", "latent", dt, pdt, "to_latent")
        self.vq = VectorQuantizer(self.num_codes, self.code_dim, self.commitment, pdt)
        self.from_latent = _dense(self.width, "latent", "embed", dt, pdt, "from_latent")
        self.pos_dec = PositionalEmbedding(self.max_frames, pdt)
        self.decoder = STTransformer(self.decoder_depth, **st)
        self.to_pixels = _dense(self.patch_size ** 2 * self.channels, "embed", "patch_in",
                                dt, pdt, "to_pixels")

    def encode(self, frames_BTHWC: jax.Array, train: bool = False):
        """Frames -> (quantised latents [B,T,N,L], tokens [B,T,N], vq aux)."""
        self.check_frames(frames_BTHWC)
        x = patchify(to_unit_float(frames_BTHWC) * 2.0 - 1.0, self.patch_size)
        x = self.pos_enc(self.embed_in(x))
        x = self.encoder(x, deterministic=not train)
        return self.vq(self.to_latent(x), train=train)

    def decode_latents(self, q_BTNL: jax.Array, train: bool = False) -> jax.Array:
        x = self.pos_dec(self.from_latent(q_BTNL))
        x = self.decoder(x, deterministic=not train)
        patches = self.to_pixels(x).astype(jnp.float32)
        return unpatchify(patches, self.patch_size, *self.image_size)

    def decode(self, tokens_BTN: jax.Array) -> jax.Array:
        """Tokens -> frames, float in [0, 1] (unclipped)."""
        return self.decode_latents(self.vq.lookup(tokens_BTN).astype(jnp.dtype(self.dtype)))

    def __call__(self, frames_BTHWC: jax.Array, train: bool = False):
        q, tokens, aux = self.encode(frames_BTHWC, train=train)
        return self.decode_latents(q, train=train), tokens, aux
