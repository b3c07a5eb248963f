"""ST-ViViT VQ-VAE video tokenizer: patchify -> ST encoder -> VQ -> ST decoder -> pixels.

Both encoder and decoder are causal in time, so the tokens of frame t depend only on frames
<= t and a frame can be decoded as soon as its tokens exist (what interactive sampling needs).
Pixels are handled as float in [0, 1]; uint8 input is converted.

`temporal='none'` drops the temporal attention: every frame is encoded and decoded alone (a
spatial ViT VQ-VAE, Genie's "ViT" tokenizer ablation). A frame's tokens are then the same in any
window, steps cost less, and the sampler decodes only the new frame. On CoinRun about half of a
frame's tokens still differ from the previous frame's, as with the causal tokenizer (the camera
follows the player; experiments/RESULTS.md, "A per-frame tokenizer").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genie_jax.models.layers import (PositionalEmbedding, TransformerFields, dense, patchify,
                                     to_unit_float, unpatchify)
from genie_jax.models.fsq import FiniteScalarQuantizer, check_levels
from genie_jax.models.vq import VectorQuantizer


class VideoVQModel(TransformerFields):
    """Fields and helpers shared by the pixel models with a VQ bottleneck (tokenizer, LAM); the
    transformer fields (width, depth, heads, ...) come from TransformerFields."""
    image_size: tuple[int, int] = (32, 32)
    channels: int = 3
    patch_size: int = 4
    decoder_depth: int = 2
    num_codes: int = 1024
    code_dim: int = 32
    commitment: float = 0.25
    restart_sampling: str = "uniform"  # where restarted VQ codes are drawn from (models/vq.py)
    quantizer: str = "vq"  # 'vq' (learned codebook) | 'fsq' (models/fsq.py: fixed levels)
    fsq_levels: tuple[int, ...] = ()  # fsq: code_dim = len(levels), num_codes = prod(levels)
    # Not a config key: the training stage sets it to loss.restart_dead_after (models/vq.py).
    restart_after: int = 0

    def setup_common(self):
        """Validate shapes; -> (compute dtype, param dtype)."""
        H, W = self.image_size
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image_size {tuple(self.image_size)} is not divisible by "
                             f"patch_size {self.patch_size}")
        return self.dtypes()

    def make_quantizer(self, param_dtype):
        """The bottleneck named by `quantizer` (a ValueError naming the key otherwise)."""
        if self.quantizer == "fsq":
            return FiniteScalarQuantizer(check_levels(self.fsq_levels, self.num_codes,
                                                      self.code_dim))
        if self.quantizer != "vq":
            raise ValueError(f"model.quantizer must be 'vq' or 'fsq'; got {self.quantizer!r}")
        if self.restart_sampling not in ("uniform", "error"):
            raise ValueError(f"model.restart_sampling must be 'uniform' or 'error'; got "
                             f"{self.restart_sampling!r}")
        return VectorQuantizer(self.num_codes, self.code_dim, self.commitment, param_dtype,
                               self.restart_sampling, self.restart_after)

    def check_frames(self, frames_BTHWC: jax.Array) -> None:
        want = (*self.image_size, self.channels)
        if frames_BTHWC.ndim != 5 or tuple(frames_BTHWC.shape[2:]) != want:
            raise ValueError(f"frames must be [batch, time, {want[0]}, {want[1]}, {want[2]}] "
                             f"({type(self).__name__} model.image_size, model.channels); got "
                             f"{tuple(frames_BTHWC.shape)}")
        if not (frames_BTHWC.dtype == jnp.uint8 or jnp.issubdtype(frames_BTHWC.dtype, jnp.floating)):
            raise ValueError(f"frames must be uint8 or float in [0, 1]; got {frames_BTHWC.dtype}")


TEMPORAL = ("causal", "none")


class Tokenizer(VideoVQModel):
    temporal: str = "causal"  # TEMPORAL: causal temporal attention, or frames coded alone

    def setup(self):
        dt, pdt = self.setup_common()
        if self.temporal not in TEMPORAL:
            raise ValueError(f"model.temporal must be one of {TEMPORAL}; got {self.temporal!r}")
        per_frame = self.temporal == "none"
        self.embed_in = dense(self.width, "patch_in", "embed", dt, pdt, "embed_in")
        self.pos_enc = PositionalEmbedding(self.max_frames, pdt)
        self.encoder = self.st_transformer(self.depth, temporal=not per_frame)
        self.to_latent = dense(self.code_dim, "embed", "latent", dt, pdt, "to_latent")
        self.vq = self.make_quantizer(pdt)
        self.from_latent = dense(self.width, "latent", "embed", dt, pdt, "from_latent")
        self.pos_dec = PositionalEmbedding(self.max_frames, pdt)
        self.decoder = self.st_transformer(self.decoder_depth, temporal=not per_frame)
        self.to_pixels = dense(self.patch_size ** 2 * self.channels, "embed", "patch_in",
                                dt, pdt, "to_pixels")

    def encode(self, frames_BTHWC: jax.Array, train: bool = False):
        """Frames -> (quantised latents [B,T,N,L], tokens [B,T,N], vq aux)."""
        self.check_frames(frames_BTHWC)
        x = patchify(to_unit_float(frames_BTHWC) * 2.0 - 1.0, self.patch_size)
        x = self._per_frame(lambda y: self.encoder(self.pos_enc(self.embed_in(y)),
                                                   deterministic=not train), x)
        return self.vq(self.to_latent(x), train=train)

    def _per_frame(self, fn, x_BTN_):
        """fn over [B, T, N, ...]; with temporal='none', over every frame alone (as [B*T, 1, N,
        ...]: each frame takes the first temporal position, so any window length works)."""
        if self.temporal != "none":
            return fn(x_BTN_)
        B, T = x_BTN_.shape[:2]
        y = fn(x_BTN_.reshape(B * T, 1, *x_BTN_.shape[2:]))
        return y.reshape(B, T, *y.shape[2:])

    def decode_latents(self, q_BTNL: jax.Array, train: bool = False) -> jax.Array:
        x = self._per_frame(lambda y: self.decoder(self.pos_dec(self.from_latent(y)),
                                                   deterministic=not train), q_BTNL)
        patches = self.to_pixels(x).astype(jnp.float32)
        return unpatchify(patches, self.patch_size, *self.image_size)

    def decode(self, tokens_BTN: jax.Array) -> jax.Array:
        """Tokens -> frames, float in [0, 1] (unclipped)."""
        return self.decode_latents(self.vq.lookup(tokens_BTN).astype(jnp.dtype(self.dtype)))

    def __call__(self, frames_BTHWC: jax.Array, train: bool = False):
        q, tokens, aux = self.encode(frames_BTHWC, train=train)
        return self.decode_latents(q, train=train), tokens, aux
