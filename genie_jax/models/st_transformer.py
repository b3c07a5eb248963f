"""Spatiotemporal transformer: spatial attention within a frame, causal attention across frames.

Each block is pre-norm: x += SpatialAttn(LN(x)); x += CausalTemporalAttn(LN(x)); x += MLP(LN(x)).
Attention goes through jax.nn.dot_product_attention so the backend can pick a fused kernel
(`attention_impl`: None lets XLA choose, 'cudnn' asks for cuDNN flash attention on GPU;
'heads_major' is our own XLA spatial attention, `heads_major_attention`). Under
'cudnn', spatial attention pads each frame to a multiple of CUDNN_SEQ_MULTIPLE tokens
(`full_attention`): cuDNN's fused kernel refuses odd lengths when training, and a dynamics frame
is 256 patches plus its action token.

Temporal KV cache (for the sampler). Causality means a frame's activations never depend on later
frames, so when only frame t changes (MaskGIT steps) the keys/values of frames < t stay valid:
  * context pass: call on the whole buffer with `fill_kv_cache=True` and the 'kv_cache'
    collection mutable; every causal (temporal) attention stores its keys and values
    [B*N, M, K, E] there;
  * frame pass: call on the one frame t with `kv_slot=t` and that collection as input; each
    temporal attention writes its own key/value into slot t of the cache and attends to slots
    <= t. Spatial attention works within the frame as usual.
The logits of the frame pass equal those of a full pass at frame t (tests/models/test_kv_cache.py).

Rotary temporal positions (`temporal_rope=True`, a model option): temporal attention rotates
queries and keys by their frame index (RoPE), so scores depend only on how many frames apart two
frames are. The cache then holds unrotated keys and a one-frame pass rotates them by their
offset from slot t, which makes the cache survive a slide of the buffer: rolling it by one slot
leaves every cached key/value valid (the sampler's rolling cache, genie_jax/sampling.py). A
one-frame pass also writes its keys/values back when the 'kv_cache' collection is mutable (the
sampler's commit pass for a finished frame).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genie_jax.models.layers import ACT_BTND, KERNEL_INIT, dense, layer_norm

Dtype = Any
ROPE_BASE = 10_000.0
HEADS_MAJOR = "heads_major"  # `attention_impl` for our own XLA spatial attention (below)
CUDNN_SEQ_MULTIPLE = 8  # cuDNN refused 257-token frames (RESULTS.md, first GPU figures)


def full_attention(q_BLKE: jax.Array, k_BLKE: jax.Array, v_BLKE: jax.Array,
                   implementation: str | None, pad_multiple: int | None = None) -> jax.Array:
    """Non-causal attention over L. With pad_multiple (the default under 'cudnn'), the sequence
    is zero-padded to a multiple of it, the padded keys are excluded by their true length, and
    the padded queries' rows are dropped: the same output as the unpadded attention."""
    if pad_multiple is None and implementation == "cudnn":
        pad_multiple = CUDNN_SEQ_MULTIPLE
    B, L = q_BLKE.shape[:2]
    pad = -L % pad_multiple if pad_multiple else 0
    if implementation == HEADS_MAJOR:
        return heads_major_attention(q_BLKE, k_BLKE, v_BLKE)
    if not pad:
        return jax.nn.dot_product_attention(q_BLKE, k_BLKE, v_BLKE, implementation=implementation)
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q_pad, k_pad, v_pad = (jnp.pad(a, widths) for a in (q_BLKE, k_BLKE, v_BLKE))
    # Key lengths only: a padded query still sees the L real keys, so its (dropped) row stays
    # finite and its zero cotangent cannot turn into NaN gradients.
    out_BLKE = jax.nn.dot_product_attention(q_pad, k_pad, v_pad,
                                            key_value_seq_lengths=jnp.full((B,), L, jnp.int32),
                                            implementation=implementation)
    return out_BLKE[:, :L]


def heads_major_attention(q_BLKE: jax.Array, k_BMKE: jax.Array, v_BMKE: jax.Array) -> jax.Array:
    """Softmax attention (no mask) whose scores and probabilities are laid out [B, K, L, M]:
    `attention_impl='heads_major'` (spatial attention; temporal attention then uses jax's XLA
    path). The same math as jax.nn.dot_product_attention's XLA path; on XLA:CPU its batched dots
    and softmax ran 1.15x faster for a 256-token frame (fwd + bwd). Not the default: its last-bit
    differences change a run's trajectory, and the quickstart world built with it (2026-11-28)
    came out below issue 11 §4's targets: ΔtPSNR 0.10 against 1.14 (experiments/RESULTS.md,
    "Heads-major attention as the CPU default: tried, reverted")."""
    scale = jnp.asarray(q_BLKE.shape[-1] ** -0.5, q_BLKE.dtype)
    logits_BKLM = jnp.einsum("blke,bmke->bklm", q_BLKE * scale, k_BMKE)
    probs_BKLM = jax.nn.softmax(logits_BKLM.astype(jnp.float32), axis=-1).astype(v_BMKE.dtype)
    return jnp.einsum("bklm,bmke->blke", probs_BKLM, v_BMKE)


def rope_rotate(x_BLKE: jax.Array, pos_L: jax.Array) -> jax.Array:
    """Rotate the two halves of each head's features by angles pos * base^(-2i/E) (RoPE)."""
    E = x_BLKE.shape[-1]
    if E % 2:
        raise ValueError(f"rotary temporal positions need an even head width; got {E}")
    inv_freq = ROPE_BASE ** (-jnp.arange(0, E // 2, dtype=jnp.float32) * 2.0 / E)
    ang_LE = pos_L.astype(jnp.float32)[:, None] * inv_freq[None]
    cos, sin = (f(ang_LE)[None, :, None, :] for f in (jnp.cos, jnp.sin))
    x1, x2 = jnp.split(x_BLKE.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x_BLKE.dtype)


class Attention(nn.Module):
    num_heads: int
    causal: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: str | None = None
    rope: bool = False  # rotary positions along L (temporal attention); see the module docstring

    @property
    def _jax_impl(self):
        return None if self.attention_impl == HEADS_MAJOR else self.attention_impl

    @nn.compact
    def __call__(self, x_BLD: jax.Array, deterministic: bool, kv_slot=None,
                 fill_kv_cache: bool = False, window: int | None = None) -> jax.Array:
        """kv_slot: None for a full pass; else x holds one frame (L=1) at that buffer slot and the
        keys/values of the other frames come from the 'kv_cache' collection (causal only).
        fill_kv_cache: a full pass that also stores its keys/values there (causal only).
        window: a full causal pass where each position sees only the `window` latest positions
        (itself included): what a rolling cache of `window` slots computes over a long video."""
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
            if self.is_mutable_collection("kv_cache"):  # commit this frame's keys/values
                self.put_variable("kv_cache", "kv", (k_BMKE, v_BMKE))
            slots_M = jnp.arange(k_BMKE.shape[1])
            seen_M = slots_M <= kv_slot
            k_att = k_BMKE
            if self.rope:  # rotate the cache by its offsets from slot t, then put the new key
                # (offset 0: no rotation) in: the rotation does not depend on the frame's tokens,
                # so XLA can hoist it out of the MaskGIT loop.
                k_att = jax.lax.dynamic_update_slice_in_dim(
                    rope_rotate(k_cache, slots_M - kv_slot), k_BLKE, kv_slot, axis=1)
            out_BLKE = jax.nn.dot_product_attention(q_BLKE, k_att, v_BMKE,
                                                    mask=seen_M[None, None, None, :],
                                                    implementation=self._jax_impl)
        else:
            if self.causal and fill_kv_cache:
                self.put_variable("kv_cache", "kv", (k_BLKE, v_BLKE))
            q_att, k_att = q_BLKE, k_BLKE
            if self.rope:
                pos_L = jnp.arange(x_BLD.shape[1])
                q_att, k_att = rope_rotate(q_BLKE, pos_L), rope_rotate(k_BLKE, pos_L)
            if self.causal and window is not None:
                i_L = jnp.arange(x_BLD.shape[1])
                band_LL = (i_L[:, None] >= i_L[None]) & (i_L[:, None] - i_L[None] < window)
                out_BLKE = jax.nn.dot_product_attention(q_att, k_att, v_BLKE,
                                                        mask=band_LL[None, None],
                                                        implementation=self._jax_impl)
            elif self.causal:
                out_BLKE = jax.nn.dot_product_attention(q_att, k_att, v_BLKE, is_causal=True,
                                                        implementation=self._jax_impl)
            else:
                out_BLKE = full_attention(q_att, k_att, v_BLKE, self.attention_impl)
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
    temporal_rope: bool = False
    temporal: bool = True  # False: no temporal attention (a per-frame model, e.g. the tokenizer)

    @nn.compact
    def __call__(self, x_BTND: jax.Array, deterministic: bool = True, kv_slot=None,
                 fill_kv_cache: bool = False, temporal_window: int | None = None) -> jax.Array:
        B, T, N, D = x_BTND.shape
        kw = dict(num_heads=self.num_heads, dropout=self.dropout, dtype=self.dtype,
                  param_dtype=self.param_dtype, attention_impl=self.attention_impl)
        # Spatial: every patch attends to every patch of its own frame.
        h = layer_norm("ln_space", self.dtype, self.param_dtype)(x_BTND).reshape(B * T, N, D)
        h = Attention(causal=False, name="space_attn", **kw)(h, deterministic)
        x_BTND = nn.with_logical_constraint(x_BTND + h.reshape(B, T, N, D), ACT_BTND)
        # Temporal: each patch position attends to itself in the current and earlier frames only.
        if self.temporal:
            h = layer_norm("ln_time", self.dtype, self.param_dtype)(x_BTND)
            h = h.transpose(0, 2, 1, 3).reshape(B * N, T, D)
            h = Attention(causal=True, rope=self.temporal_rope, name="time_attn", **kw)(
                h, deterministic, kv_slot, fill_kv_cache, temporal_window)
            x_BTND = nn.with_logical_constraint(
                x_BTND + h.reshape(B, N, T, D).transpose(0, 2, 1, 3), ACT_BTND)
        h = layer_norm("ln_mlp", self.dtype, self.param_dtype)(x_BTND)
        h = Mlp(mlp_ratio=self.mlp_ratio, dropout=self.dropout, dtype=self.dtype,
                param_dtype=self.param_dtype, name="mlp")(
            h, deterministic)
        return nn.with_logical_constraint(x_BTND + h, ACT_BTND)


# Rematerialisation policies (`model.remat`): what a block's backward pass keeps of its forward
# pass, traded against recomputing the rest.
#   none       keep everything (no recompute; the most activation memory)
#   full       keep each block's input only and rerun the whole block in the backward pass
#   save_dots  keep the results of matmuls without batch dimensions (the qkv/out projections and
#              the MLP: most of a block's FLOPs) and recompute the cheap rest (norms, gelu,
#              attention scores and softmax, which are batched matmuls)
REMAT_POLICIES = ("none", "full", "save_dots")
_CHECKPOINT_POLICY = {"full": None,  # nn.remat's default: save nothing
                      "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_policy(value) -> str:
    """A `model.remat` value -> its policy name. A bool (configs and run folders from before the
    policies, or `--config.model.remat=true` on the command line) means full (true) or none."""
    if isinstance(value, (bool, np.bool_)):
        return "full" if value else "none"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "false"):
            return "full" if v == "true" else "none"
        if v in REMAT_POLICIES:
            return v
    raise ValueError(f"model.remat={value!r} is not one of {', '.join(REMAT_POLICIES)} "
                     f"(or a bool: true means full, false none)")


class _ScannedBlock(STBlock):
    """STBlock with the scan-carry signature x -> (x, None), for `nn.scan` over layers; the pass
    options are fields so that they stay static inside the scan."""
    deterministic: bool = True

    def __call__(self, x_BTND: jax.Array, _=None):
        return super().__call__(x_BTND, self.deterministic), None


class STTransformer(nn.Module):
    """A stack of STBlocks with a final LayerNorm. Input and output are [B, T, N, D].

    scan_layers: the blocks as one `nn.scan` over a stacked copy of their parameters (each leaf
    gets a leading 'layers' axis of size depth, under 'blocks' instead of 'block0'..): XLA
    compiles one block, so compile time stays flat as depth grows. The same function as the
    unrolled stack on the same weights (`stack_blocks`/`unstack_blocks` convert between the
    layouts); the KV-cache passes need the unrolled layout (the sampler converts). With
    dropout > 0 the two layouts draw different masks (each scanned layer splits the rng).
    """
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: str | bool = "none"  # REMAT_POLICIES (a bool: true = full)
    attention_impl: str | None = None
    temporal_rope: bool = False  # rotary temporal positions (module docstring)
    scan_layers: bool = False
    temporal: bool = True  # False: blocks without temporal attention (frames independent)

    @nn.compact
    def __call__(self, x_BTND: jax.Array, deterministic: bool = True, kv_slot=None,
                 fill_kv_cache: bool = False, temporal_window: int | None = None) -> jax.Array:
        """kv_slot, fill_kv_cache: see the module docstring (temporal KV cache); inference only.
        temporal_window: banded causal temporal attention (the rolling cache's reference)."""
        cached = kv_slot is not None or fill_kv_cache or temporal_window is not None
        policy = "none" if cached else remat_policy(self.remat)
        kw = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  attention_impl=self.attention_impl, temporal_rope=self.temporal_rope,
                  temporal=self.temporal)
        x_BTND = nn.with_logical_constraint(x_BTND.astype(self.dtype), ACT_BTND)
        if self.scan_layers:
            if cached:
                raise ValueError("the KV-cache passes (kv_slot, fill_kv_cache, temporal_window) "
                                 "need the unrolled stack: scan_layers=False with "
                                 "unstack_blocks(params)")
            block_cls = _ScannedBlock
            if policy != "none":  # prevent_cse=False: the scan already keeps XLA from CSE-ing
                block_cls = nn.remat(block_cls, prevent_cse=False,
                                     policy=_CHECKPOINT_POLICY[policy])
            scan = nn.scan(block_cls, variable_axes={"params": 0},
                           split_rngs={"params": True, "dropout": True}, length=self.depth,
                           metadata_params={nn.PARTITION_NAME: "layers"})
            x_BTND, _ = scan(deterministic=deterministic, name="blocks", **kw)(x_BTND, None)
        else:
            block_cls = STBlock
            if policy != "none":
                block_cls = nn.remat(STBlock, static_argnums=(2,),
                                     policy=_CHECKPOINT_POLICY[policy])
            for i in range(self.depth):
                block = block_cls(name=f"block{i}", **kw)
                x_BTND = block(x_BTND, deterministic, kv_slot, fill_kv_cache,
                               temporal_window) if cached else block(x_BTND, deterministic)
        return layer_norm("ln_out", self.dtype, self.param_dtype)(x_BTND)


# ---- parameter layouts: unrolled (block0, block1, ...) <-> scanned ('blocks', stacked) ------

def _block_names(tree: dict) -> list[str] | None:
    n = sum(1 for k in tree if re.fullmatch(r"block\d+", str(k)))
    names = [f"block{i}" for i in range(n)]
    return names if n and all(k in tree for k in names) else None


def stack_blocks(tree):
    """Every stack in a parameter tree (a dict holding block0..blockN-1) -> the scanned layout:
    those blocks become one 'blocks' subtree whose leaves are stacked along a new axis 0."""
    if not isinstance(tree, Mapping):
        return tree
    names = _block_names(tree)
    out = {k: stack_blocks(v) for k, v in tree.items() if not (names and k in names)}
    if names:
        out["blocks"] = jax.tree.map(lambda *a: jnp.stack(a), *(tree[k] for k in names))
    return out


def unstack_blocks(tree):
    """The inverse of `stack_blocks`: each 'blocks' subtree of stacked leaves [depth, ...] ->
    block0..block{depth-1}."""
    if not isinstance(tree, Mapping):
        return tree
    out = {k: unstack_blocks(v) for k, v in tree.items() if k != "blocks"}
    if "blocks" in tree:
        depth = jax.tree.leaves(tree["blocks"])[0].shape[0]
        for i in range(depth):
            out[f"block{i}"] = jax.tree.map(lambda a: a[i], tree["blocks"])
    return out
