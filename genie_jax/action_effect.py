"""Does a world respond to its actions, and if not, which model ignores them?

A world whose rollouts do not depend on the action (delta-PSNR near 0) can fail in two places,
and `genie-jax eval` reports both on its held-out clips (windows of data.num_frames frames):

  LAM       distinct_codes: the used codes left after merging code vectors that point the same
            way (cosine >= 0.99). Dead-code restarts can give one direction several ids; usage
            and perplexity then count a collapsed codebook as a full one.
            code_effect: the LAM decoder's next-frame PSNR with the codes the LAM inferred,
            minus with uniformly random codes. About 0 dB: the decoder predicts the next frame
            without its action, so nothing asks the codes to mean anything.
  dynamics  next_frame_ce and ce_gain: the cross-entropy of a wholly masked next frame (every earlier frame
            clear: the sampler's first decoding step) with uniformly random actions, minus with
            the inferred ones, and the same for token accuracy (accuracy_gain). About 0: the
            dynamics ignores the action.

All pure functions of params and frames; the rng of the random codes is fixed by `seed`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.metrics import psnr
from genie_jax.models.lam import LatentActionModel
from genie_jax.models.layers import to_unit_float
from genie_jax.models.maskgit import maskgit_loss
from genie_jax.models.vq import l2_normalize
from genie_jax.stages.dynamics import encode_tokens, lam_input_tokens

SAME_DIRECTION = 0.99  # cosine above which two code vectors are one action


def distinct_codes(codebook_VL, used_V, same: float = SAME_DIRECTION) -> int:
    """Number of groups of used code vectors, two codes being one group when their cosine is
    >= `same` (single linkage)."""
    cb = np.asarray(l2_normalize(jnp.asarray(codebook_VL, jnp.float32)))[np.asarray(used_V)]
    linked = (cb @ cb.T >= same).astype(np.int64)
    for _ in range(max(1, len(cb)).bit_length()):  # squaring: paths of length up to 2^k
        linked = np.minimum(linked @ linked, 1)
    return len({row.tobytes() for row in linked})


def code_vectors(lam: LatentActionModel, lam_params) -> jax.Array:
    """The LAM's quantised vector of every code [V, L], from its quantiser (a VQ's normalised
    codebook, or an FSQ's grid points)."""
    return lam.apply({"params": lam_params}, jnp.arange(lam.num_codes),
                     method=lambda m, c: m.vq.lookup(c)).astype(jnp.float32)


def _lam_effect_fn(lam: LatentActionModel, tokenizer):
    @jax.jit
    def fn(lam_params, tok_params, frames_BTHWC, key):
        variables = {"params": lam_params}
        tokens = lam_input_tokens(lam, tokenizer, tok_params, frames_BTHWC)
        (q_BAL, codes_BA, _), _ = lam.apply(variables, frames_BTHWC, tokens_BTN=tokens,
                                            method=LatentActionModel.encode, mutable=["vq_stats"])
        codebook_VL = code_vectors(lam, lam_params)
        rand_BA = jax.random.randint(key, codes_BA.shape, 0, codebook_VL.shape[0])
        target = to_unit_float(frames_BTHWC[:, 1:])
        out = []
        for q in (q_BAL, codebook_VL[rand_BA].astype(q_BAL.dtype)):
            pred, _ = lam.apply(variables, frames_BTHWC[:, :-1], q,
                                method=LatentActionModel.decode, mutable=["vq_stats"])
            out.append(psnr(jnp.clip(pred, 0, 1), target))
        return out[0], out[1], codes_BA
    return fn


def _dynamics_effect_fn(wm):
    dyn, tok = wm.dynamics, wm.tokenizer

    @jax.jit
    def fn(params, frames_BTHWC, actions_BA, key):
        tokens_BTN = encode_tokens(tok, params["tokenizer"], frames_BTHWC)
        T = tokens_BTN.shape[1]
        mask_BTN = jnp.zeros(tokens_BTN.shape, bool).at[:, T - 1].set(True)
        inp = jnp.where(mask_BTN, dyn.mask_id, tokens_BTN)
        rand_BA = jax.random.randint(key, actions_BA.shape, 0, dyn.num_actions)
        out = []
        for a in (actions_BA, rand_BA):
            logits = dyn.apply({"params": params["dynamics"]}, inp, a)
            ce, m = maskgit_loss(logits, tokens_BTN, mask_BTN)
            out.append((ce, m["masked_acc"]))
        return out
    return fn


def action_effects(wm, frames_CTHWC: np.ndarray, window: int, batch: int = 8,
                   seed: int = 0) -> dict:
    """The LAM and dynamics action effects (module docstring) on the first `window` frames of
    each clip. wm: a sampling.WorldModel with LAM params."""
    frames = np.asarray(frames_CTHWC)[:, :window]
    C = len(frames)
    lam_fn, dyn_fn = _lam_effect_fn(wm.lam, wm.tokenizer), _dynamics_effect_fn(wm)
    own, rand, ce_inf, ce_rand, acc_inf, acc_rand, used = [], [], [], [], [], [], []
    for i, b0 in enumerate(range(0, C, batch)):
        fr = jnp.asarray(frames[b0:b0 + batch])
        key_lam, key_dyn = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), i))
        p_own, p_rand, codes = lam_fn(wm.params["lam"], wm.params["tokenizer"], fr, key_lam)
        own.append(np.asarray(p_own).reshape(-1))
        rand.append(np.asarray(p_rand).reshape(-1))
        used.append(np.asarray(codes).reshape(-1))
        n = fr.shape[0]
        (ci, ai), (cr, ar) = dyn_fn(wm.params, fr, jnp.asarray(codes, jnp.int32), key_dyn)
        for acc, v in ((ce_inf, ci), (ce_rand, cr), (acc_inf, ai), (acc_rand, ar)):
            acc.append((float(v), n))

    def wmean(pairs):
        return float(sum(v * n for v, n in pairs) / sum(n for _, n in pairs))
    codebook = np.asarray(code_vectors(wm.lam, wm.params["lam"]))
    used_V = np.bincount(np.concatenate(used), minlength=codebook.shape[0]) > 0
    own_db, rand_db = float(np.mean(np.concatenate(own))), float(np.mean(np.concatenate(rand)))
    ce = {"inferred": wmean(ce_inf), "random": wmean(ce_rand)}
    acc = {"inferred": wmean(acc_inf), "random": wmean(acc_rand)}
    return {
        "windows": C, "window": int(frames.shape[1]),
        "lam": {"distinct_codes": distinct_codes(codebook, used_V),
                "codes_used": int(used_V.sum()),
                "code_effect": {"psnr_own": own_db, "psnr_random": rand_db,
                                "gain_db": own_db - rand_db}},
        "dynamics": {"next_frame_ce": ce, "next_frame_accuracy": acc,
                     "ce_gain": ce["random"] - ce["inferred"],
                     "accuracy_gain": acc["inferred"] - acc["random"]},
    }
