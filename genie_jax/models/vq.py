"""Vector quantiser with an L2-normalised codebook, straight-through gradients and dead-code restart.

Besides the `codebook` parameter, each quantiser keeps non-trainable state in the `vq_stats`
collection:
  age         int32 [V]   steps since the code was last chosen (training only)
  candidates  [V, L]      a random sample of recent (normalised) encoder outputs: uniform over the
                          batch's tokens, or (restart_sampling='error') drawn in proportion to each
                          token's squared distance to its code, so restarted codes go where the
                          codebook fits worst rather than to the commonest (already coded) content
`restart_dead_codes` (called by the train step after the optimizer update) replaces every code
whose age reached a threshold with a candidate, so no code stays dead for long.

A step's candidates are used only if some code reaches that threshold in the same step. With
`restart_after` set to it (the stages set it from loss.restart_dead_after), the draw runs under
`lax.cond` on that condition; other steps keep the old candidates. Restarts, and every value a
run computes, are unchanged; most steps skip the draw (for 1024 codes and 4096 tokens the
'error' draw is 4M random numbers, about 25 ms of the CPU tokenizer's ~430 ms step).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from genie_jax.models.layers import count_ids, lookup


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


class VectorQuantizer(nn.Module):
    num_codes: int
    code_dim: int
    commitment: float = 0.25
    param_dtype: Any = jnp.float32
    restart_sampling: str = "uniform"  # 'uniform' | 'error' (see the module docstring)
    restart_after: int = 0  # draw candidates only on steps a code reaches this age; 0: every step

    @nn.compact
    def __call__(self, z_XL: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array, dict]:
        """z_XL: [..., L] encoder outputs. Returns (quantised [..., L], codes [...], aux)."""
        V, L = self.num_codes, self.code_dim
        codebook_VL = self.param(
            "codebook",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("codes", "latent")),
            (V, L), self.param_dtype)
        age = self.variable("vq_stats", "age", lambda: jnp.zeros((V,), jnp.int32))
        candidates = self.variable("vq_stats", "candidates",
                                   lambda: jnp.zeros((V, L), self.param_dtype))

        lead = z_XL.shape[:-1]
        z_ML = l2_normalize(z_XL.astype(jnp.float32)).reshape(-1, L)
        codebook_VL = l2_normalize(codebook_VL.astype(jnp.float32))
        codes_M = jnp.argmax(z_ML @ codebook_VL.T, axis=-1)
        e_ML = lookup(codebook_VL, codes_M)
        codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z_ML) - e_ML))
        commit_loss = jnp.mean(jnp.square(z_ML - jax.lax.stop_gradient(e_ML)))
        q_ML = z_ML + jax.lax.stop_gradient(e_ML - z_ML)

        counts_V = count_ids(codes_M, V)
        probs_V = counts_V / codes_M.shape[0]
        entropy = -jnp.sum(jnp.where(probs_V > 0, probs_V * jnp.log(probs_V), 0.0))
        if train and not self.is_initializing():
            age.value = jnp.where(counts_V > 0, 0, age.value + 1)
            if self.restart_sampling not in ("error", "uniform"):
                raise ValueError(f"restart_sampling must be 'uniform' or 'error'; got "
                                 f"{self.restart_sampling!r}")
            rng = self.make_rng("vq")

            def draw(_):
                if self.restart_sampling == "error":
                    err_M = jnp.sum(jnp.square(z_ML - e_ML), axis=-1)
                    pick = jax.random.categorical(rng, jnp.log(err_M + 1e-12), shape=(V,))
                else:
                    pick = jax.random.randint(rng, (V,), 0, z_ML.shape[0])
                return jax.lax.stop_gradient(z_ML[pick]).astype(self.param_dtype)

            if self.restart_after > 0:
                due = jnp.any(age.value >= self.restart_after)
                candidates.value = jax.lax.cond(due, draw, lambda _: candidates.value, None)
            else:
                candidates.value = draw(None)
        aux = {
            "vq_loss": codebook_loss + self.commitment * commit_loss,
            "codebook_loss": codebook_loss,
            "commit_loss": commit_loss,
            "perplexity": jnp.exp(entropy),
            "batch_usage": jnp.mean((counts_V > 0).astype(jnp.float32)),
            "counts": counts_V,
        }
        return q_ML.reshape(*lead, L).astype(z_XL.dtype), codes_M.reshape(lead), aux

    def lookup(self, codes: jax.Array) -> jax.Array:
        """Normalised code vectors for integer codes [...] -> [..., L]."""
        codebook_VL = l2_normalize(self.get_variable("params", "codebook").astype(jnp.float32))
        return codebook_VL[codes]


def restart_dead_codes(params: dict, vq_stats: dict, after_steps: int) -> tuple[dict, dict, jax.Array]:
    """Replace codes unused for `after_steps` training steps in every quantiser of the model.

    Returns (params, vq_stats, number of codes restarted). Works on any model: quantisers are
    found by their `vq_stats/.../age` entries.
    """
    if after_steps <= 0 or not vq_stats:
        return params, vq_stats, jnp.zeros((), jnp.int32)
    flat_p = traverse_util.flatten_dict(params)
    flat_s = traverse_util.flatten_dict(vq_stats)
    restarted = jnp.zeros((), jnp.int32)
    for path in [p for p in flat_s if p[-1] == "age"]:
        prefix = path[:-1]
        age, cand = flat_s[path], flat_s[prefix + ("candidates",)]
        cb_path = prefix + ("codebook",)
        cb = flat_p[cb_path]
        box = None
        if isinstance(cb, nn.Partitioned):
            box, cb = cb, cb.value
        dead = age >= after_steps
        cb = jnp.where(dead[:, None], cand.astype(cb.dtype), cb)
        flat_p[cb_path] = box.replace_boxed(cb) if box is not None else cb
        flat_s[path] = jnp.where(dead, 0, age)
        restarted = restarted + jnp.sum(dead.astype(jnp.int32))
    return (traverse_util.unflatten_dict(flat_p), traverse_util.unflatten_dict(flat_s), restarted)


def restart_dead_codes_in_state(params: dict, model_state: dict, after_steps: int):
    """`restart_dead_codes` over a stage's model state (its 'vq_stats' collection); a model
    without one (an FSQ bottleneck) keeps its state as it is. -> (params, model_state, restarted)."""
    if "vq_stats" not in model_state:
        return params, model_state, jnp.zeros((), jnp.int32)
    params, vq_stats, restarted = restart_dead_codes(params, model_state["vq_stats"], after_steps)
    return params, {**model_state, "vq_stats": vq_stats}, restarted
