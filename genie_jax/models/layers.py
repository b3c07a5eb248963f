"""Pieces every model shares: dense layers and layer norms with logical axis names, learned
space/time position embeddings, pixel <-> patch conversion, the activation axis names, and
`TransformerFields`: the transformer hyper-parameters, declared once for every model.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any

# Logical names of a [B, T, N, D] activation (see genie_jax/sharding.py).
ACT_BTND = ("act_batch", "act_frame", "act_patch", "act_embed")

KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def dense(features: int, in_name: str, out_name: str, dtype, param_dtype, name: str) -> nn.Dense:
    """nn.Dense whose kernel [in, out] and bias [out] carry logical axis names."""
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(KERNEL_INIT, (in_name, out_name)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_name,)))


def one_hot_lookups() -> bool:
    """Whether table lookups run as one-hot matmuls: everywhere but the CPU. The backward pass of
    a gather is a scatter-add of every looked-up row into a small table (e.g. 196k rows into
    1024 codes), which a GPU serialises on atomics: 706 of the 1128 ms of the CoinRun-size
    tokenizer train step on an H100 (experiments/RESULTS.md). As a matmul it is a few GFLOP.
    On the CPU the gather and its scatter are the cheaper ones."""
    return jax.default_backend() != "cpu"


def _one_hot(one_hot: bool | None) -> bool:
    return one_hot_lookups() if one_hot is None else one_hot


def lookup(table_VD: jax.Array, ids: jax.Array, one_hot: bool | None = None) -> jax.Array:
    """table_VD[ids] -> [..., D], as a gather or as a one-hot matmul (`one_hot_lookups()`; the
    same values: each output row is one table row times 1)."""
    if not _one_hot(one_hot):
        return jnp.take(table_VD, ids, axis=0)
    onehot = jax.nn.one_hot(ids, table_VD.shape[0], dtype=table_VD.dtype)
    return jnp.einsum("...v,vd->...d", onehot, table_VD, precision=jax.lax.Precision.HIGHEST)


def count_ids(ids: jax.Array, n: int, one_hot: bool | None = None) -> jax.Array:
    """How often each of 0..n-1 occurs in `ids` -> float32 [n] (scatter-add, or a one-hot sum
    where lookups are one-hot: the same integers)."""
    flat = ids.reshape(-1)
    if not _one_hot(one_hot):
        return jnp.zeros((n,), jnp.float32).at[flat].add(1.0)
    return jnp.sum(jax.nn.one_hot(flat, n, dtype=jnp.float32), axis=0)


def layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def patchify(frames_BTHWC: jax.Array, p: int) -> jax.Array:
    """[B,T,H,W,C] -> [B,T,N,P] with N = (H/p)(W/p) patches of P = p*p*C values."""
    B, T, H, W, C = frames_BTHWC.shape
    x = frames_BTHWC.reshape(B, T, H // p, p, W // p, p, C)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(B, T, (H // p) * (W // p), p * p * C)


def unpatchify(patches_BTNP: jax.Array, p: int, H: int, W: int) -> jax.Array:
    B, T, N, P = patches_BTNP.shape
    C = P // (p * p)
    x = patches_BTNP.reshape(B, T, H // p, W // p, p, p, C)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(B, T, H, W, C)


def to_unit_float(frames: jax.Array) -> jax.Array:
    """uint8 frames -> float32 in [0, 1]; float frames are taken as already in [0, 1]."""
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


class TransformerFields(nn.Module):
    """The transformer hyper-parameters of every model (tokenizer, LAM, dynamics), declared once.

    Subclasses add their own fields and build their stacks with `self.st_transformer(depth)`.
    Only the values matter to checkpoints: parameter names come from the subclasses.
    """
    width: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_frames: int = 16
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    remat: str | bool = "none"  # 'none' | 'full' | 'save_dots' (st_transformer.REMAT_POLICIES)
    attention_impl: str | None = None
    scan_layers: bool = False  # blocks as one nn.scan over stacked params (STTransformer)

    def dtypes(self) -> tuple[Any, Any]:
        """(compute dtype, parameter dtype) as numpy dtypes."""
        return jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)

    def st_transformer(self, depth: int, **kw):
        """An STTransformer with this model's fields (kw: e.g. name=...)."""
        from genie_jax.models.st_transformer import STTransformer
        dt, pdt = self.dtypes()
        return STTransformer(depth=depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                             dropout=self.dropout, dtype=dt, param_dtype=pdt, remat=self.remat,
                             attention_impl=self.attention_impl, scan_layers=self.scan_layers,
                             **kw)
