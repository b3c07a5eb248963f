"""MaskGIT, training and decoding in one place.

Training (the dynamics stage): `random_mask` masks a random fraction r ~ U(min, max) of the
tokens of every frame after the first (optionally some samples mask one whole frame after an
unmasked past: the first decoding step), and `maskgit_loss` is the cross-entropy on the masked
tokens only.

Decoding (the sampler): `maskgit_decode_frame` starts with every token of a frame masked; at each
of `steps` steps it samples all masked tokens (temperature), keeps the most confident and re-masks
the rest, so that after step s a fraction gamma((s+1)/steps) of the frame is still masked
(`mask_ratio`: cosine by default, 0 at the end, so every token is decoded by the last step;
`masked_counts` turns it into static token counts). `order` picks which tokens are kept at each
step: 'confidence' (MaskGIT: the most confident samples, randomised by annealed Gumbel noise
when sampling) or 'halton' (a fixed order that spreads the kept tokens evenly over the token
grid, a 2-D Halton sequence; confidence is not used: meant for few steps).

Each step's candidate token is drawn at the temperature (MaskGIT; argmax at temperature 0), or,
given every code's vector (`codes_VL`; the sampler's pick='mbr'), chosen by minimum Bayes risk
(`mbr_tokens`): the code whose vector is nearest, in squared distance, to the expected code
vector under the predicted distribution, i.e. the code with the least expected squared error
against a draw. Deterministic; the temperature is unused. Where the model is unsure between
similar codes it picks one close to all of them, not the likeliest.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def random_mask(rng: jax.Array, shape_BTN: tuple[int, int, int], min_rate: float = 0.5,
                max_rate: float = 1.0, next_frame_prob: float = 0.0) -> jax.Array:
    """MaskGIT training mask: rate r ~ U(min_rate, max_rate) per sample; frame 0 never masked.

    With probability `next_frame_prob` a sample instead trains the sampler's first decoding
    step: one random frame t >= 1 is masked whole and the frames before it not at all (later
    frames keep the rate-r mask; temporal attention is causal, so they cannot help frame t).
    Under the rate-r mask alone some of every frame is visible, and that part already tells
    where the view moved, so the action is rarely needed; a wholly masked frame can only be
    predicted from the past and the action. 0 (the default) draws exactly the old masks."""
    r_rate, r_pos = jax.random.split(rng)
    B, T = shape_BTN[:2]
    rate_B = jax.random.uniform(r_rate, (B,), minval=min_rate, maxval=max_rate)
    mask_BTN = jax.random.uniform(r_pos, shape_BTN) < rate_B[:, None, None]
    mask_BTN = mask_BTN.at[:, 0].set(False)
    if next_frame_prob <= 0.0 or T < 2:
        return mask_BTN
    r_pick, r_frame = jax.random.split(jax.random.fold_in(rng, 1))
    pick_B = jax.random.uniform(r_pick, (B,)) < next_frame_prob
    frame_B = jax.random.randint(r_frame, (B,), 1, T)
    t_T = jnp.arange(T)
    full_BT = t_T[None] == frame_B[:, None]
    clear_BT = t_T[None] < frame_B[:, None]
    next_BTN = (full_BT[..., None] | mask_BTN) & ~clear_BT[..., None]
    return jnp.where(pick_B[:, None, None], next_BTN, mask_BTN)


def maskgit_loss(logits_BTNV: jax.Array, tokens_BTN: jax.Array,
                 mask_BTN: jax.Array) -> tuple[jax.Array, dict]:
    """Cross-entropy on masked tokens only, and their accuracy. Pure; -> (loss, metrics)."""
    logp_BTNV = jax.nn.log_softmax(logits_BTNV.astype(jnp.float32), axis=-1)
    nll_BTN = -jnp.take_along_axis(logp_BTNV, tokens_BTN[..., None], axis=-1)[..., 0]
    m = mask_BTN.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0)
    ce = jnp.sum(nll_BTN * m) / n
    correct = (jnp.argmax(logits_BTNV, axis=-1) == tokens_BTN).astype(jnp.float32)
    return ce, {"ce": ce, "masked_acc": jnp.sum(correct * m) / n, "mask_frac": jnp.mean(m)}


SCHEDULES = ("cosine", "linear", "square")
ORDERS = ("confidence", "halton")
PICKS = ("sample", "mbr")


def mask_ratio(schedule: str, r):
    """Fraction of tokens still masked after progress r in [0, 1]; 1 at r=0, 0 at r=1."""
    if schedule == "cosine":
        return np.cos(0.5 * np.pi * r)
    if schedule == "linear":
        return 1.0 - r
    if schedule == "square":
        return 1.0 - r ** 2
    raise ValueError(f"sampling schedule must be one of {SCHEDULES}; got {schedule!r}")


def masked_counts(num_tokens: int, steps: int, schedule: str = "cosine") -> list[int]:
    """Tokens still masked after each MaskGIT step (static). Non-increasing, ends at 0, and at
    least one token is unmasked per step."""
    out, left = [], num_tokens
    for s in range(steps):
        n = int(math.floor(num_tokens * float(mask_ratio(schedule, (s + 1) / steps)) + 1e-6))
        n = 0 if s == steps - 1 else min(n, left - 1)
        left = max(n, 0)
        out.append(left)
    return out


def first_argmax(x: jax.Array) -> jax.Array:
    """jnp.argmax over the last axis (the first index of the maximum), as two plain reductions:
    XLA CPU runs argmax's variadic (value, index) reduce several times slower."""
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    hit = x == jnp.max(x, axis=-1, keepdims=True)
    return jnp.min(jnp.where(hit, iota, x.shape[-1]), axis=-1)


def sample_tokens(rng, logits_BNV: jax.Array, temperature: float) -> jax.Array:
    """jax.random.categorical(rng, logits / temperature) drawn from the same Gumbel noise (the
    same tokens), with the faster argmax; argmax when temperature is 0."""
    if temperature > 0:
        noise_BNV = jax.random.gumbel(rng, logits_BNV.shape, logits_BNV.dtype)
        return first_argmax(noise_BNV + logits_BNV / temperature)
    return first_argmax(logits_BNV)


def mbr_tokens(logits_BNV: jax.Array, codes_VL: jax.Array) -> jax.Array:
    """argmin_c E_{v~softmax(logits)} |e_c - e_v|^2 = argmax_c 2 e_c . mu - |e_c|^2, with
    mu = E[e_v] (the |e_v|^2 term does not depend on c). codes_VL: every code's vector [V, L]."""
    p_BNV = jax.nn.softmax(logits_BNV.astype(jnp.float32), axis=-1)
    codes_VL = codes_VL.astype(jnp.float32)
    mu_BNL = p_BNV @ codes_VL
    score_BNV = 2.0 * (mu_BNL @ codes_VL.T) - jnp.sum(jnp.square(codes_VL), axis=-1)
    return first_argmax(score_BNV)


def lowest_k_mask(conf_BN: jax.Array, k) -> jax.Array:
    """True at the k least confident positions, ties to the lower index (a stable sort): the
    same set as argsort(argsort(conf)) < k, with one sort and a scatter instead of two sorts."""
    B, N = conf_BN.shape
    order_BN = jnp.argsort(conf_BN, axis=-1)
    rows_B1 = jnp.arange(B)[:, None]
    return jnp.zeros((B, N), bool).at[rows_B1, order_BN].set(jnp.arange(N)[None] < k)


def _radical_inverse(i: int, base: int) -> float:
    out, f = 0.0, 1.0 / base
    while i:
        out += f * (i % base)
        i //= base
        f /= base
    return out


def halton_rank(num_tokens: int) -> np.ndarray:
    """rank[n]: when token n is decoded in the Halton order (0 first). A square token grid is
    covered by the 2-D Halton sequence (bases 2, 3), other counts by the 1-D one (base 2); a
    point landing on a cell already taken is skipped."""
    side = int(round(math.sqrt(num_tokens)))
    square = side * side == num_tokens
    order, seen, i = [], set(), 0
    while len(order) < num_tokens:
        if square:
            x, y = _radical_inverse(i, 2), _radical_inverse(i, 3)
            cell = int(y * side) * side + int(x * side)
        else:
            cell = int(_radical_inverse(i, 2) * num_tokens)
        if cell not in seen:
            seen.add(cell)
            order.append(cell)
        i += 1
    rank = np.empty(num_tokens, np.int32)
    rank[np.asarray(order)] = np.arange(num_tokens, dtype=np.int32)
    return rank


def maskgit_decode_frame(logits_fn, batch: int, num_tokens: int, rng, *, mask_id: int,
                         steps: int, temperature: float, schedule: str,
                         order: str = "confidence", unroll: int = 1,
                         codes_VL: jax.Array | None = None):
    """Decode one frame by MaskGIT. logits_fn(frame tokens [B,N], mask_id where masked) ->
    logits [B,N,V]. -> tokens [B,N] (no mask_id left). unroll: MaskGIT steps per loop
    iteration (the same arithmetic; a GPU launches a loop body's kernels once per iteration).
    codes_VL: the tokenizer's code vectors [V, L]; given, each step picks its candidates by
    minimum Bayes risk (`mbr_tokens`, module docstring) and keeps them by their probability,
    without noise."""
    if order not in ORDERS:
        raise ValueError(f"MaskGIT order must be one of {ORDERS}; got {order!r}")
    if codes_VL is not None:
        temperature = 0.0  # MBR is deterministic: no choice noise either
    B, N = batch, num_tokens
    counts = jnp.asarray(masked_counts(N, steps, schedule), jnp.int32)
    rank_N = jnp.asarray(halton_rank(N)) if order == "halton" else None

    def body(s, carry):
        frame_BN, masked_BN = carry
        logits_BNV = logits_fn(frame_BN)
        r_sample, r_choice = jax.random.split(jax.random.fold_in(rng, s))
        sampled_BN = (sample_tokens(r_sample, logits_BNV, temperature) if codes_VL is None
                      else mbr_tokens(logits_BNV, codes_VL))
        if rank_N is not None:  # a fixed order: the first N - counts[s] ranks are decided
            sampled_BN = jnp.where(masked_BN, sampled_BN.astype(jnp.int32), frame_BN)
            new_masked_BN = jnp.broadcast_to(rank_N >= N - counts[s], (B, N))
            return jnp.where(new_masked_BN, mask_id, sampled_BN), new_masked_BN
        logp_BNV = jax.nn.log_softmax(logits_BNV, axis=-1)
        conf_BN = jnp.take_along_axis(logp_BNV, sampled_BN[..., None], axis=-1)[..., 0]
        if temperature > 0:  # MaskGIT: randomise the choice of kept tokens, less so later on
            anneal = temperature * (1.0 - (s + 1.0) / steps)
            conf_BN = conf_BN + anneal * jax.random.gumbel(r_choice, conf_BN.shape)
        sampled_BN = jnp.where(masked_BN, sampled_BN.astype(jnp.int32), frame_BN)
        conf_BN = jnp.where(masked_BN, conf_BN, jnp.inf)  # decided tokens stay decided
        new_masked_BN = lowest_k_mask(conf_BN, counts[s])
        return jnp.where(new_masked_BN, mask_id, sampled_BN), new_masked_BN

    init = (jnp.full((B, N), mask_id, jnp.int32), jnp.ones((B, N), bool))
    unroll = max(1, min(int(unroll), steps))
    frame_BN, _ = jax.lax.fori_loop(0, steps, body, init, unroll=unroll)
    return frame_BN
