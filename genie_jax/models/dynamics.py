"""MaskGIT dynamics model: predict tokenizer tokens of frame t+1 from tokens of frames <= t and
the latent action of transition t -> t+1.

Input tokens z [B,T,N] take values in [0, num_codes) plus `mask_id = num_codes` (a masked slot).
Actions [B,T-1]: actions[:, t] is the latent action of transition t -> t+1 (0-based, as the LAM
returns them). Inside the model they are shifted one frame right, so frame t+1 is conditioned on
actions[:, t] and frame 0 on a learned "no action" embedding (id `num_actions`):

    frame       0        1            2           ...   T-1
    action in   <none>   actions[0]   actions[1]  ...   actions[T-2]

The ST-transformer is causal in time, so logits for frame t depend on tokens of frames <= t and
actions[:, :t] only. `action_mode`:
  'token'  one extra token per frame carries the action embedding (spatial attention spreads it)
  'add'    the action embedding is added to every patch of the frame
`temporal_pos`:
  'learned'  a learned embedding per buffer slot, added to the input (absolute positions)
  'rope'     rotary positions in the temporal attention (relative: only frame distances matter),
             so the sampler's temporal KV cache survives a slide of its buffer
             (models/st_transformer.py, sampling.py)
`copy_gate` (default off): a learned, per-token gate adds to the logit of the token that the
same patch held in the previous frame (when it is not masked). Half of CoinRun's tokens repeat
from frame to frame; without it the transformer must learn to copy through attention and a
separate output head, and at the CPU budgets it copies worse than a still image
(experiments/copy_diagnosis.py). Its bias starts at log(num_codes): even odds for the previous
token at init. Measured at the quick CoinRun budget it did not help: the world copied and
stopped responding to its actions (experiments/RESULTS.md, "Teaching the world to copy").
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from genie_jax.models.layers import ACT_BTND, PositionalEmbedding, TransformerFields, dense, lookup

ACTION_MODES = ("token", "add")
TEMPORAL_POS = ("learned", "rope")


def shift_actions(actions_BA: jax.Array, num_actions: int) -> jax.Array:
    """[B, T-1] actions of transitions -> [B, T] action that *produces* each frame.

    Frame 0 gets the "no action" id `num_actions`; frame t+1 gets actions[:, t]. Unknown actions
    (-1) also map to "no action".
    """
    B = actions_BA.shape[0]
    a = jnp.where(actions_BA < 0, num_actions, actions_BA).astype(jnp.int32)
    return jnp.concatenate([jnp.full((B, 1), num_actions, jnp.int32), a], axis=1)


class Dynamics(TransformerFields):
    """The transformer fields (width, depth, heads, ...) come from TransformerFields."""
    num_codes: int = 1024          # tokenizer vocabulary; the mask token is id num_codes
    num_actions: int = 6           # LAM codebook size; id num_actions means "no action"
    image_size: tuple[int, int] = (32, 32)   # of the tokenizer; fixes tokens per frame
    patch_size: int = 4                      # of the tokenizer
    depth: int = 4
    action_mode: str = "token"
    temporal_pos: str = "learned"
    copy_gate: bool = False

    @property
    def mask_id(self) -> int:
        return self.num_codes

    @property
    def tokens_per_frame(self) -> int:
        H, W = self.image_size
        return (H // self.patch_size) * (W // self.patch_size)

    @nn.compact
    def __call__(self, tokens_BTN: jax.Array, actions_BA: jax.Array,
                 train: bool = False, kv_slot=None, fill_kv_cache: bool = False,
                 temporal_window: int | None = None, prev_tokens_BN=None) -> jax.Array:
        """tokens [B,T,N] (mask_id where masked), actions [B,T-1] -> logits [B,T,N,V] (V=num_codes).

        Sampler's context pass: fill_kv_cache=True with the 'kv_cache' collection mutable.
        Sampler's one-frame pass (see models/st_transformer.py, temporal KV cache): kv_slot=t,
        tokens [B,1,N] of buffer frame t, actions [B,M-1] of the whole buffer, and the
        'kv_cache' collection from a full pass over that buffer -> logits [B,1,N,V] of frame t.
        temporal_window=W: each frame attends to its W latest frames only (with temporal_pos
        'rope', the reference for the sampler's rolling cache over a video longer than W).
        prev_tokens_BN: with copy_gate, a one-frame pass's previous frame (buffer frame t-1).
        """
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}; got {self.action_mode!r}")
        if self.temporal_pos not in TEMPORAL_POS:
            raise ValueError(f"temporal_pos must be one of {TEMPORAL_POS}; got "
                             f"{self.temporal_pos!r}")
        B, T, N = tokens_BTN.shape
        if N != self.tokens_per_frame:
            raise ValueError(f"got {N} tokens per frame but image_size {tuple(self.image_size)} "
                             f"and patch_size {self.patch_size} give {self.tokens_per_frame}")
        if kv_slot is None and actions_BA.shape != (B, T - 1):
            raise ValueError(f"actions must be [batch, frames-1] = {(B, T - 1)} (one per "
                             f"transition); got {tuple(actions_BA.shape)}")
        if kv_slot is not None and (T != 1 or actions_BA.shape[0] != B):
            raise ValueError(f"a one-frame pass takes tokens [batch, 1, N] and the buffer's "
                             f"actions [batch, M-1]; got {tuple(tokens_BTN.shape)} and "
                             f"{tuple(actions_BA.shape)}")
        dt, pdt = self.dtypes()
        D = self.width
        init = nn.initializers.normal(0.02)
        # V+1 rows (the mask token) rarely divide a mesh axis: the table is split over embed only.
        tok_emb_VD = self.param("token_embed", nn.with_logical_partitioning(init, (None, "embed")),
                                (self.num_codes + 1, D), pdt)
        act_emb_AD = self.param("action_embed", nn.with_logical_partitioning(init, ("codes", "embed")),
                                (self.num_actions + 1, D), pdt)
        x_BTND = lookup(tok_emb_VD.astype(dt), tokens_BTN)
        made_by_BT = shift_actions(actions_BA, self.num_actions)
        if kv_slot is not None:
            made_by_BT = jax.lax.dynamic_slice_in_dim(made_by_BT, kv_slot, 1, axis=1)
        a_BTD = lookup(act_emb_AD.astype(dt), made_by_BT)
        if self.action_mode == "token":
            x_BTND = jnp.concatenate([a_BTD[:, :, None], x_BTND], axis=2)
        else:
            x_BTND = x_BTND + a_BTD[:, :, None]
        x_BTND = nn.with_logical_constraint(x_BTND, ACT_BTND)
        rope = self.temporal_pos == "rope"
        if rope:  # spatial positions only: time enters as rotations in the temporal attention
            space_ND = self.param("pos_space", nn.with_logical_partitioning(init, ("pos", "embed")),
                                  x_BTND.shape[2:], pdt)
            x_BTND = x_BTND + space_ND[None, None].astype(x_BTND.dtype)
        else:
            x_BTND = PositionalEmbedding(self.max_frames, pdt, name="pos")(
                x_BTND, 0 if kv_slot is None else kv_slot)
        x_BTND = self.st_transformer(self.depth, name="transformer", temporal_rope=rope)(
            x_BTND, deterministic=not train, kv_slot=kv_slot, fill_kv_cache=fill_kv_cache,
            temporal_window=temporal_window)
        if self.action_mode == "token":
            x_BTND = x_BTND[:, :, 1:]
        logits_BTNV = dense(self.num_codes, "embed", "vocab", dt, pdt, "to_logits")(x_BTND)
        if self.copy_gate:
            logits_BTNV = self._copy_logits(logits_BTNV, x_BTND, tokens_BTN, kv_slot,
                                            prev_tokens_BN)
        return nn.with_logical_constraint(logits_BTNV.astype(jnp.float32),
                                          ("act_batch", "act_frame", "act_patch", None))

    def _copy_logits(self, logits_BTNV, x_BTND, tokens_BTN, kv_slot, prev_tokens_BN):
        """logits + gate * onehot(previous frame's token at the same patch); frame 0 and masked
        previous tokens get nothing (mask_id is outside the vocabulary)."""
        B, T, N = tokens_BTN.shape
        if kv_slot is not None:
            if prev_tokens_BN is None:
                raise ValueError("a one-frame pass of a copy_gate dynamics needs prev_tokens_BN")
            prev_BTN = jnp.asarray(prev_tokens_BN, jnp.int32).reshape(B, 1, N)
        else:
            prev_BTN = jnp.concatenate(
                [jnp.full((B, 1, N), self.mask_id, jnp.int32), tokens_BTN[:, :-1]], axis=1)
        gate_w_D = self.param("copy_gate_w", nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed",)), (self.width,), self.dtypes()[1])
        gate_b = self.param("copy_gate_b", nn.initializers.constant(math.log(self.num_codes)),
                            (), self.dtypes()[1])
        gate_BTN = (x_BTND.astype(jnp.float32) @ gate_w_D.astype(jnp.float32)
                    + gate_b.astype(jnp.float32))
        hit_BTNV = prev_BTN[..., None] == jnp.arange(self.num_codes, dtype=jnp.int32)
        return logits_BTNV.astype(jnp.float32) + jnp.where(hit_BTNV, gate_BTN[..., None], 0.0)
