"""Finite scalar quantisation (FSQ, Mentzer et al. 2023): a codebook that cannot collapse.

Each of the d = len(levels) latent channels is squashed by tanh into a bounded range and rounded
to one of levels[i] integers (straight-through gradient). A token is the tuple of those integers
read as one mixed-radix number, so there are prod(levels) codes, all reachable, with no codebook
parameters, no VQ losses and no dead codes to restart. The same interface as VectorQuantizer:
`__call__` -> (quantised latents, codes, aux) and `lookup(codes)` -> latents.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genie_jax.models.layers import count_ids


def check_levels(levels, num_codes: int, code_dim: int) -> tuple[int, ...]:
    """The levels as a tuple, or a ValueError naming the config keys that disagree with them."""
    levels = tuple(int(x) for x in levels)
    if not levels or min(levels) < 2:
        raise ValueError(f"model.fsq_levels must be integers >= 2; got {levels}")
    if code_dim != len(levels):
        raise ValueError(f"model.code_dim ({code_dim}) must equal len(model.fsq_levels) "
                         f"({len(levels)}: {levels}) with model.quantizer='fsq'")
    if num_codes != math.prod(levels):
        raise ValueError(f"model.num_codes ({num_codes}) must equal the product of "
                         f"model.fsq_levels {levels} ({math.prod(levels)}) with "
                         f"model.quantizer='fsq'")
    return levels


class FiniteScalarQuantizer(nn.Module):
    levels: tuple[int, ...]

    def _constants(self):
        L = np.asarray(self.levels, np.float32)
        half_width = (L // 2).astype(np.float32)           # rounded values span [-hw, L-1-hw]
        basis = np.cumprod([1] + list(self.levels[:-1])).astype(np.int32)
        return L, half_width, basis

    def _bound(self, z_XD: jax.Array) -> jax.Array:
        """Squash each channel into (-hw - 0.5, L - 1 - hw + 0.5)-ish so rounding gives L values."""
        L, hw, _ = self._constants()
        # A hair over (L-1)/2: for an even L the shift below is arctanh(offset/half), infinite
        # at L=2 without it (every value would round to one level).
        half = (L - 1) * (1 + 1e-3) / 2
        offset = np.where(L % 2 == 0, 0.5, 0.0).astype(np.float32)
        shift = np.arctanh(offset / half).astype(np.float32)
        return jnp.tanh(z_XD + shift) * half - offset

    def __call__(self, z_XD: jax.Array, train: bool = False):
        """z_XD: [..., d] encoder outputs. Returns (quantised [..., d] in [-1, 1], codes [...],
        aux with the same keys as VectorQuantizer's)."""
        _, hw, basis = self._constants()
        b = self._bound(z_XD.astype(jnp.float32))
        r = b + jax.lax.stop_gradient(jnp.round(b) - b)         # straight-through rounding
        digits = jax.lax.stop_gradient(jnp.round(b)).astype(jnp.int32) + hw.astype(np.int32)
        codes = jnp.sum(digits * basis, axis=-1)
        num_codes = int(np.prod(self.levels))
        counts_V = count_ids(codes, num_codes)
        probs_V = counts_V / codes.size
        entropy = -jnp.sum(jnp.where(probs_V > 0, probs_V * jnp.log(probs_V), 0.0))
        zero = jnp.zeros((), jnp.float32)
        aux = {"vq_loss": zero, "codebook_loss": zero, "commit_loss": zero,
               "perplexity": jnp.exp(entropy),
               "batch_usage": jnp.mean((counts_V > 0).astype(jnp.float32)), "counts": counts_V}
        return (r / hw).astype(z_XD.dtype), codes, aux

    def lookup(self, codes: jax.Array) -> jax.Array:
        """Integer codes [...] -> quantised latents [..., d] (float32, in [-1, 1])."""
        L, hw, basis = self._constants()
        digits = (codes[..., None] // basis) % L.astype(np.int32)
        return (digits - hw).astype(jnp.float32) / hw
