"""Why a world loses to a still image: one-step diagnostics on held-out clips.

For each frame t of 30 test clips (10 episodes x 3, as `genie-jax eval`), with the true past in
a window of the sampler's buffer length M (frames t-M+1 .. t-1) and frame t wholly masked:
  pixel_copy        PSNR of frame t-1 as the guess for frame t
  tokenizer         PSNR of frame t through the tokenizer (its tokens in this window): the
                    ceiling of any rollout
  token_copy        PSNR of frame t-1's tokens in slot t, decoded: what a dynamics gets by
                    copying its input
  dynamics_argmax   the dynamics' most likely token at every position of frame t, decoded
  dynamics_sampled  `WorldModel.step` from the true past (MaskGIT steps and temperature of the
                    run, or --temperature)
  tokens_changed    share of frame t's tokens that differ from frame t-1's
  accuracy          the dynamics' argmax token accuracy on all of frame t, and on the changed
                    tokens only; token_copy_accuracy = 1 - tokens_changed
Each PSNR is the mean over clips and frames, and `pooled` the PSNR of the squared errors pooled
over them (metrics.pooled_psnr: an unchanged frame's exact copy counts as an error of 0, not as
100 dB).

  python experiments/copy_diagnosis.py --workdir=runs/coinrun_quick/dyn --out=copy.json
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKDIR = flags.DEFINE_string("workdir", None, "dynamics run folder", required=True)
_OUT = flags.DEFINE_string("out", None, "JSON file to write (optional)")
_SPLIT = flags.DEFINE_string("split", "test", "held-out split")
_TEMP = flags.DEFINE_float("temperature", None, "sampling temperature (default: the run's)")
_FRAMES = flags.DEFINE_integer("clip_frames", 11, "frames per clip")
_EPISODES = flags.DEFINE_integer("episodes", 10, "held-out episodes (3 clips each)")


def diagnose(workdir: str, split: str = "test", temperature: float | None = None,
             clip_frames: int = 11, episodes: int = 10) -> dict:
    """The module docstring's numbers, per frame and their means."""
    import jax
    import jax.numpy as jnp
    from genie_jax.evaluation import load_clips, load_world_model, open_heldout, select_clips
    from genie_jax.metrics import pooled_psnr, psnr
    from genie_jax.models.layers import to_unit_float
    from genie_jax.models.tokenizer import Tokenizer
    from genie_jax.stages.dynamics import encode_tokens, lam_actions, lam_input_tokens

    wm = load_world_model(workdir, temperature=temperature)
    src = open_heldout(wm.config, split)
    eps, starts, _ = select_clips(src.episode_lengths(), episodes, clip_frames, 0, 3)
    frames = load_clips(src, eps, starts, clip_frames)[0]
    M, P, tok = wm.max_frames, wm.params, wm.tokenizer
    encode = jax.jit(lambda f: encode_tokens(tok, P["tokenizer"], f))
    decode_last = jax.jit(lambda z: jnp.clip(tok.apply(
        {"params": P["tokenizer"]}, z, method=Tokenizer.decode, mutable=["vq_stats"])[0][:, -1],
        0, 1))
    infer = jax.jit(lambda f: lam_actions(wm.lam, P["lam"], f,
                                          lam_input_tokens(wm.lam, tok, P["tokenizer"], f)))
    logits_last = jax.jit(lambda z, a: wm.dynamics.apply({"params": P["dynamics"]}, z, a)[:, -1])
    psnr_rows = ("pixel_copy", "tokenizer", "token_copy", "dynamics_argmax", "dynamics_sampled")
    rows = {k: [] for k in (*psnr_rows, "tokens_changed", "accuracy", "accuracy_on_changed")}
    clips = {k: [] for k in psnr_rows}  # per-clip PSNRs [frames][C], for the pooled figure

    def add_psnr(name, x, y):
        p = np.asarray(psnr(x, y), np.float64)
        clips[name].append(p)
        rows[name].append(float(p.mean()))
    for t in range(M - 1, clip_frames):
        w = jnp.asarray(frames[:, t - M + 1:t + 1])
        z, a = encode(w), infer(w)
        target = to_unit_float(w[:, -1])
        add_psnr("pixel_copy", to_unit_float(w[:, -2]), target)
        add_psnr("tokenizer", decode_last(z), target)
        add_psnr("token_copy", decode_last(z.at[:, -1].set(z[:, -2])), target)
        pred = jnp.argmax(logits_last(z.at[:, -1].set(wm.dynamics.mask_id), a), -1)
        add_psnr("dynamics_argmax", decode_last(z.at[:, -1].set(pred)), target)
        state = wm.reset(w[:, :-1], a[:, :-1], seed=t)
        add_psnr("dynamics_sampled", wm.step(state, a[:, -1])[0], target)
        changed = z[:, -1] != z[:, -2]
        right = pred == z[:, -1]
        rows["tokens_changed"].append(float(jnp.mean(changed)))
        rows["accuracy"].append(float(jnp.mean(right)))
        rows["accuracy_on_changed"].append(float(jnp.sum(right & changed)
                                                 / jnp.maximum(jnp.sum(changed), 1)))
    out = {"workdir": os.path.abspath(workdir), "split": split,
           "clips": len(eps), "window": M, "frames": list(range(M - 1, clip_frames)),
           "temperature": wm.temperature, "maskgit_steps": wm.steps,
           "mean": {k: float(np.mean(v)) for k, v in rows.items()}, "per_frame": rows}
    out["mean"]["token_copy_accuracy"] = 1.0 - out["mean"]["tokens_changed"]
    out["pooled"] = {k: pooled_psnr(np.stack(v)) for k, v in clips.items()}
    return out


def main(_):
    from genie_jax.media import write_text
    out = diagnose(_WORKDIR.value, _SPLIT.value, _TEMP.value, _FRAMES.value, _EPISODES.value)
    for k, v in out["mean"].items():
        print(f"{k:22s} {v:7.3f}" + (f"   pooled {out['pooled'][k]:7.3f}" if k in out["pooled"]
                                     else ""))
    if _OUT.value:
        write_text(_OUT.value, json.dumps(out, indent=2))
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
