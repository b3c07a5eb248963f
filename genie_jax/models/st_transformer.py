"""Spatiotemporal transformer: spatial attention within a frame, causal attention across frames.

Each block is pre-norm: x += SpatialAttn(LN(x)); x += CausalTemporalAttn(LN(x)); x += MLP(LN(x)).
Attention goes through jax.nn.dot_product_attention so the backend can pick a fused kernel
(`attention_impl`: None lets XLA choose, 'cudnn' asks for cuDNN flash attention on GPU).

Temporal KV cache (for the sampler). Causality means a frame's activations never depend on later
frames, so when only frame t changes (MaskGIT steps) the keys/values of frames < t stay valid:
  * context pass: call on the whole buffer with `fill_kv_cache=True` and the 'kv_cache'
    collection mutable; every causal (temporal) attention stores its keys and values
    [B*N, M, K, E] there;
  * frame pass: call on the one frame t with `kv_slot=t` and that collection as input; each
    temporal attention writes its own key/value into slot t of the cache and attends to slots
    <= t. Spatial attention works within the frame as usual.
The logits of the frame pass equal those of a full pass at frame t (tests/models/test_kv_cache.py).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from genie_jax.models.layers import ACT_BTND, KERNEL_INIT, dense, layer_norm

Dtype = Any


class Attention(nn.Module):
    num_heads: int
    causal: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x_BLD: jax.Array, deterministic: bool, kv_slot=None,
                 fill_kv_cache: bool = False) -> jax.Array:
        """kv_slot: None for a full pass; else x holds one frame (L=1) at that buffer slot and the
        keys/values of the other frames come from the 'kv_cache' collection (causal only).
        fill_kv_cache: a full pass that also stores its keys/values there (causal only)."""
        D = x_BLD.shape[-1]
        if D % self.num_heads:
            raise ValueError(f"model width {D} is not divisible by num_heads {self.num_heads}")
        E = D // self.num_heads
        pdt = self.param_dtype
        w_qkv = self.param("qkv_kernel", nn.with_logical_partitioning(
            KERNEL_INIT, (None, "embed", "heads", "kv")), (3, D, self.num_heads, E), pdt)
        b_qkv = self.param("qkv_bias", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, "heads", "kv")), (3, self.num_heads, E), pdt)
        qkv_3BLKE = jnp.einsum("bld,sdke->sblke", x_BLD.astype(self.dtype),
                               w_qkv.astype(self.dtype)) + b_qkv[:, None, None].astype(self.dtype)
        names = ("act_batch", None, "act_heads", "act_kv")
        q_BLKE, k_BLKE, v_BLKE = (nn.with_logical_constraint(a, names) for a in qkv_3BLKE)
        if self.causal and kv_slot is not None:
            if not self.has_variable("kv_cache", "kv"):
                raise ValueError("a one-frame pass (kv_slot) needs the 'kv_cache' collection of "
                                 "a context pass over the buffer")
            k_cache, v_cache = self.get_variable("kv_cache", "kv")
            k_BMKE = jax.lax.dynamic_update_slice_in_dim(k_cache, k_BLKE, kv_slot, axis=1)
            v_BMKE = jax.lax.dynamic_update_slice_in_dim(v_cache, v_BLKE, kv_slot, axis=1)
            seen_M = jnp.arange(k_BMKE.shape[1]) <= kv_slot
            out_BLKE = jax.nn.dot_product_attention(q_BLKE, k_BMKE, v_BMKE,
                                                    mask=seen_M[None, None, None, :],
                                                    implementation=self.attention_impl)
        else:
            if self.causal and fill_kv_cache:
                self.put_variable("kv_cache", "kv", (k_BLKE, v_BLKE))
            out_BLKE = jax.nn.dot_product_attention(q_BLKE, k_BLKE, v_BLKE, is_causal=self.causal,
                                                    implementation=self.attention_impl)
        w_out = self.param("out_kernel", nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1),
                                             out_axis=2),
            ("heads", "kv", "embed")), (self.num_heads, E, D), pdt)
        b_out = self.param("out_bias", nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed",)), (D,), pdt)
        out_BLD = jnp.einsum("blke,ked->bld", out_BLKE, w_out.astype(self.dtype)) + \
            b_out.astype(self.dtype)
        return nn.Dropout(self.dropout)(out_BLD, deterministic=deterministic)


class Mlp(nn.Module):
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTND: jax.Array, deterministic: bool) -> jax.Array:
        D = x_BTND.shape[-1]
        F = int(D * self.mlp_ratio)
        h = dense(F, "embed", "mlp", self.dtype, self.param_dtype, "fc1")(x_BTND)
        h = nn.with_logical_constraint(nn.gelu(h), (*ACT_BTND[:3], "act_mlp"))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        out = dense(D, "mlp", "embed", self.dtype, self.param_dtype, "fc2")(h)
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class STBlock(nn.Module):
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x_BTND: jax.Array, deterministic: bool = True, kv_slot=None,
                 fill_kv_cache: bool = False) -> jax.Array:
        B, T, N, D = x_BTND.shape
        kw = dict(num_heads=self.num_heads, dropout=self.dropout, dtype=self.dtype,
                  param_dtype=self.param_dtype, attention_impl=self.attention_impl)
        # Spatial: every patch attends to every patch of its own frame.
        h = layer_norm("ln_space", self.dtype, self.param_dtype)(x_BTND).reshape(B * T, N, D)
        h = Attention(causal=False, name="space_attn", **kw)(h, deterministic)
        x_BTND = nn.with_logical_constraint(x_BTND + h.reshape(B, T, N, D), ACT_BTND)
        # Temporal: each patch position attends to itself in the current and earlier frames only.
        h = layer_norm("ln_time", self.dtype, self.param_dtype)(x_BTND)
        h = h.transpose(0, 2, 1, 3).reshape(B * N, T, D)
        h = Attention(causal=True, name="time_attn", **kw)(h, deterministic, kv_slot,
                                                           fill_kv_cache)
        x_BTND = nn.with_logical_constraint(
            x_BTND + h.reshape(B, N, T, D).transpose(0, 2, 1, 3), ACT_BTND)
        h = layer_norm("ln_mlp", self.dtype, self.param_dtype)(x_BTND)
        h = Mlp(mlp_ratio=self.mlp_ratio, dropout=self.dropout, dtype=self.dtype,
                param_dtype=self.param_dtype, name="mlp")(
            h, deterministic)
        return nn.with_logical_constraint(x_BTND + h, ACT_BTND)


class STTransformer(nn.Module):
    """A stack of STBlocks with a final LayerNorm. Input and output are [B, T, N, D]."""
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x_BTND: jax.Array, deterministic: bool = True, kv_slot=None,
                 fill_kv_cache: bool = False) -> jax.Array:
        """kv_slot, fill_kv_cache: see the module docstring (temporal KV cache); inference only."""
        cached = kv_slot is not None or fill_kv_cache
        remat = self.remat and not cached
        block_cls = nn.remat(STBlock, static_argnums=(2,)) if remat else STBlock
        x_BTND = nn.with_logical_constraint(x_BTND.astype(self.dtype), ACT_BTND)
        for i in range(self.depth):
            block = block_cls(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                              dropout=self.dropout, dtype=self.dtype,
                              param_dtype=self.param_dtype, attention_impl=self.attention_impl,
                              name=f"block{i}")
            x_BTND = block(x_BTND, deterministic, kv_slot, fill_kv_cache) if cached else block(
                x_BTND, deterministic)
        return layer_norm("ln_out", self.dtype, self.param_dtype)(x_BTND)
